"""With Dagster stopped a train request waits as pending; `aidoor run` starts Dagster, the sensor
picks the request up, and the training shows as a Dagster run whose materialization carries the
metrics. Real processes: detection service, dagster-webserver, dagster-daemon."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from detection_service.datasets.importer import import_dataset
from tests.conftest import SHARED_DATASETS, free_port, start_aidoor_run

PACKAGES = SHARED_DATASETS / "packages-v6"
pytestmark = pytest.mark.skipif(not PACKAGES.exists(), reason=f"shared dataset missing: {PACKAGES}")

MATERIALIZATION_QUERY = """
query($key: [String!]!) {
  assetOrError(assetKey: {path: $key}) {
    ... on Asset { assetMaterializations(limit: 1) { partition runId
      metadataEntries { label ... on FloatMetadataEntry { floatValue } } } }
  }
}"""


def _diagnostics(log_path: Path) -> str:
    """The supervisor's, daemon's and run's own lines of the `aidoor run` log (the tail alone is
    mostly code-server noise), so a failure on CI says where the request got stuck."""
    keep = (
        "==> ",
        "aidoor.run",
        "SensorDaemon",
        "QueuedRunCoordinator",
        "RUN_",
        "STEP_FAILURE",
        "Traceback",
        "Error",
        "exited",
        "restart",
        "heartbeat",
    )
    lines = [line[:300] for line in log_path.read_text(errors="replace").splitlines() if any(k in line for k in keep)]
    return "\n".join(lines[-60:])


# Real Dagster start-up + a tiny training: its own loops are bounded (420 s + 90 s), above the
# suite-wide 300 s timeout, which a loaded CI machine can exceed.
@pytest.mark.timeout(600)
def test_pending_training_runs_once_dagster_starts(client, settings, tmp_path: Path):
    state = client.app.state
    import_dataset(state.session_factory, state.object_store, PACKAGES, "packages")
    assert client.get("/api/system/health").json()["data"]["components"]["dagster"]["status"] == "down"
    response = client.post(
        "/api/models/train",
        json={"dataset_id": "packages", "profile": "tiny", "epochs": 2, "imgsz": 64, "batch_size": 8},
    )
    assert response.status_code == 202 and response.json()["data"]["status"] == "pending"

    api_port, dagster_port = free_port(), free_port()
    log_path = tmp_path / "run.log"
    proc = start_aidoor_run(settings.data_dir, settings.database_url, api_port, dagster_port, log_path)
    try:
        deadline = time.monotonic() + 420
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            status = client.get("/api/models/train/status").json()["data"]
            if status["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(2)
        if not (status and status["status"] == "completed"):
            # pytest.fail prints the whole text (an assertion message would be cut short).
            pytest.fail(f"training ended as {status}\n--- aidoor run log, key lines ---\n{_diagnostics(log_path)}")
        assert status["dagster_run_id"] and status["model_id"] == "yolo_v1"

        graphql = f"http://127.0.0.1:{dagster_port}/graphql"
        body = httpx.post(
            graphql, json={"query": MATERIALIZATION_QUERY, "variables": {"key": ["trained_model"]}}, timeout=30
        ).json()
        [materialization] = body["data"]["assetOrError"]["assetMaterializations"]
        assert materialization["partition"] == "packages@v1"
        assert materialization["runId"] == status["dagster_run_id"]
        labels = {entry["label"] for entry in materialization["metadataEntries"]}
        assert {"mAP50", "mAP50-95", "precision", "recall", "inference_ms_per_image"} <= labels
        # The run status sensor closes the batch job when the whole run (evaluation included) ends.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            job = client.app.state.jobs.get(status["batch_job_id"])
            if job.status == "completed":
                break
            time.sleep(2)
        assert job.status == "completed", job
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
