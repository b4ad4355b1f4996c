"""Event bus: non-blocking publish, bounded per-subscriber queues, drops counted."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import msgspec

from detection_service.bus import BusMessage, EventBus, EventUpdated, PackageRemoved
from tests.pipeline.conftest import wait_until


def _msg(i: int) -> EventUpdated:
    return EventUpdated(event_id=i, change="image", object_type="person", image_count=i)


def test_slow_subscriber_cannot_block_and_drops_are_counted() -> None:
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=3)
    got: list[BusMessage] = []
    release, inside = threading.Event(), threading.Event()

    def handler(message: BusMessage) -> None:
        inside.set()
        release.wait(5)  # a stuck Telegram call
        got.append(message)

    stuck = bus.subscribe_callback("stuck", handler, maxsize=2)
    started = time.monotonic()
    bus.publish(_msg(1))
    assert inside.wait(2)
    for i in range(2, 11):
        bus.publish(_msg(i))
    assert time.monotonic() - started < 1.0
    # Newest win: the slow queue keeps the last 3.
    assert [m.event_id for m in iter(lambda: slow.get(timeout=0), None)] == [8, 9, 10]
    assert slow.dropped == 7
    release.set()
    assert wait_until(lambda: len(got) == 3)  # one in the handler + the 2 newest queued
    assert stuck.dropped == 7 and [m.event_id for m in got] == [1, 9, 10]
    stats = bus.stats()
    assert stats["published"] == 10 and stats["subscribers"]["slow"]["dropped"] == 7
    stuck.close()
    slow.close()
    assert bus.stats()["subscribers"] == {}


def test_failing_callback_keeps_receiving_and_messages_encode() -> None:
    bus = EventBus()
    got: list[int] = []

    def flaky(message: BusMessage) -> None:
        if message.event_id == 1:
            raise RuntimeError("boom")
        got.append(message.event_id)

    sub = bus.subscribe_callback("flaky", flaky)
    bus.publish(_msg(1))
    now = datetime.now(UTC)
    bus.publish(PackageRemoved(event_id=2, tracking_id=5, detected_at=now, removed_at=now, present_s=3))
    assert wait_until(lambda: got == [2])
    sub.close()
    # Tagged structs: a consumer in another process can decode the union.
    raw = msgspec.json.encode(_msg(7))
    assert msgspec.json.decode(raw, type=BusMessage) == _msg(7)
