"""In-process event bus between the event recorder and its consumers (notifier, live viewer).

``publish`` never blocks: each subscriber has its own bounded queue; when it is full the oldest
message is dropped and counted (a slow Telegram call must not stall detection). Messages are
published only after the database write they describe has succeeded, so ``event_id`` is valid.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Literal

import msgspec

log = logging.getLogger(__name__)


class EventCreated(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A track was confirmed and its ``detection_events`` row exists."""

    event_id: int
    object_type: str
    confidence: float
    bbox: dict[str, int]  # same JSON as detection_events.bbox_coordinates
    tracking_id: int
    model_version: str | None
    detected_at: datetime  # aware UTC
    image_key: str  # object-store key of capture 1 (may still be in the write queue)
    snapshot_jpeg: bytes  # capture 1 itself: a notifier need not wait for the store
    camera_id: int = 1  # the cameras row that saw it (docs/cameras.md)


class EventUpdated(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A stored event changed: another capture stored, type settled, or (non-package) track ended."""

    event_id: int
    change: Literal["image", "type", "ended"]
    object_type: str
    image_count: int
    image_key: str | None = None  # for change="image"
    ended_at: datetime | None = None  # for change="ended"
    tracking_duration: int | None = None  # seconds, for change="ended"


class PackageRemoved(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A package event's object has not been seen for ``package_removed_after_s``."""

    event_id: int
    tracking_id: int
    detected_at: datetime
    removed_at: datetime  # when it was last seen (= detection_events.ended_at)
    present_s: int


BusMessage = EventCreated | EventUpdated | PackageRemoved


class Subscription:
    """One consumer's bounded queue. Use ``get``/iteration from one thread, or ``EventBus.subscribe_callback``."""

    def __init__(self, bus: EventBus, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self.dropped = 0
        self.delivered = 0
        self._bus = bus
        self._items: deque[BusMessage] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def _offer(self, message: BusMessage) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._items) >= self.maxsize:
                self._items.popleft()  # newest wins: a stale alert is worth less than a fresh one
                self.dropped += 1
            self._items.append(message)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> BusMessage | None:
        """The next message, or None on timeout or once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            self.delivered += 1
            return self._items.popleft()

    def pending(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._bus._remove(self)

    @property
    def closed(self) -> bool:
        return self._closed


class EventBus:
    def __init__(self, default_maxsize: int = 256) -> None:
        self.default_maxsize = default_maxsize
        self.published = 0
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription:
        sub = Subscription(self, name, maxsize or self.default_maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def subscribe_callback(
        self, name: str, callback: Callable[[BusMessage], None], maxsize: int | None = None
    ) -> Subscription:
        """Deliver to ``callback`` on a daemon thread of its own; exceptions are logged and skipped.
        ``close()`` the returned subscription to stop it."""
        sub = self.subscribe(name, maxsize)

        def deliver() -> None:
            while True:
                message = sub.get()
                if message is None:
                    return
                try:
                    callback(message)
                except Exception:
                    log.exception("bus subscriber %s failed on %s", name, type(message).__name__)

        threading.Thread(target=deliver, name=f"bus-{name}", daemon=True).start()
        return sub

    def publish(self, message: BusMessage) -> None:
        with self._lock:
            subs = list(self._subs)
            self.published += 1
        for sub in subs:
            sub._offer(message)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def stats(self) -> dict[str, object]:
        with self._lock:
            subs = list(self._subs)
        return {
            "published": self.published,
            "subscribers": {
                s.name: {"pending": s.pending(), "dropped": s.dropped, "delivered": s.delivered} for s in subs
            },
        }
