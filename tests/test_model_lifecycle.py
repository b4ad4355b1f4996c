"""The model life cycle end to end on real data (packages-v6, 26 images): import -> queued train
request -> the sensor's run -> Dagster materializations with metrics -> registry -> deploy with
the champion/challenger gate -> cancel. Training uses the tiny profile (seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from assets.datasets import data_yaml, dataset_version
from assets.models import deployed_model, model_evaluation, trained_model
from detection_service.datasets.importer import import_dataset
from detection_service.services.job_queue import queue_dataset_materialize
from orchestration.resources import resources_from_settings
from schemas.db import Model, ModelTraining
from tests.conftest import SHARED_DATASETS
from tests.dagster_helpers import ephemeral_instance, next_batch_run

PACKAGES = SHARED_DATASETS / "packages-v6"
pytestmark = pytest.mark.skipif(not PACKAGES.exists(), reason=f"shared dataset missing: {PACKAGES}")
ALL_MODEL_ASSETS = [dataset_version, data_yaml, trained_model, model_evaluation, deployed_model]


def _execute(run: dg.RunRequest, settings, instance, assets) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        partition_key=run.partition_key,
        run_config=run.run_config,
        instance=instance,
        resources=resources_from_settings(settings),
        tags=run.tags,
        raise_on_error=False,
    )


def test_train_register_deploy_and_gate(client, settings, tmp_path: Path):
    state = client.app.state
    imported = import_dataset(state.session_factory, state.object_store, PACKAGES, "packages")
    assert imported.total_images == 26

    loaded: list[str] = []
    state.model_service.deploy_hook = lambda model_id, weights: loaded.append(model_id) or None
    response = client.post(
        "/api/models/train",
        json={"dataset_id": "packages", "profile": "tiny", "epochs": 2, "imgsz": 64, "batch_size": 8},
    )
    assert response.status_code == 202, response.text
    training_id = response.json()["data"]["id"]

    with ephemeral_instance() as instance:
        run = next_batch_run(settings, instance)
        assert run.job_name == "train_model_job"
        result = _execute(run, settings, instance, [trained_model, model_evaluation])
        assert result.success

        [materialization] = result.asset_materializations_for_node("trained_model")
        metadata = materialization.metadata
        for key in (
            "mAP50",
            "mAP50-95",
            "precision",
            "recall",
            "per_class",
            "inference_ms_per_image",
            "model_size_bytes",
            "class_thresholds",
        ):
            assert key in metadata, key
        assert "| package |" in metadata["per_class"].value
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks["metrics_sane"] is True
        assert checks["beats_champion"] is True  # no champion yet

    status = client.get("/api/models/train/status").json()["data"]
    assert status["id"] == training_id and status["status"] == "completed" and status["progress_percentage"] == 100
    assert status["current_epoch"] == 2 and status["model_id"] == "yolo_v1"
    info = client.get("/api/models/yolo_v1/info").json()["data"]
    assert info["dataset_id"] == "packages" and info["map50_95"] is not None and info["per_class"]
    assert state.object_store.exists("models/yolo_v1/best.pt") and state.object_store.exists("models/yolo_v1/best.onnx")
    # The detector's calibration (aidoor.json) is what the registry shows (issue #9, calibration).
    stored_config = json.loads(state.object_store.get_bytes("models/yolo_v1/aidoor.json"))
    assert stored_config["class_thresholds"] == info["class_thresholds"]

    # First deploy: no champion, so no gate; the running detector gets the weights.
    deployed = client.post("/api/models/yolo_v1/deploy")
    assert deployed.status_code == 200, deployed.text
    assert loaded == ["yolo_v1"] and deployed.json()["data"]["detector_reloaded"] is True
    assert client.get("/api/models/current").json()["data"]["model_id"] == "yolo_v1"

    # A challenger that is not better is refused unless forced (same split, same metric).
    from detection_service.ml import registry

    champion_weights = registry.fetch_model(state.object_store, "yolo_v1", "models/yolo_v1/best.pt", tmp_path)
    with state.session_factory() as session:
        metrics = session.scalar(sa.select(Model.metrics).where(Model.model_id == "yolo_v1"))
    clone = registry.register_model(
        state.session_factory,
        state.object_store,
        champion_weights,
        model_name="same weights",
        metrics={**metrics, "gate": None},
        inference_ms=None,
    )
    refused = client.post(f"/api/models/{clone.model_id}/deploy")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "GATE_FAILED", refused.text
    assert client.get("/api/models/current").json()["data"]["model_id"] == "yolo_v1"
    forced = client.post(f"/api/models/{clone.model_id}/deploy", json={"force": True})
    assert forced.status_code == 200 and forced.json()["data"]["forced"] is True
    assert loaded[-1] == clone.model_id
    # Rollback = deploying the older id (forced: it is not better either).
    assert client.post("/api/models/yolo_v1/deploy?force=true").status_code == 200
    assert client.get("/api/models/current").json()["data"]["model_id"] == "yolo_v1"
    versions = client.get("/api/models/versions").json()["data"]
    assert [v["is_current"] for v in versions].count(True) == 1

    # `aidoor model pull current FILE` writes the deployed weights, loadable elsewhere.
    target = tmp_path / "pulled.pt"
    env = {**os.environ, "AIDOOR_DATA_DIR": str(settings.data_dir), "AIDOOR_DATABASE_URL": settings.database_url}
    pulled = subprocess.run(
        [str(Path(sys.executable).parent / "aidoor"), "model", "pull", "current", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert target.read_bytes() == champion_weights.read_bytes()


def test_new_dataset_version_to_deployed_model_in_one_run(settings):
    from detection_service.database import make_engine, make_session_factory
    from detection_service.storage import make_object_store

    session_factory = make_session_factory(make_engine(settings.database_url))
    store = make_object_store(settings)
    store.ensure_bucket()
    imported = import_dataset(session_factory, store, PACKAGES, "packages")
    queue_dataset_materialize(
        session_factory,
        "packages",
        imported.version,
        {"profile": "tiny", "epochs": 1, "imgsz": 64, "auto_deploy": True},
    )
    with ephemeral_instance() as instance:
        run = next_batch_run(settings, instance)
        assert run.job_name == "dataset_to_model_job" and run.partition_key == f"packages@{imported.version}"
        result = _execute(run, settings, instance, ALL_MODEL_ASSETS)
        assert result.success
        assert result.asset_materializations_for_node("dataset_version")[0].metadata["images"].value == 26
        assert result.asset_materializations_for_node("data_yaml")[0].metadata["nc"].value == 4
        assert result.asset_materializations_for_node("deployed_model")
    with session_factory() as session:
        assert session.scalar(sa.select(Model.model_id).where(Model.is_current.is_(True))) == "yolo_v1"


def test_cancel_stops_a_running_training_within_10s(client, settings):
    state = client.app.state
    import_dataset(state.session_factory, state.object_store, PACKAGES, "packages")
    response = client.post(
        "/api/models/train",
        json={"dataset_id": "packages", "profile": "tiny", "epochs": 200, "imgsz": 64, "batch_size": 4},
    )
    assert response.status_code == 202
    with ephemeral_instance() as instance:
        run = next_batch_run(settings, instance)
        outcome: dict = {}
        worker = threading.Thread(
            target=lambda: outcome.update(result=_execute(run, settings, instance, [trained_model]))
        )
        worker.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if client.get("/api/models/train/status").json()["data"]["current_epoch"] >= 1:
                break
            time.sleep(0.5)
        else:
            pytest.fail("training never reported an epoch")
        cancelled_at = time.time()
        assert client.delete("/api/models/train/cancel").status_code == 200
        # The training loop must stop within 10 s (its step fails with TrainingCancelled) and the
        # run end soon after.
        worker.join(timeout=30)
        assert not worker.is_alive()
        [failure] = [
            e
            for e in instance.all_logs(outcome["result"].run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
        ]
        stopped_after = failure.timestamp - cancelled_at
    assert stopped_after < 10, f"training stopped {stopped_after:.1f} s after the cancel"
    assert outcome["result"].success is False
    with state.session_factory() as session:
        assert session.scalar(sa.select(ModelTraining.status)) == "cancelled"
        assert session.scalar(sa.select(sa.func.count()).select_from(Model)) == 0
