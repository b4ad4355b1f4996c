"""DetectionPipeline end to end: file and push sources, scripted detector, real tracker/recorder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.bus import EventBus, EventCreated
from detection_service.ml.training import min_confidence
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from schemas.db import DetectionEvent
from schemas.settings import CameraSettings, DetectionSettings
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

pytestmark = pytest.mark.usefixtures("offline")

STATUS_KEYS = {
    "status",
    "camera_status",
    "model_loaded",
    "uptime",
    "fps",
    "detection_count",
    "model_id",
    "backend",
    "dropped_frames",
    "inferences",
    "gated_skips",
    "last_inference_ms",
    "frame_age_ms",
}


def _pipeline(session_factory, store, source: str, detector=None, **config) -> tuple[DetectionPipeline, EventBus]:
    bus = EventBus()
    pipeline = DetectionPipeline(
        session_factory=session_factory,
        store=store,
        bus=bus,
        holder=DetectorHolder(detector),
        camera=CameraSettings(source=source, fps=15),
        detection=DetectionSettings(capture_count=2, capture_interval=0.2),
        # A large motion area: the video's changing 16x16 corner marker is not motion.
        config=PipelineConfig(
            motion_min_area=0.05,
            stall_timeout_s=0.6,
            end_after_s=0.6,
            package_removed_after_s=1.0,
            retry_initial_s=0.05,
            **config,
        ),
    )
    return pipeline, bus


def test_file_source_to_events(session_factory, store, tmp_path: Path) -> None:
    video = write_video(tmp_path / "door.avi", frames=45, fps=15, size=(320, 240))

    def script(_: int, t: float) -> list:
        person = [det(40, 30, 120, 230, "person", 0.9)] if t < 1.2 else []
        return person + [det(200, 180, 260, 230, "package", 0.8)]

    detector = ScriptedDetector(script, model_id="scripted-v1")
    pipeline, bus = _pipeline(session_factory, store, str(video), detector)
    created = bus.subscribe("test")
    pipeline.start()
    try:
        assert wait_until(lambda: pipeline.status()["detection_count"] >= 2, 8)
        assert wait_until(lambda: pipeline.recorder.stats()["open_events"] == 1, 5)  # the person left
        status = pipeline.status()
        assert set(status) >= STATUS_KEYS
        assert status["status"] == "running" and status["camera_status"] == "connected" and status["model_loaded"]
        assert status["model_id"] == "scripted-v1" and status["backend"] == "scripted"
        assert 8 <= status["fps"] <= 16 and status["inferences"] > 0
        assert status["gated_skips"] > 0  # still scene: the gate only runs refresh checks
        assert status["dropped_frames"] >= 0 and 0 < status["frame_age_ms"] < 500
        version, jpeg = pipeline.latest_jpeg()
        assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (240, 320, 3)
        newer, _ = pipeline.wait_jpeg(version, timeout=2)
        assert newer > version
    finally:
        started = time.monotonic()
        assert pipeline.stop()
        assert time.monotonic() - started < 2.0
    assert pipeline.status()["status"] == "stopped"
    assert wait_until(lambda: pipeline.recorder.writer.pending() == 0, 10)
    with session_factory() as s:
        rows = s.scalars(sa.select(DetectionEvent).order_by(DetectionEvent.id)).all()
        assert len(rows) == 2 and all(len(r.images) == 2 for r in rows)
        assert all(r.model_version == "scripted-v1" for r in rows)
        ended = {r.object_type_id: r.ended_at for r in rows}
    assert sum(e is not None for e in ended.values()) == 1  # the package stays open across a stop
    messages = []
    while (m := created.get(timeout=0.1)) is not None:
        messages.append(m)
    assert sorted(m.object_type for m in messages if isinstance(m, EventCreated)) == ["package", "person"]
    pipeline.close()


def test_start_stop_restart_repeatedly(session_factory, store, tmp_path: Path) -> None:
    video = write_video(tmp_path / "loop.avi", frames=15, fps=30)
    pipeline, _ = _pipeline(session_factory, store, str(video), ScriptedDetector(lambda i, t: []))
    for round_ in range(3):
        pipeline.start() if round_ == 0 else pipeline.restart()
        pipeline.start()  # idempotent while running
        assert wait_until(lambda: pipeline.status()["inferences"] > 0, 5)
        status = pipeline.status()
        assert status["status"] == "running" and status["camera_status"] == "connected"
    started = time.monotonic()
    assert pipeline.stop()
    assert time.monotonic() - started < 2.0
    assert pipeline.status()["status"] == "stopped" and pipeline.status()["uptime"] == 0
    assert pipeline.stop()  # stopping twice is fine
    pipeline.start()
    assert wait_until(lambda: pipeline.status()["camera_status"] == "connected", 5)
    assert pipeline.close() == 0


def test_push_source_live_config_and_model_swap(session_factory, store) -> None:
    first = ScriptedDetector(lambda i, t: [], model_id="a")
    pipeline, _ = _pipeline(session_factory, store, "push", first)
    ok, buf = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
    feeding = threading.Event()
    feeding.set()
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            if feeding.is_set():
                assert pipeline.push_jpeg(buf.tobytes())
            time.sleep(1 / 30)

    feeder = threading.Thread(target=feed)
    pipeline.start()
    feeder.start()
    try:
        assert wait_until(lambda: pipeline.status()["camera_status"] == "connected", 3)
        assert wait_until(lambda: pipeline.status()["gated_skips"] > 5, 3)
        # Live: motion gate off -> every frame is inferred; threshold change -> new floor.
        pipeline.configure(motion_mode="off")
        skips = pipeline.status()["gated_skips"]
        pipeline.apply_settings("detection", DetectionSettings(confidence_threshold=0.9))
        time.sleep(0.5)
        assert pipeline.status()["gated_skips"] == skips
        assert first.confs[-1] == pytest.approx(min_confidence(0.9, "medium"))
        with pytest.raises(ValueError):
            pipeline.configure(motion_mode="sometimes")
        # Deploy another model while running.
        second = ScriptedDetector(lambda i, t: [], model_id="b")
        pipeline.holder.swap(second)
        assert wait_until(lambda: second.inferences > 3, 3)
        status = pipeline.status()
        assert status["model_id"] == "b" and status["status"] == "running" and status["error"] is None
        # The feed stops: disconnected within the stall timeout, back when frames return.
        feeding.clear()
        assert wait_until(lambda: pipeline.status()["camera_status"] == "disconnected", 3)
        feeding.set()
        assert wait_until(lambda: pipeline.status()["camera_status"] == "connected", 3)
    finally:
        stop.set()
        feeder.join()
        assert pipeline.stop()
        pipeline.close()


def test_error_status_heals_with_a_new_model_and_no_source(session_factory, store) -> None:
    def broken(i: int, t: float) -> list:
        raise RuntimeError("model exploded")

    pipeline, _ = _pipeline(session_factory, store, "push", ScriptedDetector(broken), motion_mode="off")
    ok, buf = cv2.imencode(".jpg", np.zeros((60, 80, 3), np.uint8))
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            pipeline.push_jpeg(buf.tobytes())
            time.sleep(0.02)

    feeder = threading.Thread(target=feed)
    pipeline.start()
    feeder.start()
    try:
        assert wait_until(lambda: pipeline.status()["status"] == "error", 5)
        assert "model exploded" in pipeline.status()["error"]
        pipeline.holder.swap(ScriptedDetector(lambda i, t: []))
        assert wait_until(lambda: pipeline.status()["status"] == "running", 5)
    finally:
        stop.set()
        feeder.join()
        pipeline.stop()
    # No camera configured: the pipeline runs, reports the camera as disconnected and ignores pushes.
    pipeline.apply_settings("camera", CameraSettings(source=""))
    pipeline.holder.unload()
    pipeline.start()
    status = pipeline.status()
    assert status["status"] == "running" and status["camera_status"] == "disconnected"
    assert not status["model_loaded"] and status["camera_error"] == "no camera source configured"
    assert not pipeline.push_jpeg(buf.tobytes())
    pipeline.close()


def test_real_model_in_the_loop(session_factory, store, tmp_path: Path, tiny_weights: Path) -> None:
    """The random-init tiny YOLO (its biased head sees 'persons' everywhere) through the whole loop."""
    from detection_service.pipeline.detector import create_detector

    video = write_video(tmp_path / "real.avi", frames=30, fps=15, size=(160, 128))
    pipeline, bus = _pipeline(
        session_factory, store, str(video), create_detector(tiny_weights, "torch", 64), motion_mode="off"
    )
    created = bus.subscribe("test")
    pipeline.start()
    try:
        assert wait_until(lambda: pipeline.status()["inferences"] >= 5, 10)
        message = created.get(timeout=10)
        status = pipeline.status()
        assert status["backend"] == "torch" and status["model_id"] == "tiny" and status["last_inference_ms"] > 0
        assert isinstance(message, EventCreated) and message.model_version == "tiny"
        assert message.bbox["frame_width"] == 160 and message.bbox["frame_height"] == 128
    finally:
        assert pipeline.stop()
        pipeline.close()
