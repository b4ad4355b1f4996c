"""Tracker + event recorder driven frame by frame with scripted detections and a synthetic clock."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus, EventCreated, EventUpdated, PackageRemoved
from detection_service.pipeline.capture import Frame
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import Detection, classify_detections
from detection_service.pipeline.events import EventRecorder, FrameInfo
from detection_service.pipeline.tracker import ObjectTracker
from schemas.db import DetectionEvent, EventImage, ObjectType
from schemas.settings import DetectionSettings
from tests.pipeline.conftest import det, wait_until

pytestmark = pytest.mark.usefixtures("offline")

WALL0 = 1_780_000_000.0  # 2026-05-28 UTC
FPS = 10
SIZE = (320, 240)


class Rig:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store,
        config: PipelineConfig | None = None,
        settings: DetectionSettings | None = None,
    ) -> None:
        self.bus = EventBus()
        self.sub = self.bus.subscribe("test")
        self.settings = settings or DetectionSettings(capture_count=3, capture_interval=0.5, jpeg_quality=70)
        self.recorder = EventRecorder(
            session_factory,
            store,
            lambda: self.settings,
            self.bus,
            config or PipelineConfig(package_removed_after_s=2.0, retry_initial_s=0.05),
        )
        self.tracker = ObjectTracker()
        self.t = 0.0
        self.seq = 0

    def run(self, seconds: float, script: Callable[[float], list[Detection]], detect_every: int = 1) -> None:
        for _ in range(round(seconds * FPS)):
            self.seq += 1
            image = np.full((SIZE[1], SIZE[0], 3), self.seq % 200, np.uint8)
            frame = Frame(image, self.seq, self.t, WALL0 + self.t)
            seen = None
            if self.seq % detect_every == 0:
                dets = classify_detections(script(self.t), 0.5, "medium")
                seen = self.tracker.update(dets, self.t, frame.wall_time)
            self.recorder.on_frame(frame, self.t, seen, FrameInfo("m-test", 9.6, 12.4) if seen is not None else None)
            self.t += 1 / FPS

    def drain(self) -> list:
        assert wait_until(lambda: self.recorder.writer.pending() == 0, 10)
        messages = []
        while (m := self.sub.get(timeout=0.2)) is not None:
            messages.append(m)
        return messages


def _events(session_factory: sessionmaker[Session]) -> list[tuple[DetectionEvent, str, list[EventImage]]]:
    with session_factory() as s:
        rows = s.execute(
            sa.select(DetectionEvent, ObjectType.code)
            .join(ObjectType, DetectionEvent.object_type_id == ObjectType.id)
            .order_by(DetectionEvent.id)
        ).all()
        return [(e, code, list(e.images)) for e, code in rows]


def walking_person(t: float) -> list[Detection]:
    x = 40 + 10 * t
    return [det(x, 40, x + 60, 200, "person", 0.85)] if t < 3.0 else []


def parcel(t: float) -> list[Detection]:
    return [det(200, 170, 260, 220, "package", 0.8)] if 1.0 <= t < 5.0 else []


def test_one_event_per_track_with_captures_end_and_package_removal(session_factory, store) -> None:
    rig = Rig(session_factory, store)
    rig.run(9.0, lambda t: walking_person(t) + parcel(t))
    messages = rig.drain()

    events = _events(session_factory)
    assert [code for _, code, _ in events] == ["person", "package"]  # one each, not one per frame
    for event, _code, images in events:
        assert event.status == "active" and event.model_version == "m-test"
        assert event.fps == 10 and event.processing_time == 12 and event.tracking_id is not None
        box = json.loads(event.bbox_coordinates)
        frames = box.pop("frames")  # boxes of captures 2 and 3, seen by the detector as they were taken
        assert list(box) == ["x1", "y1", "x2", "y2", "frame_width", "frame_height"]
        assert (box["frame_width"], box["frame_height"]) == SIZE and all(isinstance(v, int) for v in box.values())
        assert sorted(frames) == ["2", "3"] and all(list(f) == list(box) for f in frames.values())
        assert [i.sequence_number for i in images] == [1, 2, 3]
        assert event.image_path == images[0].image_path
        for image in images:
            assert re.fullmatch(rf"events/2026/05/28/{event.id}/{image.sequence_number}\.jpg", image.image_path)
            assert store.get_bytes(image.image_path)[:2] == b"\xff\xd8" and image.compression_quality == 70
        gaps = [(b.captured_at - a.captured_at).total_seconds() for a, b in zip(images, images[1:])]
        assert all(0 <= g <= 1 for g in gaps)  # 0.5 s apart (whole-second DB precision)
        assert event.ended_at is not None
    person, package = events[0][0], events[1][0]
    assert person.detected_at.timestamp() == pytest.approx(WALL0, abs=1.01)
    assert person.tracking_duration in (2, 3)  # seen 0.1 .. 2.9 s
    assert package.tracking_duration in (3, 4)  # seen 1.1 .. 4.9 s
    assert (package.ended_at - package.detected_at).total_seconds() == pytest.approx(4, abs=1.01)
    assert 0.5 <= person.confidence_score <= 0.85 + 1e-9 and package.confidence_score == pytest.approx(0.8)

    created = [m for m in messages if isinstance(m, EventCreated)]
    assert [m.object_type for m in created] == ["person", "package"]
    assert all(m.snapshot_jpeg[:2] == b"\xff\xd8" and m.image_key.endswith("/1.jpg") for m in created)
    ended = [m for m in messages if isinstance(m, EventUpdated) and m.change == "ended"]
    assert [m.event_id for m in ended] == [person.id]
    removed = [m for m in messages if isinstance(m, PackageRemoved)]
    assert [m.event_id for m in removed] == [package.id] and removed[0].present_s in (3, 4)
    images = [m for m in messages if isinstance(m, EventUpdated) and m.change == "image"]
    assert len(images) == 6
    assert rig.recorder.stats()["open_events"] == 0


def test_stationary_package_survives_gating_and_track_loss(session_factory, store) -> None:
    """Detector runs only every 5th frame (motion gate), and the track is lost and re-found under a
    new id: still one event, not removed while it is seen."""
    rig = Rig(session_factory, store, settings=DetectionSettings(capture_count=1))
    box = [det(100, 100, 150, 140, "package", 0.7)]
    rig.run(3.0, lambda t: box)
    rig.tracker.reset()  # e.g. the tracker restarted its ids
    rig.run(1.5, lambda t: [])  # hidden for 1.5 s (< package_removed_after_s = 2)
    rig.run(6.0, lambda t: box, detect_every=5)
    rig.drain()
    assert len(_events(session_factory)) == 1
    assert _events(session_factory)[0][0].ended_at is None  # still present
    rig.run(3.0, lambda t: [], detect_every=5)
    messages = rig.drain()
    ((event, code, _),) = _events(session_factory)
    assert code == "package" and event.ended_at is not None
    assert [type(m).__name__ for m in messages].count("PackageRemoved") == 1


def test_type_settles_from_unclassified(session_factory, store) -> None:
    rig = Rig(session_factory, store, settings=DetectionSettings(capture_count=1))
    far = lambda t: [det(10, 10, 40, 90, "person", 0.3 if t < 1.0 else 0.9)] if t < 2 else []  # noqa: E731
    rig.run(6.0, far)
    messages = rig.drain()
    ((event, code, _),) = _events(session_factory)
    assert code == "person" and event.confidence_score == pytest.approx(0.9)
    created = [m for m in messages if isinstance(m, EventCreated)]
    assert created[0].object_type == "unclassified"
    assert any(isinstance(m, EventUpdated) and m.change == "type" and m.object_type == "person" for m in messages)


def test_short_blips_do_not_become_events(session_factory, store) -> None:
    rig = Rig(session_factory, store)
    rig.run(3.0, lambda t: [det(50, 50, 90, 90, "mail", 0.9)] if int(t * FPS) % 10 == 0 else [])
    rig.run(1.0, lambda t: [det(50, 50, 90, 90, "mail", 0.1)])  # under the floor: dropped
    rig.drain()
    assert _events(session_factory) == []


class FlakyStore:
    """Wraps the local store; the first ``failures`` puts raise."""

    def __init__(self, inner, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.calls += 1
        if self.calls <= self.failures:
            from detection_service.storage import StorageUnavailable

            raise StorageUnavailable("store down")
        self.inner.put_bytes(key, data, content_type)


def test_failed_writes_are_retried_not_lost(session_factory, store, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyStore(store, failures=2)
    real_begin = session_factory.begin
    db_failures = {"left": 1}

    def begin():  # the first transaction fails like a dropped database connection
        if db_failures["left"]:
            db_failures["left"] -= 1
            raise sa.exc.OperationalError("INSERT", {}, Exception("server has gone away"))
        return real_begin()

    monkeypatch.setattr(session_factory, "begin", begin)
    rig = Rig(session_factory, flaky)
    rig.run(5.0, lambda t: [det(30, 30, 90, 200, "person", 0.9)] if t < 1.5 else [])
    messages = rig.drain()
    ((event, code, images),) = _events(session_factory)
    assert code == "person" and len(images) == 3 and event.ended_at is not None
    assert all(store.exists(i.image_path) for i in images)
    stats = rig.recorder.stats()
    assert stats["retries"] >= 3 and stats["images_dropped"] == 0 and stats["last_error"] is None
    assert sum(isinstance(m, EventCreated) for m in messages) == 1


def test_open_package_is_readopted_after_restart(session_factory, store) -> None:
    rig = Rig(session_factory, store, settings=DetectionSettings(capture_count=1))
    box = [det(100, 100, 150, 140, "package", 0.7), det(10, 10, 60, 200, "person", 0.9)]
    rig.run(2.0, lambda t: box)
    rig.recorder.suspend()  # pipeline stopped: the person ends, the package stays open
    rig.drain()
    by_code = {code: e for e, code, _ in _events(session_factory)}
    person, package = by_code["person"], by_code["package"]
    assert person.ended_at is not None and package.ended_at is None

    again = Rig(session_factory, store, settings=DetectionSettings(capture_count=1))
    again.t = rig.t + 5
    again.recorder.resume(now=again.t)
    assert again.recorder.stats()["open_events"] == 1
    again.run(2.0, lambda t: box[:1])  # same place: continues the old event
    again.run(3.0, lambda t: [])
    messages = again.drain()
    events = {code: e for e, code, _ in _events(session_factory)}
    assert len(events) == 2 and events["package"].ended_at is not None
    assert [m.event_id for m in messages if isinstance(m, PackageRemoved)] == [package.id]
