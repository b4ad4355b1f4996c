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
