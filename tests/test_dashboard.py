"""The dashboard at ``/`` (issue #13, docs/dashboard.md) in headless Chromium against the real
service: one uvicorn server and one browser for the module; no API is mocked. Screenshots of every
section at 1280 and 390 px go to ``tests/artifacts/dashboard/`` (git-ignored)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import httpx
import msgspec
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.bus import EventCreated
from detection_service.config import Settings
from schemas.db import Dataset, DatasetVersion, DetectionEvent, Model, utcnow
from tests.conftest import drop_everything, free_port
from tests.pipeline.conftest import ScriptedDetector, det, write_video
from tests.test_data_yaml import VALID, put_version
from tests.test_events_api import add_event
from tests.test_viewer import CHROMIUM, CHROMIUM_FLAGS, LiveServer

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium missing (apt-get install chromium)")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
SECTIONS = ("live", "events", "review", "models", "datasets", "settings", "system", "analytics")
NOW = utcnow().replace(microsecond=0)
# A capture of the open event detail has its box drawn (the SVG rect is shown once placed).
BOX_DRAWN = "[...document.querySelectorAll('[data-testid=event-detail] .capture rect')].some(r => !r.style.display)"


def _random_model(folder: Path) -> Path:
    """YOLO11n with our classes and random weights biased to 'person' (as in test_detection_api)."""
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
    path = folder / "random.pt"
    model.save(str(path))
    return path


LOGIN_PASSWORD = "door-admin-password"


class Service:
    """The running service and what the module planted in it."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.url = live.url
        self.state = live.app.state
        self.older_model = ""
        self.newer_model = ""
        self.unclassified: list[int] = []
        self.persons: list[int] = []

    def live_put(self, path: str, body: dict) -> dict:
        """The whole envelope of a PUT, whatever its status."""
        return httpx.put(self.url + path, json=body, headers=self.live.headers, timeout=10).json()

    def data(self, method: str, path: str, **kwargs) -> object:
        response = httpx.request(method, self.url + path, timeout=60, headers=self.live.headers, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()["data"]


def _plant(service: Service, weights: Path) -> None:
    from detection_service.datasets.evaluation_set import EVALUATION_SET_ID
    from detection_service.ml import registry

    state = service.state
    for i in range(14):
        kind = ("person", "package", "unclassified", "mail")[i % 4]
        event_id = add_event(state, kind, NOW - timedelta(hours=5 * i + 1), images=2)
        if kind == "unclassified":
            service.unclassified.append(event_id)
        elif kind == "person":
            service.persons.append(event_id)
    # Two registered models, the newer one current; the older one's stored gate verdict against it
    # on the latest fixed evaluation set (what the Dagster evaluation leaves), so a deploy of the
    # older model is judged without evaluating here.
    assert service.data("PUT", "/api/detection/config", json={"backend": "torch", "imgsz": 64})
    rows = [
        registry.register_model(
            state.session_factory,
            state.object_store,
            weights,
            model_name=name,
            metrics={"classes": ["person", "package", "delivery_food", "mail"], "mAP50": 0.5},
            inference_ms=None,
            created_by="test",
        )
        for name in ("older", "newer")
    ]
    service.older_model, service.newer_model = rows[0].model_id, rows[1].model_id
    with state.session_factory.begin() as session:
        dataset = Dataset(
            dataset_id=EVALUATION_SET_ID,
            name="evaluation set",
            version="v1",
            storage_path=f"datasets/{EVALUATION_SET_ID}/",
            yaml_path=f"datasets/{EVALUATION_SET_ID}/v1/data.yaml",
            total_images=10,
            class_distribution={"person": 6, "package": 4},
        )
        session.add(dataset)
        session.flush()
        session.add(DatasetVersion(dataset_id=dataset.id, version="v1", image_count=10))
        for pk, quality in ((rows[0].id, 0.62), (rows[1].id, 0.55)):
            model = session.get(Model, pk)
            model.accuracy = quality
            model.metrics = {**(model.metrics or {}), "map50_95": quality - 0.2, "precision": 0.7, "recall": 0.6}
        older = session.get(Model, rows[0].id)
        older.metrics = {
            **(older.metrics or {}),
            "gate": {
                "passed": True,
                "reason": "better on every class",
                "champion_id": service.newer_model,
                "split": f"{EVALUATION_SET_ID}@v1",
            },
        }
    # A dataset with two data.yaml versions (the second without a test split), through the API.
    with state.session_factory.begin() as session:
        session.add(
            Dataset(
                dataset_id="door",
                name="door",
                version="v1",
                storage_path="datasets/door",
                yaml_path="datasets/door/v1/data.yaml",
                class_distribution={"person": 3, "package": 2, "mail": 1},
            )
        )
    with state.session_factory.begin() as session:
        door = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == "door"))
        session.add(DatasetVersion(dataset_id=door.id, version="v1", image_count=3))
    put_version(state.object_store, "door", "v1")
    state.object_store.put_bytes("datasets/door/v1/data.yaml", VALID.encode())  # what an import leaves
    for content in (VALID, VALID.replace("test: test/images\n", "")):
        service.data("POST", "/api/datasets/door/yaml", json={"yaml_content": content, "activate": True})
    deployed = service.data("POST", f"/api/models/{service.newer_model}/deploy")
    assert deployed["model"]["is_current"]


@pytest.fixture(scope="module")
def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from detection_service.database import upgrade
    from detection_service.ml.ultralytics_env import configure_offline

    drop_everything(database_url)
    upgrade(database_url)
    root = tmp_path_factory.mktemp("dashboard")
    configure_offline(root / "ml")
    weights = _random_model(root)
    port = free_port()
    settings = Settings.from_env(
        environ={},
        data_dir=root / "data",
        database_url=database_url,
        dagster_port=free_port(),
    )
    settings = msgspec.structs.replace(settings, port=port, public_url=f"http://127.0.0.1:{port}")
    with LiveServer(settings, port=port) as live:
        planted = Service(live)
        _plant(planted, weights)
        yield planted


class Browser:
    def __init__(self, service: Service, browser) -> None:
        self.service = service
        self.requests: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page = self.context.new_page()
        self.errors: list[str] = []  # script errors of the page: each one fails the module
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.set_default_timeout(15_000)
        # Signed out, the dashboard sends the browser to the login page; signing in there brings it back.
        service.state.auth_service.create_user("door-admin", LOGIN_PASSWORD, "admin")
        self.page.goto(service.url + "/#/live", wait_until="domcontentloaded")
        self.page.wait_for_url("**/login?next=*")
        self.page.fill("[data-testid=login-username]", "door-admin")
        self.page.fill("[data-testid=login-password]", LOGIN_PASSWORD)
        self.page.click("[data-testid=login-submit]")
        # Not "load": the live view's MJPEG picture never finishes loading.
        self.page.wait_for_url(service.url + "/#/live", wait_until="domcontentloaded")
        self.page.wait_for_function("document.querySelector('[data-section=events]') !== null")
        self.page.wait_for_selector("[data-testid=logout]", state="visible")

    def show(self, section: str) -> None:
        assert not self.errors, self.errors
        # The tab: it also reloads the section when it is open already (Events back to page 1).
        self.page.click(f".tabs a[data-section={section}]")
        self.page.wait_for_selector(f"[data-page={section}]", state="visible")


@pytest.fixture(scope="module")
def browser(service: Service) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            handle = Browser(service, chromium)
            yield handle
            # Every request the pages made, over the whole module, stayed on this service.
            outside = [u for u in handle.requests if not u.startswith(service.url + "/") and not u.startswith("data:")]
            assert not outside, f"requests that leave 127.0.0.1: {outside[:5]}"
            assert not handle.errors, handle.errors
            handle.context.close()
        finally:
            chromium.close()


# --------------------------------------------------------------------------- the page and the stream


def test_page_and_assets_are_served_by_the_service(service: Service):
    page = httpx.get(service.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/web/app.js", "/web/app.css", "/web/i18n.js", "/web/vendor/alpine.min.js"):
        assert asset in page.text
        response = httpx.get(service.url + asset, timeout=10)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert "https://" not in page.text.replace("https://github.com", "")  # nothing from elsewhere
    missing = httpx.get(service.url + "/web/nope.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    paths = httpx.get(service.url + "/schema/openapi.json", headers=service.live.headers, timeout=10).json()["paths"]
    assert "/api/live/events" in paths and "/" not in paths


def test_live_stream_sends_state_and_bus_messages(service: Service):
    bad = httpx.get(service.url + "/api/live/events?max_s=0", headers=service.live.headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_MAX_S"
    frames: list[tuple[str, dict]] = []

    def listen() -> None:
        with httpx.stream(
            "GET", service.url + "/api/live/events?max_s=6", headers=service.live.headers, timeout=20
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and name:
                    frames.append((name, json.loads(line.split(":", 1)[1])))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    time.sleep(1.0)
    event_id = _record_event(service)
    thread.join(15)
    names = [name for name, _ in frames]
    assert names[0] == "detection" and {"status", "camera_status", "model_loaded"} <= set(frames[0][1])
    assert frames[0][1]["model_id"] == service.state.model_service.loaded_model_id
    components = next(data for name, data in frames if name == "components")
    assert components["database"]["status"] == "running" and components["dagster"]["status"] != "running"
    created = [data for name, data in frames if name == "event_created"]
    assert [c["event_id"] for c in created] == [event_id] and "snapshot_jpeg" not in created[0]
    # The stream ended (max_s): its bus subscription is gone.
    assert not [name for name in service.state.bus.stats()["subscribers"] if name.startswith("sse-")]


def _record_event(service: Service) -> int:
    """A new event the way a person's upload makes one: manual detection with record=true."""
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    data = service.data("POST", "/api/detections?record=true", files={"image": ("door.jpg", jpeg, "image/jpeg")})
    assert data["event_id"] is not None, data
    return data["event_id"]


# --------------------------------------------------------------------------- sections at work


def test_relabel_from_the_review_queue(service: Service, browser: Browser):
    page = browser.page
    before = service.data("GET", "/api/models/retrain/status")["new_verified_labels"]
    browser.show("review")
    first, second = service.unclassified[0], service.unclassified[1]
    page.wait_for_selector(f"[data-page=review] [data-event-id='{first}']")
    progress = "document.querySelector('[data-testid=retrain-progress]').textContent === "
    page.wait_for_function(progress + repr(f"{before} / 50"))
    page.click(f"[data-page=review] [data-event-id='{first}'] [data-relabel=package]")
    page.wait_for_selector(f"[data-page=review] [data-event-id='{first}']", state="detached")
    assert service.data("GET", f"/api/events/{first}")["type"] == "package"
    # The keyboard: focus the next item (it is first in the queue now) and press 4 (mail).
    page.wait_for_selector(f"[data-page=review] [data-event-id='{second}'].focused")
    page.keyboard.press("4")
    page.wait_for_selector(f"[data-page=review] [data-event-id='{second}']", state="detached")
    detail = service.data("GET", f"/api/events/{second}")
    assert detail["type"] == "mail" and detail["user_verified"] and detail["original_type"] == "unclassified"
    # The progress is the API's (the retrain sensor's) count, and follows the relabels.
    assert service.data("GET", "/api/models/retrain/status")["new_verified_labels"] == before + 2
    page.wait_for_function(progress + repr(f"{before + 2} / 50"))


def test_invalid_setting_shows_the_api_message_beside_the_field(service: Service, browser: Browser):
    page = browser.page
    before = service.data("GET", "/api/settings/camera")
    browser.show("settings")
    form = "[data-page=settings] form[data-category=camera]"
    page.fill(f"{form} [data-field=fps] input", "5")
    page.fill(f"{form} [data-field=brightness] input", "10")
    page.click(f"{form} button[type=submit]")
    error = page.wait_for_selector(f"{form} [data-field=fps] .field-error", state="visible")
    api_error = service.live_put("/api/settings/camera", {"fps": 5, "brightness": 10})
    assert error.text_content() == api_error["error"]["message"] and "fps" in error.text_content()
    assert service.data("GET", "/api/settings/camera") == before  # nothing changed, brightness neither
    # A valid value is stored and the message goes.
    page.fill(f"{form} [data-field=fps] input", "20")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"{form} [data-field=fps] .field-error", state="hidden")
    assert service.data("GET", "/api/settings/camera")["fps"] == 20


def test_deploy_of_an_older_model_marks_it_current(service: Service, browser: Browser):
    page = browser.page
    browser.show("models")
    row = f"[data-page=models] tr[data-model-id='{service.older_model}']"
    page.click(f"{row} [data-deploy]")
    page.wait_for_selector(f"{row} [data-testid=current-badge]", state="visible")
    assert service.data("GET", "/api/models/current")["model_id"] == service.older_model
    newer = f"[data-page=models] tr[data-model-id='{service.newer_model}']"
    assert not page.is_visible(f"{newer} [data-testid=current-badge]")
    assert service.state.model_service.loaded_model_id == service.older_model  # the detector switched


def test_training_from_the_page_and_its_cancel(service: Service, browser: Browser):
    page = browser.page
    browser.show("models")
    page.select_option("[data-page=models] select[name=dataset_id]", "door")
    page.fill("[data-page=models] input[name=epochs]", "3")
    page.click("[data-page=models] [data-testid=start-training]")
    page.wait_for_selector("[data-testid=training-status] >> text=pending")
    status = service.data("GET", "/api/models/train/status")
    assert status["status"] == "pending" and status["epochs"] == 3 and status["dataset_id"] == "door"
    page.click("[data-page=models] [data-testid=cancel-training]")
    page.wait_for_selector("[data-testid=training-status] >> text=cancelled")
    assert service.data("GET", "/api/models/train/status")["status"] == "cancelled"


def test_new_event_appears_without_a_reload(service: Service, browser: Browser):
    page = browser.page
    browser.show("events")
    page.wait_for_selector("[data-page=events] [data-testid=event-list] li")
    page.wait_for_function("document.querySelector('[data-testid=stream-state]').dataset.online === 'true'")
    page.evaluate("window.__sameDocument = true")
    event_id = _record_event(service)
    page.wait_for_selector(f"[data-page=events] li[data-event-id='{event_id}']", timeout=15_000)
    assert page.evaluate("window.__sameDocument === true")  # no reload happened
    # An event's detail: its captures with the box drawn on them, and the track duration.
    page.click(f"[data-page=events] li[data-event-id='{service.persons[0]}']")
    page.wait_for_selector("[data-testid=event-detail] .capture img")
    page.wait_for_function(BOX_DRAWN)
    assert page.locator("[data-testid=event-detail] .capture").count() == 2
    assert page.text_content("[data-testid=duration]").split() == ["5", "s"]
    page.click("[data-testid=event-detail] button.ghost >> text=Close")


def test_events_filters_and_paging(service: Service, browser: Browser):
    page = browser.page
    browser.show("events")
    page.select_option("[data-page=events] select[name=type]", "package")
    page.click("[data-page=events] form button[type=submit]")
    page.wait_for_function(
        "[...document.querySelectorAll('[data-page=events] .type-chip')].every(c => c.dataset.type === 'package')"
    )
    expected = service.data("GET", "/api/events?type=package&limit=12")["total"]
    assert page.locator("[data-page=events] li.event-row").count() == min(expected, 12)
    page.click("[data-page=events] form button.ghost")  # reset
    total = service.data("GET", "/api/events?limit=12")["total"]
    assert total > 12
    page.wait_for_function("document.querySelectorAll('[data-page=events] li.event-row').length === 12")
    page.click("[data-page=events] .pager button >> nth=1")
    page.wait_for_function(
        f"document.querySelectorAll('[data-page=events] li.event-row').length === {min(12, total - 12)}"
    )


def test_events_camera_column_and_filter(service: Service, browser: Browser):
    """With a second camera, each event row names its camera and the camera filter shows only
    that camera's events (GET /api/events?camera_id=N); one camera: neither is shown."""
    page = browser.page
    browser.show("events")
    page.wait_for_selector("[data-page=events] li.event-row")
    assert not page.is_visible("[data-page=events] select[name=camera]")
    camera = service.data(
        "POST", "/api/cameras", json={"name": "back door", "source": "rtsp://127.0.0.1:9/x", "enabled": False}
    )
    at = utcnow()
    ids = [add_event(service.state, "mail", at - timedelta(minutes=i), images=1) for i in range(2)]
    with service.state.session_factory.begin() as session:
        session.execute(sa.update(DetectionEvent).where(DetectionEvent.id.in_(ids)).values(camera_id=camera["id"]))
    browser.show("events")
    page.wait_for_selector("[data-page=events] select[name=camera]", state="visible")
    chip = page.locator(f"[data-page=events] li[data-event-id='{ids[0]}'] .camera-chip")
    assert chip.text_content() == "back door"
    page.select_option("[data-page=events] select[name=camera]", str(camera["id"]))
    page.click("[data-page=events] form button[type=submit]")
    page.wait_for_function(
        "document.querySelectorAll('[data-page=events] li.event-row').length === 2 && "
        "[...document.querySelectorAll('[data-page=events] .camera-chip')]"
        f".every(c => c.dataset.cameraId === '{camera['id']}')"
    )
    assert service.data("GET", f"/api/events?camera_id={camera['id']}")["total"] == 2
    page.click("[data-page=events] form button.ghost")  # reset: every camera again
    page.wait_for_function("document.querySelectorAll('[data-page=events] li.event-row').length === 12")


def test_video_event_appears_live_and_the_process_control(service: Service, browser: Browser, tmp_path: Path):
    page = browser.page
    browser.show("events")
    page.wait_for_function("document.querySelector('[data-testid=stream-state]').dataset.online === 'true'")
    page.evaluate("window.__sameDocument = true")
    video = write_video(tmp_path / "door.avi", frames=150, fps=15, size=(320, 240))
    # One person in every frame (the random model would box noise everywhere): one track, one event.
    service.state.detector_holder.swap(
        ScriptedDetector(lambda i, t: [det(60, 40, 180, 200, "person", 0.9)], model_id="scripted")
    )
    sub = service.state.bus.subscribe("test-dashboard", maxsize=50)
    try:
        service.data("PUT", "/api/settings/camera", json={"source": str(video)})
        created = None
        deadline = time.monotonic() + 20
        while created is None and time.monotonic() < deadline:
            message = sub.get(timeout=0.5)
            if isinstance(message, EventCreated):
                created = message
    finally:
        sub.close()
    assert created is not None, "the video raised no event"
    # The video's event shows up on the open Events page: the live stream, no reload.
    page.wait_for_selector(f"[data-page=events] li[data-event-id='{created.event_id}']")
    assert page.evaluate("window.__sameDocument === true")
    browser.show("live")
    # The state arrives over the stream; the picture over MJPEG.
    page.wait_for_selector("[data-testid=detection-status] >> text=running")
    page.wait_for_function("document.getElementById('live-stream').naturalWidth === 320")
    page.wait_for_selector("[data-testid=live-components] >> text=camera: running")
    page.click("[data-page=live] button >> nth=1")  # stop
    page.wait_for_selector("[data-testid=detection-status] >> text=stopped")
    assert service.data("GET", "/api/detection")["status"] == "stopped"
    page.click("[data-page=live] button >> nth=0")  # start
    page.wait_for_selector("[data-testid=detection-status] >> text=running")
    assert service.data("GET", "/api/detection")["status"] == "running"
    # Left running: the screenshots show the live picture.


def test_data_yaml_versions_and_their_diff(service: Service, browser: Browser):
    page = browser.page
    browser.show("datasets")
    page.click("[data-page=datasets] a[data-dataset=door]")
    page.wait_for_selector("[data-page=datasets] [data-testid=yaml-versions] li >> nth=1")
    page.click("[data-page=datasets] [data-testid=compare]")
    page.wait_for_selector("[data-page=datasets] .diff .del")
    assert page.text_content("[data-page=datasets] .diff .del").strip() == "- test: test/images"
    assert page.locator("[data-page=datasets] .bar-row").count() == 3  # class distribution


def test_language_switch(service: Service, browser: Browser):
    page = browser.page
    assert page.text_content("[data-section=events]") == "Events"
    page.select_option("select[aria-label=language]", "ko")
    assert page.text_content("[data-section=events]") == "이벤트"
    assert page.evaluate("document.documentElement.lang") == "ko"
    page.select_option("select[aria-label=language]", "en")


def test_analytics_heatmap_weekdays_and_frequent_visitors(service: Service, browser: Browser):
    """The heatmap's rows carry their weekday (Monday first, as the API counts), and the frequent
    visitors panel lists what GET /api/analytics/frequent-visitors answers, each with its crop."""
    page = browser.page
    api = service.data("GET", "/api/analytics/frequent-visitors", params={"days": 30, "limit": 12})
    assert api["status"] == "ok" and api["visitors"], api  # the planted person events: one look, several visits
    browser.show("analytics")
    page.wait_for_selector("[data-testid=heatmap] .heat-row", state="visible")
    labels = page.eval_on_selector_all("[data-testid=heatmap] .heat-label", "els => els.map(e => e.textContent)")
    assert labels == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    cells = page.eval_on_selector_all(
        "[data-testid=heatmap] .heat-row", "rows => rows.map(r => r.querySelectorAll('.heat-cell').length)"
    )
    assert cells == [24] * 7
    rows = "[data-testid=visitors] li.visitor"
    page.wait_for_selector(rows)
    shown = page.eval_on_selector_all(rows, "els => els.map(e => Number(e.dataset.visitorId))")
    assert shown == [v["visitor_id"] for v in api["visitors"]]
    first = page.text_content(f"{rows}[data-visitor-id='1']")
    assert f"#1 · {api['visitors'][0]['visits']} visits" in first and "Usual hours" in first
    assert api["message"] in page.text_content("[data-testid=visitors-message]")
    # The thumbnail is the visitor's box of the capture: loaded through its signed link and placed.
    page.wait_for_function(
        "(() => { const img = document.querySelector('[data-testid=visitors] li.visitor img');"
        " return img && img.naturalWidth > 0 && img.style.left !== ''; })()"
    )
    page.select_option("select[aria-label=language]", "ko")
    try:
        assert page.eval_on_selector_all("[data-testid=heatmap] .heat-label", "els => els.map(e => e.textContent)") == [
            *"월화수목금토일"
        ]
    finally:
        page.select_option("select[aria-label=language]", "en")


# --------------------------------------------------------------------------- screenshots and layout

# Text boxes wider than their own box (clipped or spilling), and tab links that overlap.
_LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth + 1) problems.push(`page ${doc.scrollWidth} > ${doc.clientWidth}`);
  const visible = (el) => el.offsetParent !== null && el.getClientRects().length > 0;
  for (const el of document.querySelectorAll('h2, h3, p, dt, dd, td, th, button, label, a, li, .type-chip, .badge')) {
    if (!visible(el) || el.closest('.table-wrap, .diff, .chart-labels')) continue;
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      problems.push(`${el.tagName} "${el.textContent.trim().slice(0, 40)}" ${el.scrollWidth} > ${el.clientWidth}`);
  }
  const tabs = [...document.querySelectorAll('.tabs a')].map((a) => a.getBoundingClientRect());
  for (let i = 0; i < tabs.length; i++) for (let j = i + 1; j < tabs.length; j++) {
    const a = tabs[i], b = tabs[j];
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      problems.push(`tabs ${i} and ${j} overlap`);
  }
  return problems;
}"""


@pytest.mark.parametrize(("width", "lang"), [(1280, "en"), (390, "ko")])
def test_screenshots_of_every_section(service: Service, browser: Browser, width: int, lang: str):
    page = browser.page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width, "height": 900})
    page.select_option("select[aria-label=language]", lang)
    problems: dict[str, list[str]] = {}
    try:
        for section in SECTIONS:
            browser.show(section)
            page.wait_for_timeout(700)  # its API answers, images
            found = page.evaluate(_LAYOUT_PROBLEMS)
            if found:
                problems[section] = found
            page.screenshot(path=str(ARTIFACTS / f"{section}-{width}.png"), full_page=True)
            assert not page.is_visible("[data-testid=notice].error"), page.text_content("[data-testid=notice]")
        # An event's detail over the Events page: captures with their boxes.
        browser.show("events")
        page.click(f"[data-page=events] li[data-event-id='{service.persons[0]}']")
        page.wait_for_function(BOX_DRAWN)
        found = page.evaluate(_LAYOUT_PROBLEMS)
        if found:
            problems["event-detail"] = found
        page.screenshot(path=str(ARTIFACTS / f"event-detail-{width}.png"))
        page.keyboard.press("Escape")
        page.wait_for_selector("[data-testid=event-detail]", state="detached")
    finally:
        page.select_option("select[aria-label=language]", "en")
        page.set_viewport_size({"width": 1280, "height": 900})
    assert not problems, problems
    assert all((ARTIFACTS / f"{s}-{width}.png").stat().st_size > 5_000 for s in SECTIONS)


def test_msgspec_frames_have_no_bytes():
    """The stream's frames are JSON: a bus message's snapshot bytes never go out."""
    from detection_service.api.live import bus_frame
    from detection_service.bus import EventCreated

    message = EventCreated(
        event_id=1,
        object_type="person",
        confidence=0.9,
        bbox={"x1": 1, "y1": 2, "x2": 3, "y2": 4},
        tracking_id=5,
        model_version=None,
        detected_at=NOW,
        image_key="events/x/1.jpg",
        snapshot_jpeg=b"\xff\xd8",
    )
    frame = bus_frame(message)
    assert frame.event == "event_created"
    data = msgspec.json.decode(frame.data)
    assert data["event_id"] == 1 and "snapshot_jpeg" not in data and "type" not in data
