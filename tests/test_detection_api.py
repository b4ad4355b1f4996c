"""Detection Process API, Stream API status, WebSocket ingest and POST /api/detections, through
the app (the pipeline library itself is tested in tests/pipeline/)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.app import create_app
from schemas.db import DetectionEvent, EventImage
from tests import live_layouts
from tests.conftest import AuthedTestClient as TestClient  # sends an admin token
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

client = live_layouts.client  # the tests with a client in both layouts: in process, and aidoor detect + 2 API workers

SEED_KEYS = {"status", "camera_status", "model_loaded", "notification_ready", "uptime", "fps", "detection_count"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return body


def status(client) -> dict:
    response = client.get("/api/detection")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "door.avi", frames=45, fps=15, size=(160, 120))


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLO11n with our classes and random weights whose class biases make it report 'person'
    boxes everywhere: a real model through the real deploy path, without training."""
    from detection_service.ml.ultralytics_env import configure_offline

    configure_offline(tmp_path_factory.mktemp("ml"))
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from detection_service.ml.classes import MODEL_CLASSES

    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.model = DetectionModel("yolo11n.yaml", nc=len(MODEL_CLASSES), verbose=False)
    model.model.names = dict(enumerate(MODEL_CLASSES))
    for branch in model.model.model[-1].cv3:
        branch[-1].bias.data[:] = torch.tensor([2.0, -3.0, -3.0, -3.0])
    path = tmp_path_factory.mktemp("random-model") / "random.pt"
    model.save(str(path))
    return path


# --------------------------------------------------------------------------- process API


def test_status_has_seed_keys_and_comes_up_without_model(client):
    data = status(client)
    assert set(data) >= SEED_KEYS
    assert data["status"] == "stopped" and data["camera_status"] == "disconnected"
    assert data["model_loaded"] is False and data["model_state"] == "none"
    assert data["notification_ready"] is False  # no notifier yet
    assert {"model_id", "backend", "source", "demo", "inferences", "dropped_frames"} <= set(data)
    state = client.app.state
    assert state.pipeline is state.pipeline_service.pipeline and state.detector_holder.get() is None
    # Nothing to start without a source; unknown actions are refused.
    assert_error(client.post("/api/detection/start"), 409, "NO_CAMERA_SOURCE")
    body = assert_error(client.post("/api/detection/pause"), 400, "INVALID_ACTION")
    assert body["error"]["details"]["allowed"] == ["start", "stop", "restart"]
    stream = client.get("/api/stream/status").json()
    assert stream["success"] and stream["data"]["camera_status"] == "disconnected"
    assert stream["data"]["viewers"] == 0 and stream["data"]["ingest"]["connected"] is False
    assert_error(client.get("/api/stream/snapshot"), 404, "NO_FRAME")


def test_start_stop_restart_repeatedly(client, video: Path):
    holder = client.app.state.detector_holder
    holder.swap(ScriptedDetector(lambda i, t: [det(10, 10, 60, 100, "person", 0.9)], model_id="scripted-v1"))
    # Configuring a source starts the pipeline (nobody stopped it on purpose).
    assert client.put("/api/settings/camera", json={"source": str(video)}).status_code == 200
    assert wait_until(lambda: status(client)["camera_status"] == "connected", 5)
    for _ in range(3):
        stopped = client.post("/api/detection/stop")
        assert stopped.status_code == 200 and stopped.json()["data"]["status"] == "stopped"
        assert status(client)["uptime"] == 0
        started = client.post("/api/detection/start")
        assert started.status_code == 200 and started.json()["data"]["status"] == "running", started.text
        assert wait_until(lambda: status(client)["camera_status"] == "connected", 5)
        restarted = client.post("/api/detection/restart")
        assert restarted.status_code == 200 and restarted.json()["data"]["status"] == "running"
    assert wait_until(lambda: status(client)["fps"] > 0, 5)
    data = status(client)
    assert data["model_loaded"] and data["model_id"] == "scripted-v1" and data["backend"] == "scripted"
    assert data["source"] == str(video) and data["demo"] is False
    assert wait_until(lambda: status(client)["detection_count"] >= 1, 5)  # the person became an event
    # A stop is remembered: changing a camera setting does not start it again.
    client.post("/api/detection/stop")
    assert client.put("/api/settings/camera", json={"brightness": 10}).status_code == 200
    assert status(client)["status"] == "stopped"


def test_camera_lost_and_back(client, video: Path, tmp_path: Path):
    """Kill the source mid-run: disconnected within 5 s, back when it returns, no crash, and the
    parcel it was watching stays one event (an outage never counts as the parcel leaving)."""
    client.app.state.detector_holder.swap(ScriptedDetector(lambda i, t: [det(90, 60, 140, 110, "package", 0.9)]))
    sub = client.app.state.bus.subscribe("test")
    assert client.put("/api/detection/config", json={"stall_timeout_s": 1.0}).status_code == 200
    client.put("/api/settings/camera", json={"source": str(video)})
    assert wait_until(lambda: status(client)["camera_status"] == "connected", 5)
    assert wait_until(lambda: status(client)["detection_count"] == 1, 5)
    hidden = tmp_path / "elsewhere.avi"
    os.rename(video, hidden)  # the 3 s file ends; its re-open fails
    lost_at = time.monotonic()
    assert wait_until(lambda: status(client)["camera_status"] == "disconnected", 5)
    assert time.monotonic() - lost_at < 5
    data = status(client)
    assert data["status"] == "running" and data["camera_error"]
    os.rename(hidden, video)
    assert wait_until(lambda: status(client)["camera_status"] == "connected", 12)
    assert status(client)["reconnects"] >= 1
    time.sleep(1.0)  # the detector sees the parcel again
    data = status(client)
    assert data["detection_count"] == 1 and data["status"] == "running"
    messages = []
    while (message := sub.get(timeout=0)) is not None:
        messages.append(type(message).__name__)
    assert messages.count("EventCreated") == 1 and "PackageRemoved" not in messages, messages


# --------------------------------------------------------------------------- config


def test_config_validation_lists_every_problem_and_applies_nothing(client):
    before = client.get("/api/detection/config").json()["data"]
    settings_before = client.get("/api/settings/detection").json()["data"]
    bad = {
        "colour": "red",
        "confirm_hits": 0,
        "imgsz": 100,
        "confidence_threshold": 2,
        "motion_mode": "sometimes",
        "motion_min_area": 0.01,
    }  # the last one alone would be fine
    body = assert_error(client.put("/api/detection/config", json=bad), 400, "INVALID_CONFIG")
    problems = {p["key"] for p in body["error"]["details"]}
    assert problems == {"colour", "confirm_hits", "imgsz", "confidence_threshold", "motion_mode"}
    assert client.get("/api/detection/config").json()["data"] == before
    assert client.get("/api/settings/detection").json()["data"] == settings_before
    assert_error(client.put("/api/detection/config", json={}), 400, "INVALID_CONFIG")
    assert client.put("/api/detection/config", json=[1, 2]).status_code == 400


def test_config_applies_live_and_persists(settings):
    change = {
        "motion_mode": "off",
        "full_check_interval_s": 1.5,
        "confirm_hits": 2,
        "package_removed_after_s": 30,
        "confidence_threshold": 0.6,
        "capture_count": 3,
        "sensitivity": "high",
    }
    with TestClient(create_app(settings)) as client:
        response = client.put("/api/detection/config", json=change)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["pipeline"]["motion_mode"] == "off" and data["detection"]["confidence_threshold"] == 0.6
        pipeline = client.app.state.pipeline
        assert pipeline.config.motion_mode == "off" and pipeline.config.full_check_interval_s == 1.5
        assert pipeline.config.sensitivity == "high"
        assert pipeline.recorder.config.confirm_hits == 2
        assert pipeline.recorder.writer.config.package_removed_after_s == 30
        assert pipeline.detection.confidence_threshold == 0.6 and pipeline.detection.capture_count == 3
        # Detection settings are the same values as /api/settings/detection, both ways.
        assert client.get("/api/settings/detection").json()["data"]["capture_count"] == 3
        client.put("/api/settings/detection", json={"capture_count": 4})
        assert pipeline.detection.capture_count == 4
        # The pipeline settings are the `pipeline` settings category: same values, applied live either way.
        assert client.get("/api/settings/pipeline").json()["data"]["confirm_hits"] == 2
        assert client.put("/api/settings/pipeline", json={"confirm_hits": 4, "motion_mode": "on"}).status_code == 200
        assert pipeline.recorder.config.confirm_hits == 4 and pipeline.config.motion_mode == "on"
        assert client.get("/api/detection/config").json()["data"]["pipeline"]["confirm_hits"] == 4
        client.put("/api/detection/config", json={"confirm_hits": 2, "motion_mode": "off"})
    # The pipeline settings survive a restart of the service.
    with TestClient(create_app(settings)) as again:
        pipeline_settings = again.get("/api/detection/config").json()["data"]["pipeline"]
        assert (
            pipeline_settings["motion_mode"] == "off"
            and pipeline_settings["confirm_hits"] == 2
            and pipeline_settings["sensitivity"] == "high"
        )
        assert again.app.state.pipeline.recorder.config.package_removed_after_s == 30
        assert again.app.state.pipeline.config.motion_mode == "off"


def test_pipeline_setting_defaults_match_the_pipeline_library():
    # One definition: the pipeline's configuration (read by its gate, capture and event recorder)
    # is the pipeline settings plus limits, so every setting exists there with the same default.
    from detection_service.pipeline.config import PipelineConfig
    from schemas.detection import PipelineSettings

    pipeline_settings, config = PipelineSettings(), PipelineConfig()
    assert issubclass(PipelineConfig, PipelineSettings)
    assert {k: getattr(pipeline_settings, k) for k in PipelineSettings.__struct_fields__} == msgspec.structs.asdict(
        config.pipeline_settings
    )
    changed = config.with_pipeline_settings(PipelineSettings(confirm_hits=5, motion_mode="off"))
    assert changed.confirm_hits == 5 and changed.motion_mode == "off" and changed.retry_max_s == config.retry_max_s


# --------------------------------------------------------------------------- WebSocket ingest


def test_websocket_ingest(client):
    frame = np.full((120, 160, 3), 90, np.uint8)
    with client.websocket_connect("/api/stream/ingest") as ws:  # camera source is not "push" yet
        message = ws.receive_json()
        assert message["type"] == "error" and message["code"] == "NOT_PUSH_SOURCE" and message["fatal"]
    client.put("/api/detection/config", json={"stall_timeout_s": 1.0})
    assert client.put("/api/settings/camera", json={"source": "push"}).status_code == 200
    assert status(client)["status"] == "running"
    with client.websocket_connect("/api/stream/ingest") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["max_frame_bytes"] == 20 * 1024 * 1024
        ws.send_text('{"type": "hello", "camera": "front-door"}')
        with client.websocket_connect("/api/stream/ingest") as second:  # one camera at a time
            assert second.receive_json()["code"] == "BUSY"
        for i in range(20):
            frame[:, :, 2] = i * 10
            ws.send_bytes(jpeg(frame))
            time.sleep(0.03)
        ws.send_bytes(b"not an image")
        assert ws.receive_json()["code"] == "INVALID_FRAME"
        ws.send_text('{"type": "ping"}')
        pong = ws.receive_json()
        assert pong["type"] == "pong" and pong["frames_received"] == 20 and pong["frames_invalid"] == 1
        ws.send_text("{nonsense")
        assert ws.receive_json()["code"] == "BAD_MESSAGE"
        assert wait_until(lambda: status(client)["frames_read"] >= 5, 5)
        assert status(client)["camera_status"] == "connected"
        stream = client.get("/api/stream/status").json()["data"]
        assert stream["ingest"]["connected"] and stream["ingest"]["client"].startswith("front-door")
        assert (stream["frame_width"], stream["frame_height"]) == (160, 120)
    # The camera went away: disconnected within stall_timeout_s, back with the next frames.
    assert wait_until(lambda: status(client)["camera_status"] == "disconnected", 5)
    assert status(client)["status"] == "running"
    with client.websocket_connect("/api/stream/ingest") as ws:
        ws.receive_json()
        for _ in range(5):
            ws.send_bytes(jpeg(frame))
            time.sleep(0.05)
        assert wait_until(lambda: status(client)["camera_status"] == "connected", 3)
    snapshot = client.get("/api/stream/snapshot")
    assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"


# --------------------------------------------------------------------------- POST /api/detections


def test_manual_detection_envelopes_without_model(client):
    image = jpeg(np.full((64, 64, 3), 128, np.uint8))
    body = assert_error(
        client.post("/api/detections", files={"image": ("a.jpg", image, "image/jpeg")}), 503, "NO_MODEL"
    )
    assert "aidoor bootstrap-model" in body["error"]["message"]
    body = assert_error(
        client.post("/api/detections", files={"image": ("a.txt", b"hello", "text/plain")}), 400, "INVALID_IMAGE"
    )
    assert body["error"]["details"]["filename"] == "a.txt"
    corrupt = image[: len(image) // 2]  # a JPEG cut in half
    assert_error(
        client.post("/api/detections", files={"image": ("c.jpg", corrupt, "image/jpeg")}), 400, "INVALID_IMAGE"
    )
    garbage = image[:200] + os.urandom(2000)  # a valid header, then noise
    assert_error(
        client.post("/api/detections", files={"image": ("g.jpg", garbage, "image/jpeg")}), 400, "INVALID_IMAGE"
    )
    assert_error(
        client.post("/api/detections", files={"picture": ("a.jpg", image, "image/jpeg")}), 400, "MISSING_IMAGE"
    )
    big = b"\xff\xd8\xff" + os.urandom(21 * 1024 * 1024)  # over AIDOOR_MAX_UPLOAD_MB (20)
    assert_error(
        client.post("/api/detections", files={"image": ("big.jpg", big, "image/jpeg")}), 413, "PAYLOAD_TOO_LARGE"
    )


def test_deploy_loads_the_model_and_manual_detection_records_an_event(client, random_model: Path):
    from detection_service.ml import registry

    state = client.app.state
    # Torch at 64 px: no export, fast on a shared CPU; also exercises the backend/imgsz settings.
    assert client.put("/api/detection/config", json={"backend": "torch", "imgsz": 64}).status_code == 200
    row = registry.register_model(
        state.session_factory,
        state.object_store,
        random_model,
        model_name="random",
        metrics={"classes": ["person", "package", "delivery_food", "mail"]},
        inference_ms=None,
        created_by="test",
    )
    deployed = client.post(f"/api/models/{row.model_id}/deploy")
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["data"]["detector_reloaded"] is True
    data = status(client)
    assert data["model_loaded"] and data["model_id"] == row.model_id and data["backend"] == "torch"
    assert data["imgsz"] == 64 and data["model_state"] == "loaded"

    sub = state.bus.subscribe("test")
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    response = client.post("/api/detections", files={"image": ("door.jpg", jpeg(image), "image/jpeg")})
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert result["count"] == len(result["detections"]) > 0 and result["event_id"] is None
    first = result["detections"][0]
    assert set(first) == {"bbox", "class", "class_id", "confidence", "type"}
    assert set(first["bbox"]) == {"x1", "y1", "x2", "y2"} and first["class"] == "person" and first["type"] == "person"
    assert (result["width"], result["height"]) == (128, 96) and result["model_id"] == row.model_id

    recorded = client.post("/api/detections?record=true", files={"image": ("door.jpg", jpeg(image), "image/jpeg")})
    assert recorded.status_code == 200, recorded.text
    event_id, key = recorded.json()["data"]["event_id"], recorded.json()["data"]["image_key"]
    assert event_id is not None and key.endswith(f"/{event_id}/1.jpg")
    assert state.object_store.exists(key)
    with state.session_factory() as session:
        event = session.get(DetectionEvent, event_id)
        assert event.image_path == key and event.created_by == "api" and event.ended_at is not None
        assert event.model_version == row.model_id
        [image_row] = session.scalars(sa.select(EventImage).where(EventImage.event_id == event_id)).all()
        assert image_row.sequence_number == 1
    message = sub.get(timeout=2)
    assert message is not None and message.event_id == event_id and message.snapshot_jpeg[:2] == b"\xff\xd8"

    # A backend/imgsz the model cannot run with is refused (422) and nothing else changes.
    def cannot_load(*args, **kwargs):
        raise RuntimeError("no such runtime here")

    holder = state.detector_holder
    original = holder.load
    holder.load = cannot_load
    try:
        refused = client.put("/api/detection/config", json={"backend": "onnx", "confirm_hits": 5})
    finally:
        holder.load = original
    assert_error(refused, 422, "BACKEND_UNAVAILABLE")
    pipeline_settings = client.get("/api/detection/config").json()["data"]["pipeline"]
    assert pipeline_settings["backend"] == "torch" and pipeline_settings["confirm_hits"] == 3
    assert status(client)["model_id"] == row.model_id
    assert state.model_service.deploy_hook == state.pipeline_service.models.load
