"""GET /api/analytics/tracking (issue 12 item 4): the live tracker's objects, through the app."""

from __future__ import annotations

from pathlib import Path

from tests import live_layouts
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

client = live_layouts.client  # each test in both layouts: in process, and aidoor detect + 2 API workers


def tracking(client) -> dict:
    response = client.get("/api/analytics/tracking")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["timestamp"]
    return body


def test_empty_while_the_pipeline_is_stopped(client) -> None:
    body = tracking(client)
    assert body["data"] == {**body["data"], "running": False, "count": 0, "objects": []}
    assert "stopped" in body["message"]


def test_lists_a_track_while_an_object_is_seen_and_empties_after(client, tmp_path: Path) -> None:
    video = write_video(tmp_path / "door.avi", frames=45, fps=15, size=(160, 120))
    # A person for the first 40 detector runs, then nobody; the gate off: every frame is a run.
    person = det(10, 10, 60, 100, "person", 0.9)
    client.app.state.detector_holder.swap(ScriptedDetector(lambda i, t: [person] if i < 40 else []))
    assert client.put("/api/detection/config", json={"motion_mode": "off"}).status_code == 200
    assert client.put("/api/settings/camera", json={"source": str(video)}).status_code == 200

    def confirmed() -> list[dict]:
        return [o for o in tracking(client)["data"]["objects"] if o["confirmed"] and o["event_id"] is not None]

    assert wait_until(confirmed, 8)
    [tracked] = confirmed()
    assert tracked["object_type"] == "person" and tracked["votes"] == {"person": tracked["hits"]}
    assert tracked["hits"] >= 3 and tracked["confidence"] == 0.9
    assert tracked["bbox"] == {"x1": 10.0, "y1": 10.0, "x2": 60.0, "y2": 100.0}
    assert (tracked["frame_width"], tracked["frame_height"]) == (160, 120)
    assert tracked["first_seen"] <= tracked["last_seen"]
    event_ids = [e["id"] for e in client.get("/api/events").json()["data"]["items"]]
    assert tracked["event_id"] in event_ids  # the event it belongs to, by its row id
    body = tracking(client)
    assert body["data"]["running"] is True and body["data"]["count"] >= 1 and "tracked" in body["message"]
    # The person left: ByteTrack drops the lost track after its buffer (30 runs), the list empties.
    assert wait_until(lambda: tracking(client)["data"]["objects"] == [], 10)
    assert tracking(client)["data"]["running"] is True
    # And a stopped pipeline tracks nothing.
    client.app.state.detector_holder.swap(ScriptedDetector(lambda i, t: [person]))
    assert wait_until(lambda: tracking(client)["data"]["count"] == 1, 5)
    assert client.post("/api/detection/stop").status_code == 200
    body = tracking(client)
    assert body["data"]["running"] is False and body["data"]["objects"] == []
