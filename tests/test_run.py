"""`aidoor run` as a user runs it: both services answer, SIGTERM stops everything."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import free_port, start_aidoor_run


def _wait_for(url: str, timeout_s: float, proc: subprocess.Popen) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"aidoor run exited early with {proc.returncode}"
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s} s: {last_error}")


def test_run_starts_service_and_dagster_and_stops_cleanly(tmp_path: Path, migrated_database_url: str):
    api_port, dagster_port = free_port(), free_port()
    proc = start_aidoor_run(tmp_path / "data", migrated_database_url, api_port, dagster_port, tmp_path / "run.log")
    try:
        _wait_for(f"http://127.0.0.1:{dagster_port}/server_info", 180, proc)
        health = _wait_for(f"http://127.0.0.1:{api_port}/api/system/health", 60, proc).json()
        assert health["success"] is True
        components = health["data"]["components"]
        assert components["database"]["status"] == "ok"
        assert components["storage"]["status"] == "ok"
        assert components["dagster"]["status"] == "ok"
        assert health["data"]["status"] == "ok"
        assert (tmp_path / "data" / "dagster" / "dagster.yaml").exists()
        # A fresh install: the output says how to sign in, with the one-time admin password (docs/security.md).
        deadline = time.monotonic() + 20
        while "sign in at" not in (tmp_path / "run.log").read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        output = (tmp_path / "run.log").read_text(errors="replace")
        assert f"127.0.0.1:{api_port}/login" in output and "one-time password" in output, output[-3000:]

        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 3  # api, webserver, daemon (+ code servers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(descendants, timeout=10)
        assert not alive, f"orphans left: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        output = (tmp_path / "run.log").read_text(errors="replace")
        print(output[-4000:])
