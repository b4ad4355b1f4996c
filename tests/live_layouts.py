"""The live features' tests in both layouts (issue #15 item 3, docs/deployment.md):

- ``single``: the pipeline inside the API process (today's default), Litestar's TestClient;
- ``split``: a private mosquitto, the detector worker that ``aidoor detect`` runs
  (``DetectorWorker``) in this test process, and ``aidoor serve --workers 2`` as a child
  process: every request goes over HTTP to one of two API workers, which reach the pipeline
  only through the live link.

A test module opts in by importing the fixture it uses (``from tests.live_layouts import client``);
its tests then run once per layout. ``client.app.state`` offers what the tests reach into: in
the split layout, the worker's own objects (its detector holder, bus, pipeline service, model
service, store), since that is where the pipeline is. The test doubles (scripted detectors) are
put into the worker's holder, exactly as they are put into the API's in the single layout.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest

from tests.conftest import REPO_ROOT, AuthedTestClient, free_port
from tests.pipeline.conftest import wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
LAYOUTS = ["single", "split"]


class PrivateBroker:
    """A mosquitto of the test's own (anonymous, loopback, TCP_NODELAY: small requests and replies
    would otherwise wait for delayed ACKs)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.directory = directory
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nuser {getpass.getuser()}\nallow_anonymous true\n"
            "set_tcp_nodelay true\npersistence false\nlog_dest stderr\n"
        )
        self.conf = conf
        self.start()

    def start(self) -> None:
        with open(self.directory / "mosquitto.log", "ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        assert wait_until(self._accepts, 10), (self.directory / "mosquitto.log").read_text()

    def _accepts(self) -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, prefix: str) -> str:
        return f"mqtt://127.0.0.1:{self.port}/{prefix}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class WebSocketSession:
    """The few calls of Litestar's test WebSocket session the tests make, over a real socket."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def receive_json(self) -> Any:
        return json.loads(self.connection.recv(timeout=10))

    def send_text(self, text: str) -> None:
        self.connection.send(text)

    def send_bytes(self, data: bytes) -> None:
        self.connection.send(data)


class SplitClient:
    """An httpx client on the API workers, with ``app.state`` pointing at the worker's objects."""

    def __init__(self, url: str, token: str, state: SimpleNamespace, log_path: Path | None = None) -> None:
        self.url = url
        self.log_path = log_path
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=url, headers=self.headers, timeout=60)
        self.app = SimpleNamespace(state=state)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(path, **kwargs)

    @contextmanager
    def websocket_connect(self, path: str) -> Iterator[WebSocketSession]:
        from websockets.sync.client import connect

        with connect(self.url.replace("http", "ws", 1) + path, additional_headers=self.headers) as connection:
            yield WebSocketSession(connection)

    def api_log(self) -> str:
        """What the API workers logged (AIDOOR_LOG_LEVEL=WARNING)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def close(self) -> None:
        self.http.close()


@contextmanager
def split_layout(settings: Any, directory: Path, workers: int = 2) -> Iterator[SplitClient]:
    """The detector worker here, ``aidoor serve --workers N`` as a child, a private broker."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    from detection_service.detect_worker import DetectorWorker
    from detection_service.services.auth import AuthService

    broker = PrivateBroker(directory / "mosquitto")
    live = msgspec.structs.replace(settings, live_broker_url=broker.url(f"t{uuid.uuid4().hex[:8]}"))
    worker = DetectorWorker(live)
    api: subprocess.Popen[bytes] | None = None
    client: SplitClient | None = None
    log_path = directory / "api.log"
    try:
        worker.start()
        port = free_port()
        env = {
            **os.environ,
            "AIDOOR_DATA_DIR": str(settings.data_dir),
            "AIDOOR_DATABASE_URL": settings.database_url,
            "AIDOOR_PORT": str(port),
            "AIDOOR_DAGSTER_PORT": str(settings.dagster_port),
            "AIDOOR_LIVE_BROKER_URL": live.live_broker_url or "",
            "AIDOOR_LOG_LEVEL": "WARNING",
        }
        with open(log_path, "wb") as log:
            api = subprocess.Popen(
                [str(Path(sys.executable).parent / "aidoor"), "serve", "--workers", str(workers), "--no-migrate"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        auth = AuthService(worker.session_factory, timedelta(hours=1))
        token = auth.create_token("admin", "tests").token
        state = SimpleNamespace(
            detector_holder=worker.service.holder,
            bus=worker.service.bus,
            pipeline_service=worker.service,
            pipeline=worker.service.pipeline,
            model_service=worker.model_service,
            object_store=worker.store,
            session_factory=worker.session_factory,
            settings_service=worker.settings_service,
            auth_service=auth,
            worker=worker,
            api=api,
        )
        client = SplitClient(f"http://127.0.0.1:{port}", token, state, log_path)

        def every_worker_answers() -> bool:
            assert api is not None and api.poll() is None, log_path.read_text()
            try:
                # Each worker has its live link up once its lifespan ran; a few answers in a row.
                return all(client.get("/api/detection").status_code == 200 for _ in range(6))
            except httpx.HTTPError:
                return False

        assert wait_until(every_worker_answers, 60, interval=0.5), log_path.read_text()
        yield client
    finally:
        if client is not None:
            client.close()
        if api is not None:
            api.terminate()
            try:
                api.wait(20)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait(5)
        worker.close()
        broker.stop()


@pytest.fixture(params=LAYOUTS)
def client(request: pytest.FixtureRequest, settings: Any, tmp_path: Path) -> Iterator[Any]:
    """The service, authenticated as an admin, in each layout."""
    if request.param == "single":
        from detection_service.app import create_app

        with AuthedTestClient(create_app(settings), raise_server_exceptions=False) as test_client:
            yield test_client
        return
    with split_layout(settings, tmp_path / "split") as split:
        yield split
