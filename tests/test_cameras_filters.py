"""Several cameras, the rest of issue #15 item 2 (docs/cameras.md): the camera filter of the
analytics endpoints, per-camera detection/pipeline overrides, and the WebSocket ingest per camera."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from schemas import db
from tests import live_layouts


def _data(response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True, body
    return body["data"]


def _error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body


def _add_events(client, camera_id: int, count: int, code: str = "package", days_ago: float = 0.0) -> None:
    with client.app.state.session_factory.begin() as session:
        type_id = session.scalar(sa.select(db.ObjectType.id).where(db.ObjectType.code == code))
        at = db.utcnow() - timedelta(days=days_ago)
        for i in range(count):
            session.add(
                db.DetectionEvent(
                    object_type_id=type_id,
                    camera_id=camera_id,
                    detected_at=at - timedelta(minutes=i),
                    ended_at=at - timedelta(minutes=i) + timedelta(seconds=30),
                    tracking_duration=30,
                    status="ended",
                )
            )


def test_analytics_filter_by_camera(client) -> None:
    """patterns and anomalies count only the camera asked for; an unknown id answers empty, a bad one 400."""
    camera = _data(
        client.post("/api/cameras", json={"name": "back door", "source": "rtsp://x/1", "enabled": False}), 201
    )
    _add_events(client, 1, 3)
    _add_events(client, camera["id"], 2)
    _add_events(client, camera["id"], 4, days_ago=20)  # history for the anomalies' baseline

    def patterns(query: str = "") -> int:
        return _data(client.get(f"/api/analytics/patterns?period=month{query}"))["events"]

    assert (patterns(), patterns("&camera_id=1"), patterns(f"&camera_id={camera['id']}")) == (9, 3, 6)
    assert patterns("&camera_id=77") == 0

    def baseline(query: str = "") -> int:
        return _data(client.get(f"/api/analytics/anomalies?days=7{query}"))["baseline"]["events"]

    assert (baseline(), baseline("&camera_id=1"), baseline(f"&camera_id={camera['id']}")) == (4, 0, 4)
    for path in ("patterns", "anomalies", "statistics"):
        _error(client.get(f"/api/analytics/{path}?camera_id=0"), 400, "VALIDATION_ERROR")
        _error(client.get(f"/api/analytics/{path}?camera_id=abc"), 400, "VALIDATION_ERROR")


def test_detection_and_pipeline_overrides_per_camera(client, tmp_path) -> None:
    """A camera's overrides replace the global detection / pipeline settings for its pipeline only,
    live; global changes reach what it does not override; bad values are 400 and change nothing."""
    from tests.pipeline.conftest import wait_until, write_video

    video = write_video(tmp_path / "back.avi", frames=300, fps=15, size=(160, 120))
    overrides = {"confidence_threshold": 0.8, "package_removed_after_s": 30, "motion_mode": "off", "fps": 12}
    camera = _data(
        client.post("/api/cameras", json={"name": "back door", "source": str(video), "overrides": overrides}), 201
    )
    assert camera["overrides"] == overrides
    service = client.app.state.pipeline_service
    assert wait_until(lambda: service.cameras.get(camera["id"]) is not None, 10)
    back, front = service.cameras.get(camera["id"]).pipeline, service.pipeline
    assert (back.detection.confidence_threshold, back.config.package_removed_after_s, back.config.motion_mode) == (
        0.8,
        30,
        "off",
    )
    assert (front.detection.confidence_threshold, front.config.package_removed_after_s) == (0.5, 10)

    # Global changes: the camera keeps what it overrides and takes the rest.
    assert (
        client.put("/api/settings/detection", json={"confidence_threshold": 0.6, "capture_count": 3}).status_code == 200
    )
    assert (
        client.put("/api/detection/config", json={"end_after_s": 7, "package_removed_after_s": 20}).status_code == 200
    )
    assert (back.detection.confidence_threshold, back.detection.capture_count) == (0.8, 3)
    assert (back.config.end_after_s, back.config.package_removed_after_s) == (7, 30)
    assert (front.detection.confidence_threshold, front.config.package_removed_after_s) == (0.6, 20)

    # Changed live through the cameras API; an empty overrides object returns to the global values.
    path = f"/api/cameras/{camera['id']}"
    _data(client.put(path, json={"overrides": {"sensitivity": "high", "confirm_hits": 5}}))
    assert (back.config.sensitivity, back.config.confirm_hits, back.config.package_removed_after_s) == ("high", 5, 20)
    assert back.detection.confidence_threshold == 0.6 and front.config.confirm_hits == 3
    assert service.cameras.get(camera["id"]).pipeline is back  # the same pipeline, not a new one

    # Bad values: 400 in the envelope, nothing changes.
    for bad in (
        {"confidence_threshold": 1.5},
        {"confidence_threshold": 0.05},
        {"package_removed_after_s": 0},
        {"motion_mode": "sometimes"},
        {"backend": "onnx"},  # one detector for every camera
        {"imgsz": 320},
    ):
        _error(client.put(path, json={"overrides": bad}), 400, "VALIDATION_ERROR")
    assert _data(client.get(path))["overrides"] == {"sensitivity": "high", "confirm_hits": 5}
    assert (back.config.sensitivity, back.config.confirm_hits) == ("high", 5)
    # Camera 1's detection and pipeline settings are the global ones.
    _error(
        client.put("/api/cameras/1", json={"overrides": {"confidence_threshold": 0.9}}), 400, "DEFAULT_CAMERA_SETTINGS"
    )
    assert front.detection.confidence_threshold == 0.6


# --------------------------------------------------------------------------- WebSocket ingest per camera


@pytest.fixture(params=live_layouts.LAYOUTS)
def service(request: pytest.FixtureRequest, tmp_path: Path, migrated_database_url: str):
    """The service in one process and split (aidoor detect apart, two API workers)."""
    from detection_service.app import create_app
    from detection_service.config import Settings
    from tests.conftest import AuthedTestClient, free_port

    settings = Settings.from_env(
        environ={}, data_dir=tmp_path / "data", database_url=migrated_database_url, dagster_port=free_port()
    )
    if request.param == "split":
        with live_layouts.split_layout(settings, tmp_path / "split") as split:
            yield split
        return
    with AuthedTestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@contextmanager
def _ingest(client, query: str, token: str) -> Iterator[Any]:
    """The WebSocket ingest with a bearer token, in either layout."""
    path = "/api/stream/ingest" + query
    headers = {"Authorization": f"Bearer {token}"}
    if isinstance(client, live_layouts.SplitClient):
        from websockets.sync.client import connect

        with connect(client.url.replace("http", "ws", 1) + path, additional_headers=headers) as connection:
            yield live_layouts.WebSocketSession(connection)
    else:
        with client.websocket_connect(path, headers=headers) as socket:
            yield socket


def _refused(client, query: str, token: str) -> str:
    with _ingest(client, query, token) as socket:
        message = socket.receive_json()
    assert message["type"] == "error" and message["fatal"] is True, message
    return message["code"]


def test_websocket_ingest_per_camera_and_camera_scoped_tokens(service) -> None:
    """A camera whose source is push takes frames on ?camera=N; a token scoped to camera N feeds
    camera N only; an unknown camera or one that is not push is refused; deleting the camera
    revokes its tokens."""
    from tests.pipeline.conftest import wait_until

    client = service
    camera = _data(client.post("/api/cameras", json={"name": "side door", "source": "push"}), 201)
    other = _data(client.post("/api/cameras", json={"name": "garage", "source": "rtsp://127.0.0.1:9/x"}), 201)
    cid = camera["id"]
    scoped = _data(client.post("/api/auth/tokens", json={"role": "camera", "name": "side", "camera_id": cid}), 201)
    assert scoped["info"]["camera_id"] == cid
    unscoped = _data(client.post("/api/auth/tokens", json={"role": "camera", "name": "any"}), 201)["token"]
    _error(client.post("/api/auth/tokens", json={"role": "user", "camera_id": cid}), 400, "INVALID_SCOPE")
    _error(client.post("/api/auth/tokens", json={"role": "camera", "camera_id": 999}), 404, "CAMERA_NOT_FOUND")
    _error(client.post("/api/auth/tokens", json={"role": "camera", "camera_id": 0}), 400, "VALIDATION_ERROR")

    frame = cv2.imencode(".jpg", np.full((120, 176, 3), 90, np.uint8))[1].tobytes()
    with _ingest(client, f"?camera={cid}", scoped["token"]) as socket:
        assert socket.receive_json()["type"] == "ready"
        socket.send_text('{"type": "hello", "camera": "side-cam"}')
        for _ in range(20):
            socket.send_bytes(frame)
        assert wait_until(
            lambda: _data(client.get(f"/api/stream/status?camera={cid}"))["ingest"]["frames_received"] >= 20, 15
        )
        status = _data(client.get(f"/api/stream/status?camera={cid}"))
        assert status["ingest"]["connected"] is True and status["ingest"]["client"].startswith("side-cam")

        def pictured() -> bool:  # a camera streams on: one more frame per look
            socket.send_bytes(frame)
            return client.get(f"/api/stream/snapshot?camera={cid}").status_code == 200

        assert wait_until(pictured, 15, interval=0.1)
        # One client per camera at a time; camera 1's ingest is another one.
        assert _refused(client, f"?camera={cid}", unscoped) == "BUSY"
    assert _data(client.get("/api/stream/status"))["ingest"]["frames_received"] == 0  # camera 1 got none

    # The scoped token feeds its camera only.
    assert _refused(client, "", scoped["token"]) == "FORBIDDEN_CAMERA"
    assert _refused(client, f"?camera={other['id']}", scoped["token"]) == "FORBIDDEN_CAMERA"
    assert _refused(client, f"?camera={other['id']}", unscoped) == "NOT_PUSH_SOURCE"
    assert _refused(client, "?camera=999", unscoped) == "CAMERA_NOT_FOUND"
    assert _refused(client, "", unscoped) == "NOT_PUSH_SOURCE"  # camera 1 plays no push source here

    # Deleting the camera revokes its scoped tokens (a later camera may get the same id).
    _data(client.delete(f"/api/cameras/{cid}"))
    tokens = {t["id"]: t for t in _data(client.get("/api/auth/tokens"))}
    assert tokens[scoped["info"]["id"]]["revoked_at"] is not None
