"""The Batch API against real Dagster (`aidoor run`: webserver, daemon, code server): a
storage_cleanup and a log_archive job triggered through the API run as Dagster runs and end
completed; a running model_retrain job cancelled through DELETE ends cancelled with its Dagster run
terminated."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from detection_service.batch_jobs import BATCH_JOB_TAG
from detection_service.datasets.importer import import_dataset
from schemas.db import ModelTraining, SystemLog, utcnow
from tests.conftest import SHARED_DATASETS, free_port, start_aidoor_run
from tests.test_dagster_e2e import _diagnostics

PACKAGES = SHARED_DATASETS / "packages-v6"
pytestmark = pytest.mark.skipif(not PACKAGES.exists(), reason=f"shared dataset missing: {PACKAGES}")

_ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
RUN_STATUS = (
    "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status jobName tags { key value } } } }"
)


def data(response) -> dict:
    body = response.json()
    assert response.status_code < 300 and body["success"], body
    return body["data"]


def _wait(what: str, probe, timeout_s: float, log_path: Path, proc: subprocess.Popen):
    """probe() until it returns something true; fails with the key lines of the `aidoor run` log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"aidoor run exited while waiting for {what}\n{_diagnostics(log_path)}")
        found = probe()
        if found:
            return found
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}\n--- aidoor run log, key lines ---\n{_diagnostics(log_path)}")


def _run(graphql: str, run_id: str) -> dict:
    body = httpx.post(graphql, json={"query": RUN_STATUS, "variables": {"id": run_id}}, timeout=30).json()
    return body["data"]["runOrError"]


# Real Dagster start-up, two small runs and the start of a tiny training: bounded loops (360 +
# 120 + 240 + 90 s at most), above the suite-wide 300 s timeout.
@pytest.mark.timeout(900)
def test_batch_jobs_run_in_dagster_and_a_running_training_is_cancelled(client, settings, tmp_path: Path):
    state = client.app.state
    import_dataset(state.session_factory, state.object_store, PACKAGES, "packages")
    now = utcnow()
    with state.session_factory.begin() as session:
        for age_days in (45, 40, 0):
            session.add(
                SystemLog(level="ERROR", component="camera", message="lost", created_at=now - timedelta(days=age_days))
            )

    # Dagster on the port this test's service talks to (its DagsterClient terminates runs there).
    log_path = tmp_path / "run.log"
    proc = start_aidoor_run(
        settings.data_dir,
        settings.database_url,
        free_port(),
        settings.dagster_port,
        log_path,
        AIDOOR_DEMO_VIDEO="off",
    )
    graphql = f"{settings.dagster_url}/graphql"
    try:
        cleanup = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
        archive = data(client.post("/api/batch/trigger", json={"job_type": "log_archive"}))

        def both_finished():
            jobs = [data(client.get(f"/api/batch/jobs/{job['id']}")) for job in (cleanup, archive)]
            return jobs if all(job["status"] in ("completed", "failed", "cancelled") for job in jobs) else None

        done = _wait("the storage_cleanup and log_archive jobs", both_finished, 360, log_path, proc)
        for job, job_name in zip(done, ("storage_cleanup_job", "log_archive_job"), strict=True):
            assert job["status"] == "completed", f"{job}\n{_diagnostics(log_path)}"
            assert job["dagster_run_url"] == f"{settings.dagster_url}/runs/{job['dagster_run_id']}"
            # The job's own code completes the row; its run ends a moment later.
            run = _wait(
                f"run {job['dagster_run_id']} to end",
                lambda run_id=job["dagster_run_id"]: (run := _run(graphql, run_id))["status"] not in _ACTIVE and run,
                60,
                log_path,
                proc,
            )
            assert (run["status"], run["jobName"]) == ("SUCCESS", job_name)
            assert {"key": BATCH_JOB_TAG, "value": str(job["id"])} in run["tags"]
        # Both archive old logs (the clean-up before it deletes any); between them each old row once.
        archived = done[0]["result"]["logs_archived"] + done[1]["result"]["rows_archived"]
        assert archived == 2
        with state.session_factory() as session:
            assert session.scalar(sa.select(sa.func.count(SystemLog.id)).where(SystemLog.message == "lost")) == 1
        assert len(list(state.object_store.list("logs/system_logs/"))) == 1

        # A tiny training with room for many epochs (its 120 s wall is far off when it is cancelled).
        train = {"dataset_id": "packages", "profile": "tiny", "epochs": 300, "imgsz": 64, "batch_size": 8}
        retrain = data(client.post("/api/batch/trigger", json={"job_type": "model_retrain", "parameters": train}))
        assert retrain["status"] == "pending" and retrain["parameters"]["training_id"]

        def training():
            job = data(client.get(f"/api/batch/jobs/{retrain['id']}"))
            assert job["status"] in ("pending", "running"), f"{job}\n{_diagnostics(log_path)}"
            return job if (job["current_step"] or "").startswith("epoch") else None

        running = _wait("the training's first epoch", training, 240, log_path, proc)
        run_id = running["dagster_run_id"]
        assert state.dagster.runs_tagged(BATCH_JOB_TAG, str(retrain["id"])) == [(run_id, "STARTED")]
        result = data(client.delete(f"/api/batch/jobs/{retrain['id']}"))
        assert result["terminated_run_ids"] == [run_id] and result["termination_error"] is None
        assert result["job"]["status"] == "cancelled"

        ended = _wait(
            "the terminated run to end",
            lambda: (run := _run(graphql, run_id))["status"] not in _ACTIVE and run,
            90,
            log_path,
            proc,
        )
        assert ended["status"] == "CANCELED"
        assert data(client.get(f"/api/batch/jobs/{retrain['id']}"))["status"] == "cancelled"
        with state.session_factory() as session:
            assert session.get(ModelTraining, retrain["parameters"]["training_id"]).status == "cancelled"
        # Its run is over: cancelling again is a conflict.
        assert client.delete(f"/api/batch/jobs/{retrain['id']}").status_code == 409
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
