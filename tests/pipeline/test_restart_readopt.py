"""A pipeline restart continues its open package events, also one whose row the writer has not
committed yet (a restart right after confirmation): never a second event for the same parcel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from detection_service.bus import EventBus, EventCreated, PackageRemoved
from detection_service.pipeline import events as events_module
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from schemas.db import DetectionEvent
from schemas.settings import CameraSettings, DetectionSettings
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

pytestmark = pytest.mark.usefixtures("offline")


@pytest.mark.parametrize("row_written", [True, False], ids=["row-written", "row-still-queued"])
def test_restart_continues_the_open_package(session_factory, store, tmp_path: Path, monkeypatch, row_written) -> None:
    release = threading.Event()
    if not row_written:
        real_record_event = events_module.record_event

        def slow_record_event(*args, **kwargs):
            release.wait(10)  # the insert is held in the writer's queue until the restart is done
            return real_record_event(*args, **kwargs)

        monkeypatch.setattr(events_module, "record_event", slow_record_event)
    else:
        release.set()
    video = write_video(tmp_path / "door.avi", frames=45, fps=15, size=(320, 240))
    bus = EventBus()
    sub = bus.subscribe("test")
    pipeline = DetectionPipeline(
        session_factory=session_factory,
        store=store,
        bus=bus,
        holder=DetectorHolder(ScriptedDetector(lambda i, t: [det(200, 150, 260, 220, "package", 0.9)])),
        camera=CameraSettings(source=str(video), fps=15),
        detection=DetectionSettings(capture_count=1),
        config=PipelineConfig(motion_mode="off", package_removed_after_s=5.0),
    )

    def rows() -> list[DetectionEvent]:
        with session_factory() as session:
            return list(session.scalars(sa.select(DetectionEvent)))

    pipeline.start()
    try:
        assert wait_until(lambda: pipeline.status()["detection_count"] == 1, 5)
        if row_written:
            assert wait_until(lambda: len(rows()) == 1, 5)
        else:
            assert rows() == []
        pipeline.restart()
        assert wait_until(lambda: pipeline.status()["inferences"] > 15, 5)  # the parcel seen again
        release.set()
        assert wait_until(lambda: len(rows()) == 1, 5)
        [row] = rows()
        assert wait_until(lambda: any(o.event_id == row.id and o.confirmed for o in pipeline.tracking().objects), 5)
        time.sleep(0.5)
        assert pipeline.status()["detection_count"] == 0  # counted since the restart: nothing new
        assert len(rows()) == 1 and rows()[0].ended_at is None
    finally:
        release.set()
        pipeline.stop()
        pipeline.close()
    messages = []
    while (m := sub.get(timeout=0.1)) is not None:
        messages.append(m)
    assert sum(isinstance(m, EventCreated) for m in messages) == 1
    assert not any(isinstance(m, PackageRemoved) for m in messages)
