"""Several cameras, the rest of issue #15 item 2 (docs/cameras.md): the camera filter of the
analytics endpoints, per-camera detection/pipeline overrides, and the WebSocket ingest per camera."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from schemas import db


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
