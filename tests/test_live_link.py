"""The live link between the API and ``aidoor detect`` workers (issue #15 item 3, docs/deployment.md):
requests and their errors, the real ``aidoor detect`` process, the live events stream over two
API workers, and ``aidoor serve --workers`` refusing to share an in-process pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from detection_service import errors
from detection_service.config import parse_mqtt_url
from detection_service.live_link import DetectorUnavailable, LiveLink
from tests import live_layouts
from tests.conftest import REPO_ROOT, AuthedTestClient
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video


@pytest.fixture
def broker(tmp_path: Path):
    if not Path(live_layouts.MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = live_layouts.PrivateBroker(tmp_path / "mosquitto")
    yield broker
    broker.stop()


def test_requests_answers_errors_timeouts_and_an_absent_detector(broker) -> None:
    target = parse_mqtt_url(broker.url(f"t{uuid.uuid4().hex[:6]}"))
    api = LiveLink(target, role="api", timeout_s=0.5)
    assert api.start(wait_s=5)
    # Nobody serves yet: 503 at once, not a wait for the timeout.
    started = time.monotonic()
    with pytest.raises(DetectorUnavailable) as absent:
        api.request("status")
    assert absent.value.code == "DETECTOR_UNAVAILABLE" and time.monotonic() - started < 0.2

    def handle(op: str, args: dict) -> object:
        if op == "echo":
            return {"got": args, "bytes": b"\xff\xd8"}
        if op == "conflict":
            raise errors.Conflict("busy now", {"why": "test"}, code="BUSY")
        if op == "slow":
            time.sleep(1.5)
            return True
        raise RuntimeError("boom")

    detector = LiveLink(target, role="detector")
    detector.serve(handle)
    assert detector.start(wait_s=5)
    try:
        assert wait_until(lambda: api.detector_online, 5)
        assert api.request("echo", {"a": [1, 2]}) == {"got": {"a": [1, 2]}, "bytes": b"\xff\xd8"}
        # A domain error keeps its kind (so its HTTP status), code, message and details.
        with pytest.raises(errors.Conflict) as conflict:
            api.request("conflict")
        assert (conflict.value.code, conflict.value.message, conflict.value.details) == (
            "BUSY",
            "busy now",
            {"why": "test"},
        )
        with pytest.raises(errors.Failed, match="boom"):
            api.request("crash")
        with pytest.raises(errors.TimedOut) as slow:
            api.request("slow")
        assert slow.value.code == "DETECTOR_TIMEOUT"
        # Many at once, each with its own answer (correlation ids).
        answers: list[object] = []
        threads = [
            threading.Thread(target=lambda i=i: answers.append(api.request("echo", {"i": i})["got"]["i"]))
            for i in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(answers) == list(range(12))
        # The broker restarts (nothing retained): both sides reconnect by themselves, the detector
        # says "online" again, and requests work again.
        broker.stop()
        assert wait_until(lambda: not api.connected, 5)
        with pytest.raises(DetectorUnavailable):
            api.request("echo")
        broker.start()
        assert wait_until(lambda: api.connected and detector.connected, 30)
        assert wait_until(lambda: api.detector_online, 10)
        assert api.request("echo", {"again": True})["got"] == {"again": True}
    finally:
        detector.close()
    assert wait_until(lambda: not api.detector_online, 5)  # its goodbye: "offline"
    with pytest.raises(DetectorUnavailable):
        api.request("echo")
    api.close()


def test_aidoor_detect_process_serves_the_api_and_its_absence_is_a_503(broker, settings, tmp_path: Path) -> None:
    from detection_service.app import create_app

    live = msgspec.structs.replace(settings, live_broker_url=broker.url("door"))
    env = {
        **os.environ,
        "AIDOOR_DATA_DIR": str(settings.data_dir),
        "AIDOOR_DATABASE_URL": settings.database_url,
        "AIDOOR_LIVE_BROKER_URL": live.live_broker_url,
        "AIDOOR_DAGSTER_PORT": str(settings.dagster_port),
    }
    log_path = tmp_path / "detect.log"
    with open(log_path, "wb") as log:
        detect = subprocess.Popen(
            [str(Path(sys.executable).parent / "aidoor"), "detect", "--no-migrate"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with AuthedTestClient(create_app(live)) as client:
            assert wait_until(lambda: client.get("/api/detection").status_code == 200, 60), log_path.read_text()
            body = client.get("/api/detection").json()
            assert body["data"]["status"] == "stopped" and body["data"]["model_state"] == "none"
            refused = client.post("/api/detection/start").json()
            assert refused["error"]["code"] == "NO_CAMERA_SOURCE"  # the worker's own domain error, 409
            detect.terminate()
            assert detect.wait(20) == 0
            answer = client.get("/api/detection")
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "DETECTOR_UNAVAILABLE"
            # The rest of the API does not depend on the worker; the live stream says so and goes on.
            assert client.get("/api/events").status_code == 200
            stream = client.get("/api/live/events?max_s=1")
            assert stream.status_code == 200 and "event: detection" in stream.text
            assert '"status":"error"' in stream.text and "DETECTOR_UNAVAILABLE" in stream.text
    finally:
        if detect.poll() is None:
            detect.kill()
            detect.wait(5)


def test_live_events_stream_over_two_api_workers(settings, tmp_path: Path) -> None:
    """An event the worker records reaches GET /api/live/events on the API workers (the bus over the link)."""
    with live_layouts.split_layout(settings, tmp_path / "split") as client:
        state = client.app.state
        frames: list[tuple[str, dict]] = []

        def listen() -> None:
            with client.http.stream("GET", "/api/live/events?max_s=8", timeout=20) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                name = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and name:
                        frames.append((name, json.loads(line.split(":", 1)[1])))

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert wait_until(lambda: frames, 10)  # connected: the detection state comes first
        state.detector_holder.swap(ScriptedDetector(lambda i, t: [det(10, 10, 60, 100, "person", 0.9)]))
        video = write_video(tmp_path / "door.avi", frames=45, fps=15, size=(160, 120))
        assert client.put("/api/settings/camera", json={"source": str(video)}).status_code == 200
        thread.join(20)
        names = [name for name, _ in frames]
        assert names[0] == "detection" and frames[0][1]["status"] in ("stopped", "running")
        created = [data for name, data in frames if name == "event_created"]
        assert created and created[0]["object_type"] == "person" and "snapshot_jpeg" not in created[0]
        events = client.get("/api/events").json()["data"]["items"]
        assert created[0]["event_id"] in [e["id"] for e in events]


def test_serve_refuses_several_workers_without_a_live_link(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDOOR_")}
    env["AIDOOR_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aidoor"), "serve", "--workers", "2", "--no-migrate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "AIDOOR_LIVE_BROKER_URL" in done.stderr and "aidoor detect" in done.stderr


def test_ingest_claim_is_freed_when_the_api_worker_holding_it_dies(broker) -> None:
    """An API worker killed while a WebSocket camera is connected through it: its last will
    (``api_gone``) frees the claim, so the camera can come back through another worker."""
    import socket
    from types import SimpleNamespace

    from detection_service.bus import EventBus
    from detection_service.realtime.ingest import IngestState
    from detection_service.realtime.live_endpoint import LiveEndpoint
    from detection_service.realtime.remote import RemoteIngest

    target = parse_mqtt_url(broker.url(f"t{uuid.uuid4().hex[:6]}"))
    state = IngestState()
    service = SimpleNamespace(bus=EventBus(), ingest_target=lambda camera: (None, state))
    detector = LiveLink(target, role="detector")
    endpoint = LiveEndpoint(service, detector)  # type: ignore[arg-type]
    endpoint.start()
    first, second = LiveLink(target, role="api"), LiveLink(target, role="api")
    try:
        for api in (first, second):
            assert api.start(wait_s=5) and wait_until(lambda api=api: api.detector_online, 5)
        assert RemoteIngest(first).claim("door-cam")
        assert not RemoteIngest(second).claim("other-cam")  # one camera at a time, across workers
        # The first worker dies without a word (kill -9, a lost host): the broker sends its will.
        first.client.loop_stop()
        sock = first.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        assert wait_until(lambda: not state.connected, 5), "the dead worker's claim was kept"
        again = RemoteIngest(second)
        assert again.claim("door-cam")
        # A worker that closes in order says so too (uvicorn stopping while a camera is connected).
        second.close()
        assert wait_until(lambda: not state.connected, 5)
        # A claim without an owner (an older API) is never freed by someone else's goodbye.
        third = LiveLink(target, role="api")
        assert third.start(wait_s=5) and wait_until(lambda: third.detector_online, 5)
        assert third.request("ingest_claim", {"client": "old"})
        detector.publish("api_gone", b"aidoor-api-nobody")
        time.sleep(0.3)
        assert state.connected
        third.close()
    finally:
        endpoint.close()


def test_status_logs_are_written_once_by_the_detector_worker_not_by_each_api_worker(settings, tmp_path: Path) -> None:
    """system_status_logs has one writer with the detector apart: two API workers and the worker
    give one 'database' transition and one sample per interval, not three of each."""
    import sqlalchemy as sa

    from schemas.db import SystemStatusLog

    with live_layouts.split_layout(settings, tmp_path / "split") as client:
        state = client.app.state
        # Each API worker has probed by now (its sampler starts with a probe) and knows the states.
        assert wait_until(lambda: client.get("/api/system/status").json()["data"]["components"], 10)
        components = client.get("/api/system/status").json()["data"]["components"]
        assert components["database"]["status"] == "running"
        time.sleep(1.0)  # the API workers' first samples, had they been written
        assert state.worker.monitoring.registry.flush()
        with state.session_factory() as session:
            rows = session.scalars(sa.select(SystemStatusLog).where(SystemStatusLog.component == "database")).all()
        kinds = [(row.metadata_ or {}).get("kind") for row in rows]
        assert kinds.count("transition") == 1, kinds
        # One sampler (every 10 s by default): its rows are an interval apart, never a few at once.
        samples = sorted(row.logged_at for row in rows if (row.metadata_ or {}).get("kind") == "sample")
        assert samples and all((b - a).total_seconds() > 5 for a, b in zip(samples, samples[1:], strict=False)), samples
        # GET /api/system/performance on an API worker reads the worker's samples.
        history = client.get("/api/system/performance").json()
        assert history["success"], history


def test_a_slow_detector_does_not_block_the_api_workers_event_loop(settings, tmp_path: Path) -> None:
    """A live request waiting on a detector that hangs runs off the event loop: other requests to
    the same (single) API worker answer meanwhile, instead of after the detector's answer."""
    import statistics

    with live_layouts.split_layout(settings, tmp_path / "split", workers=1) as client:
        endpoint = client.app.state.worker.endpoint
        handle = endpoint.handle
        quick = []
        for _ in range(30):
            started = time.perf_counter()
            assert client.get("/api/detection").status_code == 200
            quick.append((time.perf_counter() - started) * 1000)
        print(f"\nGET /api/detection over the link: median {statistics.median(quick):.2f} ms")

        def slow(op: str, args: dict) -> object:
            if op == "config":
                time.sleep(2.0)  # a detector that hangs (here: less than the 5 s timeout)
            return handle(op, args)

        endpoint.handle = slow
        endpoint.link._serve = slow
        answers: dict[str, int] = {}
        hung = threading.Thread(target=lambda: answers.update(config=client.get("/api/detection/config").status_code))
        hung.start()
        time.sleep(0.3)  # the slow request is in flight on the worker
        timings = {}
        for path in ("/api/system/health", "/api/detection", "/api/events?limit=1"):
            started = time.perf_counter()
            assert client.get(path).status_code == 200, path
            timings[path] = (time.perf_counter() - started) * 1000
        hung.join(10)
        print("while a detector request hangs for 2 s:", {k: f"{v:.1f} ms" for k, v in timings.items()})
        assert answers == {"config": 200}
        assert max(timings.values()) < 1000, timings


def test_several_detector_workers_each_run_their_cameras(broker, settings) -> None:
    """aidoor detect --cameras 1,porch and --cameras 3: requests about a camera reach the worker
    that runs it, settings reach both, a third worker claiming camera 3 is refused at start, and
    a camera whose worker is away (or that no worker runs) is listed as such and answers 503."""
    from detection_service.app import create_app
    from detection_service.config import ConfigError
    from detection_service.database import make_engine, make_session_factory
    from detection_service.detect_worker import DetectorWorker
    from detection_service.services.cameras import CameraService
    from schemas.cameras import CameraCreate

    live = msgspec.structs.replace(settings, live_broker_url=broker.url(f"t{uuid.uuid4().hex[:6]}"))
    cameras = CameraService(make_session_factory(make_engine(settings.database_url)))
    porch = cameras.create(CameraCreate(name="porch", source="push"))
    garage = cameras.create(CameraCreate(name="garage", source="push"))
    first = DetectorWorker(live, cameras=["1", "porch"])
    second = DetectorWorker(live, cameras=[str(garage.id)])
    assert (first.name, second.name) == (f"cameras-1-{porch.id}", f"cameras-{garage.id}")
    seen: list[tuple[str, str, object]] = []
    for worker in (first, second):
        serve = worker.endpoint.handle

        def record(op: str, args: dict, name: str = worker.name, serve=serve) -> object:
            seen.append((name, op, args.get("camera")))
            return serve(op, args)

        worker.endpoint.handle = record  # type: ignore[method-assign]
    started: list[DetectorWorker] = []
    try:
        for worker in (first, second):
            worker.start()
            started.append(worker)
        # Two workers claiming one camera: the second refuses clearly at start; so does "every camera".
        with pytest.raises(ConfigError, match=f"cameras-{garage.id}"):
            DetectorWorker(live, cameras=["garage"]).check_claims()
        with pytest.raises(ConfigError, match="runs cameras"):
            DetectorWorker(live).check_claims()
        with AuthedTestClient(create_app(live)) as client:
            assert wait_until(lambda: client.get("/api/detection").status_code == 200, 30)
            listed = {c["id"]: c for c in client.get("/api/cameras").json()["data"]}
            assert {i: c["worker"] for i, c in listed.items()} == {
                1: first.name,
                porch.id: first.name,
                garage.id: second.name,
            }
            # GET /api/detection lists every camera with the worker that runs it (fanned out, merged).
            brief = {c["camera_id"]: c["worker"] for c in client.get("/api/detection").json()["data"]["cameras"]}
            assert brief == {1: first.name, porch.id: first.name, garage.id: second.name}
            seen.clear()
            assert client.get(f"/api/detection?camera={garage.id}").json()["data"]["camera_status"]
            assert client.get(f"/api/stream/status?camera={porch.id}").status_code == 200
            assert client.get("/api/detection").status_code == 200
            asked = {(name, op, camera) for name, op, camera in seen}
            assert (second.name, "camera_status", garage.id) in asked
            assert (first.name, "camera_stream_status", porch.id) in asked
            assert (first.name, "camera_status", None) in asked
            # The garage's worker is asked about its camera only (and for its cameras' brief list).
            assert not [s for s in seen if s[0] == second.name and s[2] != garage.id and s[1] != "camera_summaries"]
            # A settings change reaches every worker (each reads it again before the answer).
            seen.clear()
            assert client.put("/api/settings/detection", json={"confidence_threshold": 0.6}).status_code == 200
            assert {name for name, op, _ in seen if op == "settings_changed"} == {first.name, second.name}
            # Every camera (no ?camera=): the request fans out to both workers, each its own cameras.
            seen.clear()
            assert client.post("/api/detection/stop").status_code == 200
            assert {name for name, op, _ in seen if op == "control_cameras"} == {first.name, second.name}
            assert not second.service.pipeline_of(garage.id).running and not first.service.pipeline.running
            assert client.post("/api/detection/start").status_code == 409  # camera 1 has no source: first's answer
            assert second.service.pipeline_of(garage.id).running and not second.service.pipeline.running
            # A system restart reaches every worker, each restarting the cameras it runs.
            seen.clear()
            restarted = client.post("/api/system/restart", json={"service": "detection"})
            assert restarted.status_code == 200, restarted.text
            assert {name for name, op, _ in seen if op == "restart_detection"} == {first.name, second.name}
            assert second.service.pipeline_of(garage.id).running and not second.service.pipeline.running
            seen.clear()
            # Camera 1 has no source, so its worker answers 409 as in one process; the garage's worker
            # re-opened its capture all the same.
            assert client.post("/api/system/restart", json={"service": "camera"}).status_code == 409
            assert {name for name, op, _ in seen if op == "restart_camera"} == {first.name, second.name}
            # The garage's worker goes away: its camera is listed offline and its requests are 503.
            second.close()
            started.remove(second)
            assert wait_until(lambda: client.get(f"/api/detection?camera={garage.id}").status_code == 503, 10)
            away = client.get(f"/api/detection?camera={garage.id}").json()["error"]
            assert away["code"] == "DETECTOR_UNAVAILABLE" and away["details"]["worker"] == second.name
            listed = {c["id"]: c for c in client.get("/api/cameras").json()["data"]}
            assert (listed[garage.id]["status"], listed[garage.id]["worker"]) == ("offline", second.name)
            assert client.get(f"/api/detection?camera={porch.id}").status_code == 200  # the others go on
            # A camera no worker runs is reported, not silently left out.
            shed = client.post("/api/cameras", json={"name": "shed", "source": "push"}).json()["data"]
            listed = {c["id"]: c for c in client.get("/api/cameras").json()["data"]}
            assert (listed[shed["id"]]["status"], listed[shed["id"]]["worker"]) == ("unassigned", None)
            brief = {c["camera_id"]: c for c in client.get("/api/detection").json()["data"]["cameras"]}
            assert (brief[garage.id]["status"], brief[garage.id]["worker"]) == ("offline", second.name)
            assert (brief[shed["id"]]["status"], brief[shed["id"]]["worker"]) == ("unassigned", None)
            assert brief[porch.id]["worker"] == first.name
            gone = client.get(f"/api/detection?camera={shed['id']}").json()["error"]
            assert gone["code"] == "DETECTOR_UNAVAILABLE" and f"--cameras {shed['id']}" in gone["message"]
    finally:
        for worker in started:
            worker.close()


def test_detect_cameras_names_an_unknown_camera(settings) -> None:
    """--cameras takes ids or names of the cameras table; anything else is refused with the list."""
    from detection_service.config import ConfigError
    from detection_service.detect_worker import DetectorWorker

    live = msgspec.structs.replace(settings, live_broker_url="mqtt://127.0.0.1:1/aidoor")  # never connected
    with pytest.raises(ConfigError, match=r"no camera 'attic'.*1 \("):
        DetectorWorker(live, cameras=["1", "attic"])
    with pytest.raises(ConfigError, match="no camera '7'"):
        DetectorWorker(live, cameras=["7"])
