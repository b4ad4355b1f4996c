"""The live side over a real HTTP server (uvicorn in a thread): MJPEG stream, the viewer page in
headless Chromium, and the `aidoor camera` WebSocket client producing the same events as the
file source."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from detection_service.app import create_app
from detection_service.bus import EventCreated, PackageRemoved
from detection_service.pipeline.detector import Detection, Detector
from tests import live_layouts
from tests.conftest import api_token, free_port
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PERSON_RGB = (80, 200, 80)  # the viewer's box colour for "person" (runner._COLOURS, BGR there)


class LiveServer:
    def __init__(self, settings, port: int | None = None) -> None:
        import uvicorn

        self.app = create_app(settings)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        assert wait_until(lambda: self.server.started, 30), "uvicorn did not start"
        # An admin API token for the test's own calls (docs/security.md).
        self.headers = {"Authorization": f"Bearer {api_token(self.app)}"}
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def get(self, path: str) -> dict:
        response = httpx.get(self.url + path, headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def put(self, path: str, body: dict) -> dict:
        response = httpx.put(self.url + path, json=body, headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["data"]


class SplitLiveServer:
    """LiveServer's calls on the split layout (tests/live_layouts.py): the pipeline in the detector
    worker, HTTP and WebSockets served by two API workers."""

    def __init__(self, client: live_layouts.SplitClient) -> None:
        self.client = client
        self.app = client.app
        self.url = client.url
        self.headers = client.headers

    def get(self, path: str) -> dict:
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def put(self, path: str, body: dict) -> dict:
        response = self.client.put(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()["data"]


@pytest.fixture(params=live_layouts.LAYOUTS)
def live(request: pytest.FixtureRequest, settings, tmp_path: Path) -> Iterator[LiveServer | SplitLiveServer]:
    """Each test in both layouts: in process, and aidoor detect + 2 API workers."""
    if request.param == "single":
        with LiveServer(settings) as server:
            yield server
        return
    with live_layouts.split_layout(settings, tmp_path / "split") as split:
        yield SplitLiveServer(split)


def _running_with_boxes(live: LiveServer, video: Path) -> None:
    live.app.state.detector_holder.swap(
        ScriptedDetector(lambda i, t: [det(60, 40, 180, 200, "person", 0.9)], model_id="scripted")
    )
    live.put("/api/settings/camera", {"source": str(video)})
    assert wait_until(lambda: live.get("/api/detection")["fps"] > 0, 10)


def _mjpeg_parts(url: str, count: int, headers: dict[str, str]) -> list[bytes]:
    parts: list[bytes] = []
    with httpx.stream("GET", url, headers=headers, timeout=15) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        buffer = b""
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                start = buffer.find(b"\xff\xd8")
                end = buffer.find(b"\xff\xd9", start + 2)
                if start < 0 or end < 0:
                    break
                parts.append(buffer[start : end + 2])
                buffer = buffer[end + 2 :]
    assert len(parts) == count
    return parts


def test_mjpeg_stream_has_annotated_frames(live: LiveServer, tmp_path: Path):
    _running_with_boxes(live, write_video(tmp_path / "door.avi", frames=60, fps=15, size=(320, 240)))
    parts = _mjpeg_parts(live.url + "/api/stream/mjpeg?max_frames=5", 5, live.headers)
    image = cv2.imdecode(np.frombuffer(parts[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    # The person box is drawn in its colour (the synthetic video itself is grey).
    green = np.all(np.abs(image.astype(int) - PERSON_RGB[::-1]) < 40, axis=2)
    assert green.sum() > 200
    assert live.get("/api/stream/status")["frames_sent"] >= 5
    assert wait_until(lambda: live.get("/api/stream/status")["viewers"] == 0, 5)  # unsubscribed on close


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium missing (apt-get install -y chromium)")
def test_viewer_page_in_headless_chromium(live: LiveServer, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    _running_with_boxes(live, write_video(tmp_path / "door.avi", frames=60, fps=15, size=(320, 240)))
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700}, extra_http_headers=live.headers)
            page.on("request", lambda request: requests.append(request.url))
            page.goto(live.url + "/api/stream/viewer")
            page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=20_000)
            page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=10_000)
            time.sleep(1.5)  # a few more frames
            boxed = page.evaluate(
                """([r, g, b]) => {
                    const img = document.getElementById('stream');
                    const canvas = document.createElement('canvas');
                    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                    const ctx = canvas.getContext('2d');
                    ctx.drawImage(img, 0, 0);
                    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
                    let n = 0;
                    for (let i = 0; i < px.length; i += 4)
                        if (Math.abs(px[i] - r) < 40 && Math.abs(px[i + 1] - g) < 40
                            && Math.abs(px[i + 2] - b) < 40) n++;
                    return n;
                }""",
                list(PERSON_RGB),
            )
            size = page.evaluate(
                "[document.getElementById('stream').naturalWidth, document.getElementById('stream').naturalHeight]"
            )
            camera = page.text_content("#camera")
            screenshot = tmp_path / "viewer.png"
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert size == [320, 240]
    assert boxed > 200, "no box colour in the frame the browser shows"
    assert camera == "camera connected"
    assert screenshot.stat().st_size > 10_000
    assert live.get("/api/stream/status")["frames_sent"] >= 5
    assert all(url.startswith(live.url) for url in requests), "the page loads something from elsewhere"


# --------------------------------------------------------------------------- WebSocket camera client


class OrangeBoxDetector(Detector):
    """Test double: a 'package' wherever the frame is orange (the synthetic parcel)."""

    def __init__(self) -> None:
        super().__init__()
        self.backend, self.model_id, self.imgsz = "colour", "orange", 64
        self.names = {0: "person", 1: "package", 2: "delivery_food", 3: "mail"}

    def _detect(self, frame: np.ndarray, conf: float) -> list[Detection]:
        mask = cv2.inRange(frame, (0, 100, 200), (90, 190, 255))
        if cv2.countNonZero(mask) < 200:
            return []
        x, y, w, h = cv2.boundingRect(mask)
        return [Detection(x, y, x + w, y + h, 1, "package", 0.9)]


def parcel_video(path: Path, fps: float = 15.0) -> Path:
    """1 s empty, a parcel for 3 s, 2.5 s empty again."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    base = np.full((240, 320, 3), 110, np.uint8)
    for i in range(int(6.5 * fps)):
        frame = base.copy()
        if fps <= i < 4 * fps:
            frame[150:200, 200:260] = (0, 140, 255)
        writer.write(frame)
    writer.release()
    return path


def _one_pass(live: LiveServer, run_source) -> tuple[list[str], int]:
    """Events of one pass of the parcel video: created types, and packages removed."""
    sub = live.app.state.bus.subscribe("test-pass", maxsize=100)
    try:
        run_source()
        created, removed = [], 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not removed:
            message = sub.get(timeout=0.5)
            if isinstance(message, EventCreated):
                created.append(message.object_type)
            elif isinstance(message, PackageRemoved):
                removed += 1
        return created, removed
    finally:
        sub.close()


def test_websocket_camera_client_gives_the_same_events_as_the_file_source(live: LiveServer, tmp_path: Path):
    from detection_service import camera_client

    video = parcel_video(tmp_path / "parcel.avi")
    live.app.state.detector_holder.swap(OrangeBoxDetector())
    live.put("/api/detection/config", {"package_removed_after_s": 1.0, "stall_timeout_s": 2.0})

    file_events = _one_pass(live, lambda: live.put("/api/settings/camera", {"source": str(video)}))
    live.put("/api/settings/camera", {"source": "push"})  # the file stops before it loops again

    statuses: list[str] = []

    def push() -> None:
        code, stats = camera_client.run(
            str(video),
            live.url.replace("http", "ws") + "/api/stream/ingest",
            fps=15,
            quality=85,
            camera_name="test-cam",
            token=api_token(live.app, "camera"),
            on_status=statuses.append,
        )
        assert code == 0 and stats.frames_sent >= 90, statuses

    ws_events = _one_pass(live, push)
    assert file_events == (["package"], 1), file_events
    assert ws_events == file_events
    ingest = live.get("/api/stream/status")["ingest"]
    assert ingest["frames_received"] >= 90 and ingest["client"].startswith("test-cam")


def test_camera_client_gives_up_after_bounded_reconnects(live: LiveServer, tmp_path: Path):
    from detection_service import camera_client

    video = write_video(tmp_path / "v.avi", frames=10, fps=15)
    started = time.monotonic()
    # Nothing listens on this port.
    code, stats = camera_client.run(
        str(video), f"ws://127.0.0.1:{free_port()}/api/stream/ingest", reconnects=2, on_status=lambda _: None
    )
    assert code == 1 and stats.connections == 0 and time.monotonic() - started < 5
    # The service refuses frames while camera.source is not "push": also retried, then given up.
    messages: list[str] = []
    code, stats = camera_client.run(
        str(video),
        live.url.replace("http", "ws") + "/api/stream/ingest",
        reconnects=1,
        token=api_token(live.app, "camera"),
        on_status=messages.append,
    )
    assert code == 1 and stats.connections == 2 and any("push" in m for m in messages), messages
