"""POST /api/system/restart (issue 11): camera, detection and all, in-process, through the app."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from detection_service.bus import EventCreated, PackageRemoved
from schemas.db import DetectionEvent
from tests import live_layouts
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

client = live_layouts.client  # each test in both layouts: in process, and aidoor detect + 2 API workers


def detection(client) -> dict:
    response = client.get("/api/detection")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def restart(client, body):
    return client.post("/api/system/restart", json=body)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "door.avi", frames=45, fps=15, size=(160, 120))


@pytest.fixture
def parcel_run(client, video: Path):
    """A parcel the (scripted) detector sees in every frame, on a looping file source: one open
    package event."""
    client.app.state.detector_holder.swap(ScriptedDetector(lambda i, t: [det(90, 60, 140, 110, "package", 0.9)]))
    sub = client.app.state.bus.subscribe("restart-test")
    assert client.put("/api/settings/camera", json={"source": str(video)}).status_code == 200
    assert wait_until(lambda: detection(client)["detection_count"] == 1, 8)
    return sub


def _messages(sub) -> list:
    found = []
    while (message := sub.get(timeout=0)) is not None:
        found.append(message)
    return found


def _events(client) -> list[DetectionEvent]:
    with client.app.state.session_factory() as session:
        return list(session.scalars(sa.select(DetectionEvent).order_by(DetectionEvent.id)))


@pytest.mark.parametrize(
    "body",
    [None, {}, {"service": "camra"}, {"service": 1}, {"service": None}, {"service": "all", "extra": True}, []],
)
@pytest.mark.parametrize("client", ["single"], indirect=True)  # validation only: the same code in both layouts
def test_each_bad_value_is_a_400_and_changes_nothing(client, body) -> None:
    before = detection(client)
    response = (
        client.post("/api/system/restart", json=body)
        if body is not None
        else client.post("/api/system/restart", content=b"not json", headers={"content-type": "application/json"})
    )
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["success"] is False and envelope["error"]["code"], envelope
    after = detection(client)
    assert (after["status"], after["uptime"] <= before["uptime"] + 2) == (before["status"], True)


def test_camera_restart_needs_a_running_pipeline(client) -> None:
    response = restart(client, {"service": "camera"})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "PIPELINE_STOPPED"


def test_detection_restart_readopts_the_open_package(client, parcel_run, caplog) -> None:
    """The parcel's event is open before the restart; the same parcel after it continues that
    event: one row, one EventCreated, no removal, and the tracker's new track points at it."""
    assert wait_until(lambda: [e.image_path is not None for e in _events(client)] == [True], 8)  # row written
    [event] = _events(client)
    inferences = detection(client)["inferences"]
    caplog.set_level(logging.INFO)
    response = restart(client, {"service": "detection"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["data"]["service"] == "detection"
    assert [c["component"] for c in body["data"]["components"]] == ["detection"]
    assert body["data"]["components"][0]["outcome"] == "restarted"
    assert body["data"]["pipeline_status"] == "running"
    # Counters start again: the pipeline really restarted.
    assert detection(client)["inferences"] < inferences + 5
    if isinstance(client, live_layouts.SplitClient):  # the API workers log to their own output
        assert wait_until(lambda: "system restart requested: detection" in client.api_log(), 5)
    else:
        assert any("system restart requested: detection" in r.getMessage() for r in caplog.records)

    def continued() -> bool:
        objects = client.get("/api/analytics/tracking").json()["data"]["objects"]
        return any(o["confirmed"] and o["event_id"] == event.id for o in objects)

    assert wait_until(continued, 8)
    # The new pipeline thread re-adopted it at its start.
    assert any("re-adopted 1 open package event" in r.getMessage() for r in caplog.records)
    time.sleep(1.0)  # more frames of the same parcel
    rows = _events(client)
    assert [r.id for r in rows] == [event.id] and rows[0].ended_at is None
    messages = _messages(parcel_run)
    assert sum(isinstance(m, EventCreated) for m in messages) == 1
    assert not any(isinstance(m, PackageRemoved) for m in messages)


def test_camera_restart_reopens_the_capture_only(client, parcel_run) -> None:
    def handled() -> int:
        data = detection(client)
        return data["inferences"] + data["gated_skips"]

    assert wait_until(lambda: detection(client)["frames_read"] > 30, 8)
    frames_read, frames_handled = detection(client)["frames_read"], handled()
    response = restart(client, {"service": "camera"})
    assert response.status_code == 200, response.text
    [step] = response.json()["data"]["components"]
    assert step["component"] == "camera" and step["outcome"] == "restarted", step
    # A new capture counts its frames from 0; the pipeline itself carries on (its counters keep
    # growing, the parcel is still the one event).
    assert detection(client)["frames_read"] < frames_read
    assert handled() >= frames_handled
    assert wait_until(lambda: handled() > frames_handled + 10, 5)
    assert detection(client)["detection_count"] == 1 and len(_events(client)) == 1


def test_all_reinitialises_every_component_and_keeps_serving(client, parcel_run) -> None:
    assert wait_until(lambda: len(_events(client)) == 1, 8)
    [event] = _events(client)
    response = restart(client, {"service": "all"})
    assert response.status_code == 200, response.text
    components = {c["component"]: c for c in response.json()["data"]["components"]}
    assert set(components) == {"detection", "notification", "database", "storage"}
    assert all(c["outcome"] == "restarted" for c in components.values()), components
    if not isinstance(client, live_layouts.SplitClient):  # split: the notifier is in the API worker
        assert client.app.state.notifier.running  # the notifier's loop started again
    assert client.get("/api/system/health").status_code == 200  # the HTTP server never went away
    assert wait_until(lambda: detection(client)["status"] == "running", 5)
    time.sleep(1.0)
    assert [r.id for r in _events(client)] == [event.id]
