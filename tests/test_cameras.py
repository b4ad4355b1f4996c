"""Several cameras (issue #15 item 2, docs/cameras.md): migration 0009, the cameras API, the
camera filter, two cameras producing their own events, and the shared batching detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service import database
from detection_service.pipeline.detector import Detection, Detector
from schemas import db
from tests import live_layouts
from tests.pipeline.conftest import wait_until


def test_migration_0009_keeps_events_and_their_images(clean_database_url: str) -> None:
    """An install at 0008 with an event and its image: after 0009 the event is camera 1's and the
    image is still there (a SQLite table rebuild must not cascade into event_images)."""
    url = clean_database_url
    database.upgrade(url, "0008_event_uid")
    engine = database.make_engine(url)
    try:
        with engine.begin() as conn:
            type_id = conn.execute(sa.text("SELECT id FROM object_types WHERE code = 'person'")).scalar_one()
            conn.execute(
                sa.text("INSERT INTO detection_events (object_type_id, status, event_uid) VALUES (:t, 'ended', 'u1')"),
                {"t": type_id},
            )
            event_id = conn.execute(sa.text("SELECT id FROM detection_events WHERE event_uid = 'u1'")).scalar_one()
            conn.execute(
                sa.text("INSERT INTO event_images (event_id, image_path, sequence_number) VALUES (:e, 'k.jpg', 1)"),
                {"e": event_id},
            )
        database.upgrade(url)
        database.check(url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(db.DetectionEvent.camera_id)).scalars().all() == [1]
            assert conn.execute(sa.select(sa.func.count()).select_from(db.EventImage)).scalar_one() == 1
            camera = conn.execute(sa.select(db.Camera.id, db.Camera.name, db.Camera.source)).one()
            assert tuple(camera) == (1, "default", None)
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        with engine.begin() as conn:  # the FK holds: no events of an unknown camera
            try:
                conn.execute(
                    sa.text("INSERT INTO detection_events (object_type_id, camera_id) VALUES (:t, 99)"), {"t": type_id}
                )
            except sa.exc.IntegrityError:
                pass
            else:
                raise AssertionError("an event of camera 99 was accepted")
        database.downgrade(url, "0008_event_uid")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM event_images")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM detection_events")).scalar_one() == 1
        database.upgrade(url)
        database.check(url)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the service with two cameras


class ColourDetector(Detector):
    """Test double: a 'package' where the frame is orange, a 'person' where it is green."""

    def __init__(self) -> None:
        super().__init__()
        self.backend, self.model_id, self.imgsz = "colour", "colours", 64
        self.names = {0: "person", 1: "package", 2: "delivery_food", 3: "mail"}

    def _detect(self, frame: np.ndarray, conf: float) -> list[Detection]:
        out = []
        for low, high, class_id, name in (
            ((0, 100, 200), (90, 190, 255), 1, "package"),
            ((0, 180, 0), (90, 255, 90), 0, "person"),
        ):
            mask = cv2.inRange(frame, low, high)
            if cv2.countNonZero(mask) >= 200:
                x, y, w, h = cv2.boundingRect(mask)
                out.append(Detection(x, y, x + w, y + h, class_id, name, 0.9))
        return out


def _scene_video(path: Path, colour: tuple[int, int, int], size: tuple[int, int], fps: float = 15.0) -> Path:
    """A coloured block in view for the whole video (it loops): one long-lived track."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    base = np.full((height, width, 3), 110, np.uint8)
    for _ in range(int(3 * fps)):
        frame = base.copy()
        frame[height // 2 : height // 2 + 50, width // 3 : width // 3 + 60] = colour
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(params=live_layouts.LAYOUTS)
def two_cameras(request: pytest.FixtureRequest, tmp_path: Path, migrated_database_url: str):
    """The service with the demo video (a parcel, 320x240) on the default camera, nothing else
    configured, and a colour detector in the holder; in process, and split (aidoor detect apart,
    two API workers: tests/live_layouts.py)."""
    from detection_service.app import create_app
    from detection_service.config import Settings
    from tests.conftest import AuthedTestClient, free_port

    front = _scene_video(tmp_path / "front.avi", (0, 140, 255), (320, 240))
    back = _scene_video(tmp_path / "back.avi", (40, 220, 40), (288, 224))
    settings = Settings.from_env(
        environ={"AIDOOR_DEMO_VIDEO": str(front)},
        data_dir=tmp_path / "data",
        database_url=migrated_database_url,
        dagster_port=free_port(),
    )
    if request.param == "split":
        with live_layouts.split_layout(settings, tmp_path / "split") as split:
            split.app.state.detector_holder.swap(ColourDetector())
            yield split, back
        return
    with AuthedTestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.detector_holder.swap(ColourDetector())
        yield client, back


def _data(response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True, body
    return body["data"]


def _error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body


def test_two_cameras_record_their_own_events_and_the_api_filters_and_shows_either(two_cameras) -> None:
    client, back = two_cameras
    cameras = _data(client.get("/api/cameras"))
    assert [(c["id"], c["name"], c["is_default"], c["source"]) for c in cameras] == [(1, "default", True, None)]
    created = _data(client.post("/api/cameras", json={"name": "back door", "source": str(back)}), 201)
    assert created["id"] == 2 and created["viewer_url"] == "/api/stream/viewer?camera=2"

    def counts() -> tuple[int, int]:
        return tuple(_data(client.get(f"/api/events?camera_id={c}"))["total"] for c in (1, 2))  # type: ignore[return-value]

    assert wait_until(lambda: all(n >= 1 for n in counts()), 15), counts()
    front_events = _data(client.get("/api/events?camera_id=1"))["items"]
    back_events = _data(client.get("/api/detections?camera_id=2"))["items"]
    assert {(e["camera_id"], e["type"]) for e in front_events} == {(1, "package")}
    assert {(e["camera_id"], e["type"]) for e in back_events} == {(2, "person")}
    everything = _data(client.get("/api/events"))
    assert everything["total"] == len(front_events) + len(back_events)
    assert _data(client.get("/api/events?camera_id=3"))["total"] == 0
    stats = _data(client.get("/api/analytics/statistics?period=day&camera_id=2"))
    assert stats["total"] == len(back_events)

    # The viewer and its stream for either camera.
    for camera, width in ((1, 320), (2, 288)):
        page = client.get(f"/api/stream/viewer?camera={camera}")
        assert page.status_code == 200 and "camerapick" in page.text
        snap = client.get(f"/api/stream/snapshot?camera={camera}")
        assert snap.status_code == 200, snap.text
        image = cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[1] == width
        stream = _data(client.get(f"/api/stream/status?camera={camera}"))
        assert stream["camera_id"] == camera and stream["camera_status"] == "connected"
    assert client.get("/api/stream/snapshot").content[:2] == b"\xff\xd8"  # the seed's endpoint: camera 1

    status = _data(client.get("/api/detection?camera=2"))
    assert status["camera_id"] == 2 and status["status"] == "running" and status["model_loaded"]
    assert [c["camera_id"] for c in status["cameras"]] == [1, 2]
    assert status["batching"]["cameras"]["2"]["inferences"] > 0
    assert _data(client.get("/api/detection"))["camera_id"] == 1  # the seed's endpoint: camera 1

    # Control per camera, and for all.
    _data(client.post("/api/detection/stop?camera=2"))
    assert _data(client.get("/api/detection?camera=2"))["status"] == "stopped"
    assert _data(client.get("/api/detection"))["status"] == "running"
    _data(client.post("/api/detection/stop"))
    assert {c["status"] for c in _data(client.get("/api/detection"))["cameras"]} == {"stopped"}
    _data(client.post("/api/detection/start"))
    assert {c["status"] for c in _data(client.get("/api/detection"))["cameras"]} == {"running"}

    # Disabled: its pipeline stops and a start is refused; the history stays.
    _data(client.put("/api/cameras/2", json={"enabled": False}))
    assert wait_until(lambda: _data(client.get("/api/detection?camera=2"))["status"] == "stopped", 5)
    _error(client.post("/api/detection/start?camera=2"), 409, "CAMERA_DISABLED")
    _error(client.delete("/api/cameras/2"), 409, "CAMERA_HAS_EVENTS")
    assert _data(client.get("/api/events?camera_id=2"))["total"] >= 1


def test_camera_api_validation_changes_nothing(two_cameras) -> None:
    client, back = two_cameras
    _error(client.post("/api/cameras", json={"name": "default", "source": "x.mp4"}), 409, "CAMERA_NAME_TAKEN")
    for bad in (
        {"name": "a"},  # no source
        {"name": "", "source": "x.mp4"},
        {"name": "a", "source": "x.mp4", "overrides": {"fps": 500}},
        {"name": "a", "source": "x.mp4", "overrides": {"zoom": 2}},
        {"name": "a", "source": "x.mp4", "colour": "red"},
    ):
        response = client.post("/api/cameras", json=bad)
        assert response.status_code == 400, (bad, response.text)
    _error(client.post("/api/cameras", json={"name": "a", "source": "   "}), 400, "INVALID_CAMERA")
    _error(client.put("/api/cameras/1", json={"source": "x.mp4"}), 400, "DEFAULT_CAMERA_SOURCE")
    _error(client.delete("/api/cameras/1"), 409, "DEFAULT_CAMERA")
    _error(client.get("/api/cameras/9"), 404, "CAMERA_NOT_FOUND")
    _error(client.put("/api/cameras/9", json={"enabled": False}), 404, "CAMERA_NOT_FOUND")
    _error(client.get("/api/detection?camera=9"), 404, "CAMERA_NOT_FOUND")
    _error(client.get("/api/stream/viewer?camera=9"), 404, "CAMERA_NOT_FOUND")
    assert client.get("/api/detection?camera=0").status_code == 400
    assert [c["id"] for c in _data(client.get("/api/cameras"))] == [1]

    # Writes are for admins.
    from tests.conftest import api_token

    viewer = {"Authorization": f"Bearer {api_token(client.app, 'viewer')}"}
    assert client.get("/api/cameras", headers=viewer).status_code == 200
    assert client.post("/api/cameras", json={"name": "b", "source": str(back)}, headers=viewer).status_code == 403

    # A camera without events can be renamed, switched off and deleted.
    made = _data(client.post("/api/cameras", json={"name": "b", "source": str(back), "enabled": False}), 201)
    assert made["status"] == "disabled"
    renamed = _data(client.put(f"/api/cameras/{made['id']}", json={"name": "garage", "overrides": {"fps": 10}}))
    assert renamed["name"] == "garage" and renamed["overrides"]["fps"] == 10
    _error(client.put(f"/api/cameras/{made['id']}", json={"name": "default"}), 409, "CAMERA_NAME_TAKEN")
    assert _data(client.delete(f"/api/cameras/{made['id']}")) == {"deleted": made["id"]}
    _error(client.get(f"/api/cameras/{made['id']}"), 404, "CAMERA_NOT_FOUND")


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium missing")
def test_viewer_page_shows_either_camera_in_chromium(tmp_path: Path, migrated_database_url: str) -> None:
    """The viewer page of camera 2 streams camera 2's frames (288 wide); its picker switches to
    camera 1 (320 wide, the demo video)."""
    from playwright.sync_api import sync_playwright

    from detection_service.config import Settings
    from tests.conftest import free_port
    from tests.test_viewer import CHROMIUM, CHROMIUM_FLAGS, LiveServer

    front = _scene_video(tmp_path / "front.avi", (0, 140, 255), (320, 240))
    back = _scene_video(tmp_path / "back.avi", (40, 220, 40), (288, 224))
    settings = Settings.from_env(
        environ={"AIDOOR_DEMO_VIDEO": str(front)},
        data_dir=tmp_path / "data",
        database_url=migrated_database_url,
        dagster_port=free_port(),
    )
    with LiveServer(settings) as live:
        live.app.state.detector_holder.swap(ColourDetector())
        made = httpx.post(
            live.url + "/api/cameras", json={"name": "back door", "source": str(back)}, headers=live.headers
        )
        assert made.status_code == 201, made.text
        assert wait_until(lambda: live.get("/api/detection?camera=2")["fps"] > 0, 10)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 700}, extra_http_headers=live.headers)
                page.goto(live.url + "/api/stream/viewer?camera=2")
                page.wait_for_function("document.getElementById('stream').naturalWidth === 288", timeout=20_000)
                page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=10_000)
                page.wait_for_function("!document.getElementById('camerapick').hidden", timeout=10_000)
                assert page.eval_on_selector("#camerapick", "e => [e.value, e.options.length]") == ["2", 2]
                page.select_option("#camerapick", "1")
                page.wait_for_url("**/api/stream/viewer?camera=1", timeout=10_000)
                page.wait_for_function("document.getElementById('stream').naturalWidth === 320", timeout=20_000)
            finally:
                browser.close()
