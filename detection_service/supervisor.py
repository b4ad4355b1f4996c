"""`aidoor run`: the detection service and Dagster (webserver + daemon) as one supervised unit.

Each child runs in its own session so a terminal's Ctrl-C reaches only us; we then stop every
child's whole process group (Dagster's code servers included), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from detection_service.config import Settings
from detection_service.database import upgrade
from detection_service.retry import Backoff
from orchestration.instance import ensure_local_instance, fail_interrupted_runs
from schemas.enums import JobStatus

log = logging.getLogger("aidoor.run")

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 20.0
READY_TIMEOUT_S = 120.0


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    env["AIDOOR_DATA_DIR"] = str(settings.data_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # With no camera configured, the service builds (first run) and plays the demo video.
    env.setdefault("AIDOOR_DEMO_VIDEO", "auto")
    return env


def _stop(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", name, STOP_GRACE_S)
        proc.wait()
    finally:
        # Grandchildren (Dagster code servers) share the group: make sure none survive.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_ready(url: str, stop: threading.Event) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.5)
    return False


MAX_RESTARTS = 5
RESTART_BACKOFF = Backoff(2.0, 30.0)  # a crashed child restarts after 2, 4, 8, 16, 30 s


def _close_interrupted_runs(settings: Settings) -> None:
    """Runs cut off when the last `aidoor run` stopped: failed in Dagster, and their batch jobs
    (and trainings) failed with a clear message, so a new request, or the starter training, can
    be queued instead of waiting forever behind a 'running' job."""
    from detection_service.database import make_engine, make_session_factory
    from detection_service.services.job_queue import JobService
    from orchestration.sensors import BATCH_JOB_TAG

    interrupted = fail_interrupted_runs(settings.dagster_home)
    if not interrupted:
        return
    engine = make_engine(settings.database_url)
    try:
        jobs = JobService(make_session_factory(engine))
        for run_id, tags in interrupted:
            print(f"==> Dagster run {run_id} was interrupted by the last shutdown: marked failed", flush=True)
            if tags.get(BATCH_JOB_TAG):
                jobs.finish(
                    int(tags[BATCH_JOB_TAG]),
                    JobStatus.FAILED,
                    "interrupted: the service stopped while this job ran; request it again",
                    run_id,
                )
    finally:
        engine.dispose()


def run_all(settings: Settings, with_dagster: bool = True, bootstrap: bool = True) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    print(f"==> migrating database {settings.database_url.split('@')[-1]}", flush=True)
    upgrade(settings.database_url)
    env = _child_env(settings)

    commands: dict[str, list[str]] = {
        "api": [sys.executable, "-m", "detection_service.cli", "serve", "--no-migrate"],
    }
    if with_dagster:
        ensure_local_instance(settings.dagster_home)
        _close_interrupted_runs(settings)
        workspace = str(REPO_ROOT / "workspace.yaml")
        commands["dagster-webserver"] = [
            _bin("dagster-webserver"),
            "-w",
            workspace,
            "-h",
            settings.dagster_host,
            "-p",
            str(settings.dagster_port),
        ]
        commands["dagster-daemon"] = [_bin("dagster-daemon"), "run", "-w", workspace]

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"\n==> {signal.Signals(signum).name}: stopping", flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    restarts: dict[str, int] = dict.fromkeys(commands, 0)
    exit_code = 0

    def start(name: str) -> None:
        children[name] = subprocess.Popen(commands[name], cwd=REPO_ROOT, env=env, start_new_session=True)

    try:
        for name in commands:
            start(name)
        urls = {"api": f"{settings.public_url}/api/system/health"}
        if with_dagster:
            urls["dagster"] = settings.dagster_url + "/server_info"
        for name, url in urls.items():
            if not _wait_ready(url, stop) and not stop.is_set():
                print(f"==> {name} did not become ready at {url}", flush=True)
        if not stop.is_set():
            print(f"==> detection service: {settings.public_url}  (API docs {settings.public_url}/schema)", flush=True)
            print(f"==> {_sign_in_hint(settings)}", flush=True)
            if with_dagster:
                print(f"==> Dagster UI:        {settings.dagster_url}", flush=True)
            print("==> Ctrl-C stops everything", flush=True)
        if with_dagster and bootstrap and not stop.is_set():
            from detection_service.bootstrap import queue_bootstrap_if_needed

            job_id = queue_bootstrap_if_needed(settings)
            if job_id is not None:
                print(
                    f"==> no model yet: training a starter model (batch job {job_id}); follow it in the "
                    f"Dagster UI or GET {settings.public_url}/api/models/train/status",
                    flush=True,
                )
        while not stop.is_set():
            for name, proc in list(children.items()):
                if proc.poll() is None or stop.is_set():
                    continue
                _stop(name, proc)  # reap whatever it left in its process group
                if restarts[name] >= MAX_RESTARTS:
                    print(f"==> {name} exited with code {proc.returncode} {MAX_RESTARTS} times; stopping", flush=True)
                    exit_code = 1
                    stop.set()
                    break
                restarts[name] += 1
                delay = RESTART_BACKOFF.delay_for(restarts[name])
                print(
                    f"==> {name} exited with code {proc.returncode}; restarting in {delay:.0f} s "
                    f"({restarts[name]}/{MAX_RESTARTS})",
                    flush=True,
                )
                if not stop.wait(delay):
                    start(name)
            stop.wait(1.0)
    finally:
        for name, proc in reversed(list(children.items())):
            _stop(name, proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("==> stopped", flush=True)
    return exit_code


def _sign_in_hint(settings: Settings) -> str:
    """How to sign in (docs/security.md); the first start's one-time password is logged above."""
    if not settings.auth_enabled:
        return "AIDOOR_AUTH=off: no sign-in (loopback only)"
    return (
        f"sign in at {settings.public_url}/login: on a fresh install as 'admin' with the one-time password "
        "printed above (First start: ...); else `aidoor user create --username NAME --role admin` / "
        "`aidoor token create --role viewer`"
    )
