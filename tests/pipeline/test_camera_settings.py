"""Camera settings for every source kind (issue 11 item 1): resolution and fps applied in software
to file (and URL/push) sources, live and without re-opening; a new source re-opens the capture only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from detection_service.bus import EventBus, EventCreated
from detection_service.pipeline.capture import Capture
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from detection_service.pipeline.sources import VideoCaptureSource
from schemas.settings import CameraSettings, DetectionSettings
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

pytestmark = pytest.mark.usefixtures("offline")


def _pipeline(session_factory, store, camera: CameraSettings, detector) -> tuple[DetectionPipeline, EventBus]:
    bus = EventBus()
    pipeline = DetectionPipeline(
        session_factory=session_factory,
        store=store,
        bus=bus,
        holder=DetectorHolder(detector),
        camera=camera,
        detection=DetectionSettings(capture_count=1),
        config=PipelineConfig(motion_mode="off", stall_timeout_s=1.0, package_removed_after_s=5.0),
    )
    return pipeline, bus


def test_file_source_resized_and_capped_live_without_reopening(session_factory, store, tmp_path: Path) -> None:
    video = write_video(tmp_path / "big.avi", frames=60, fps=30, size=(960, 720))
    camera = CameraSettings(source=str(video), resolution="640x480", fps=10)
    pipeline, _ = _pipeline(session_factory, store, camera, ScriptedDetector(lambda i, t: []))
    pipeline.start()
    try:
        # Scaled down before detection (and so before storage and the live view).
        assert wait_until(lambda: pipeline.frame_size() == (640, 480), 5)
        time.sleep(2.0)
        status = pipeline.status()
        assert 6.0 <= status["fps"] <= 11.5, status  # a 30 fps file capped at 10
        assert status["frames_capped"] > 0 and status["source_fps"] > 20, status
        read_before = status["frames_read"]
        # Live: a larger resolution never upscales; the cap rises; the capture is not re-opened.
        pipeline.apply_settings("camera", CameraSettings(source=str(video), resolution="1920x1080", fps=30))
        assert wait_until(lambda: pipeline.frame_size() == (960, 720), 3)
        assert wait_until(lambda: pipeline.status()["fps"] >= 16, 5), pipeline.status()
        status = pipeline.status()
        assert status["frames_read"] > read_before and status["reconnects"] == 0, status
    finally:
        assert pipeline.stop()
        pipeline.close()


def test_portrait_frames_fit_the_turned_resolution(tmp_path: Path) -> None:
    video = write_video(tmp_path / "portrait.avi", frames=10, fps=30, size=(480, 960))
    capture = Capture(VideoCaptureSource(video), max_size=(640, 480))
    capture.start()
    try:
        frame = capture.read(0, timeout=5)
        assert frame is not None and (frame.width, frame.height) == (320, 640)
        capture.configure(max_fps=None, max_size=None)  # as the source delivers
        assert wait_until(lambda: (f := capture.read(frame.seq, 1)) is not None and f.width == 480, 5)
    finally:
        capture.stop()


def test_a_new_source_restarts_the_capture_only(session_factory, store, tmp_path: Path) -> None:
    """The detector, tracker and recorder carry on: the parcel stays one event across the change."""
    first = write_video(tmp_path / "a.avi", frames=45, fps=15, size=(320, 240))
    second = write_video(tmp_path / "b.avi", frames=45, fps=15, size=(320, 240))
    detector = ScriptedDetector(lambda i, t: [det(200, 150, 260, 220, "package", 0.9)])
    pipeline, bus = _pipeline(session_factory, store, CameraSettings(source=str(first), fps=15), detector)
    created = bus.subscribe("test")
    pipeline.start()
    try:
        assert wait_until(lambda: pipeline.status()["detection_count"] == 1, 5)
        inferences = pipeline.status()["inferences"]
        pipeline.apply_settings("camera", CameraSettings(source=str(second), fps=15))
        assert wait_until(lambda: pipeline.status()["source"] == str(second), 3)
        assert wait_until(lambda: pipeline.status()["inferences"] > inferences + 10, 5)
        status = pipeline.status()
        # Counters were not reset (no pipeline restart) and no second event was made.
        assert status["detection_count"] == 1 and status["recorder"]["open_events"] == 1, status
        # The track lived through the change: the tracking snapshot still shows it confirmed.
        objects = pipeline.tracking().objects
        assert len(objects) == 1 and objects[0].confirmed and objects[0].object_type == "package"
        assert pipeline.restart_capture() and wait_until(lambda: pipeline.status()["inferences"] > inferences + 20, 5)
        assert pipeline.status()["detection_count"] == 1
    finally:
        assert pipeline.stop()
    messages = []
    while (m := created.get(timeout=0.1)) is not None:
        messages.append(m)
    assert [type(m) for m in messages if isinstance(m, EventCreated)] == [EventCreated]
    assert not pipeline.restart_capture()  # stopped: nothing to re-open
    pipeline.close()


def test_a_device_is_reopened_to_ask_for_its_new_mode(session_factory, store, tmp_path: Path) -> None:
    """A device gets resolution/fps as capture properties when it is opened, so a change re-opens it
    (a file stands in for the device here; the factory sees the settings each open asks for)."""
    video = write_video(tmp_path / "cam.avi", frames=30, fps=15, size=(320, 240))
    asked: list[tuple[str, int]] = []

    def factory(camera: CameraSettings) -> VideoCaptureSource:
        asked.append((camera.resolution, camera.fps))
        source = VideoCaptureSource(video)
        source.is_device = True
        return source

    pipeline = DetectionPipeline(
        session_factory=session_factory,
        store=store,
        bus=EventBus(),
        holder=DetectorHolder(ScriptedDetector(lambda i, t: [])),
        camera=CameraSettings(source="0", resolution="640x480", fps=15),
        source_factory=factory,
    )
    pipeline.start()
    try:
        assert wait_until(lambda: pipeline.status()["frames_read"] > 5, 5)
        pipeline.apply_settings("camera", CameraSettings(source="0", resolution="1280x720", fps=30))
        pipeline.apply_settings("camera", CameraSettings(source="0", resolution="1280x720", fps=30, brightness=5))
        assert asked == [("640x480", 15), ("1280x720", 30)]  # brightness is software only: no re-open
    finally:
        pipeline.stop()
        pipeline.close()
