"""Model API without training: envelopes, validation, the queue rows a train request leaves,
the sensor that turns them into runs, and the champion/challenger gate."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from assets.resources import DatabaseResource
from detection_service.ml.gate import judge
from orchestration.sensors import batch_job_sensor
from schemas.db import BatchJob, Dataset, DatasetVersion, ModelTraining
from tests.dagster_helpers import ephemeral_instance


@dg.op
def _noop() -> None:
    pass


@dg.job
def _placeholder_job() -> None:
    _noop()


def _error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return body


def test_empty_registry_answers_in_envelope(client):
    _error(client.get("/api/models/current"), 404, "NO_MODEL")
    body = client.get("/api/models/versions").json()
    assert body["success"] is True and body["data"] == []
    _error(client.get("/api/models/yolo_v9/info"), 404, "NOT_FOUND")
    _error(client.get("/api/models/train/status"), 404, "NOT_FOUND")
    _error(client.delete("/api/models/train/cancel"), 409, "NO_ACTIVE_TRAINING")
    _error(client.post("/api/models/yolo_v9/deploy"), 404, "NOT_FOUND")


def test_train_request_validation(client):
    _error(client.post("/api/models/train", json={"dataset_id": "nope"}), 404, "NOT_FOUND")
    for bad in (
        {"dataset_id": "x", "epochs": 0},
        {"dataset_id": "x", "imgsz": 100},
        {"dataset_id": "x", "colour": 1},
        {"dataset_id": "x", "sensitivity": "extreme"},
        {},
    ):
        _error(client.post("/api/models/train", json=bad), 400, "VALIDATION_ERROR")


def _stored_dataset(client, settings) -> None:
    """A registered dataset version with a data.yaml in the store (what an import leaves)."""
    store = client.app.state.object_store
    store.put_bytes(
        "datasets/door/v1/data.yaml",
        b"path: .\ntrain: train/images\nval: valid/images\nnc: 4\nnames: [person, package, delivery_food, mail]\n",
    )
    with client.app.state.session_factory.begin() as session:
        dataset = Dataset(
            dataset_id="door",
            name="door",
            version="v1",
            storage_path="datasets/door/",
            yaml_path="datasets/door/v1/data.yaml",
            total_images=1,
        )
        session.add(dataset)
        session.flush()
        session.add(DatasetVersion(dataset_id=dataset.id, version="v1", image_count=1))


def test_train_request_is_queued_once_and_becomes_one_run(client, settings):
    _stored_dataset(client, settings)
    response = client.post(
        "/api/models/train", json={"dataset_id": "door", "epochs": 3, "profile": "tiny", "sensitivity": "high"}
    )
    assert response.status_code == 202, response.text
    training = response.json()["data"]
    assert training["status"] == "pending" and training["dataset_id"] == "door"
    assert training["batch_job_id"] is not None
    # A second request while one is pending is refused, not queued twice.
    _error(client.post("/api/models/train", json={"dataset_id": "door"}), 409, "TRAINING_IN_PROGRESS")

    # Dagster is down in this test: the request waits in the queue. When the sensor runs:
    database = DatabaseResource(url=settings.database_url)
    with ephemeral_instance() as instance:
        with dg.build_sensor_context(instance=instance, resources={"database": database}) as context:
            result = batch_job_sensor(context)
        assert isinstance(result, dg.SensorResult)
        [request] = result.run_requests
        assert request.run_key == f"batch-job-{training['batch_job_id']}"
        assert request.partition_key == "door@v1"
        assert request.job_name == "train_model_job"
        config = request.run_config["ops"]["trained_model"]["config"]
        assert config["training_id"] == training["id"] and config["epochs"] == 3 and config["sensitivity"] == "high"
        assert result.dynamic_partitions_requests[0].partition_keys == ["door@v1"]
        # Once its run exists, the row is not requested again.
        instance.add_dynamic_partitions("dataset_versions", ["door@v1"])
        instance.create_run_for_job(job_def=_placeholder_job, tags=request.tags)
        with dg.build_sensor_context(instance=instance, resources={"database": database}) as context:
            again = batch_job_sensor(context)
        assert isinstance(again, dg.SkipReason)
    with client.app.state.session_factory() as session:
        job = session.get(BatchJob, training["batch_job_id"])
        assert job.status == "pending"  # until the run starts and claims it

    cancelled = client.delete("/api/models/train/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"
    with client.app.state.session_factory() as session:
        assert session.scalar(sa.select(ModelTraining.status)) == "cancelled"
        assert session.get(BatchJob, training["batch_job_id"]).status == "cancelled"


def test_gate_rules():
    better = judge("b", {"map50": 0.80, "map50_95": 0.50}, "a", {"map50": 0.80, "map50_95": 0.45}, "s")
    assert better.passed
    worse = judge("b", {"map50": 0.70, "map50_95": 0.40}, "a", {"map50": 0.80, "map50_95": 0.45}, "s")
    assert not worse.passed and "not better" in worse.reason
    map50_drop = judge("b", {"map50": 0.70, "map50_95": 0.50}, "a", {"map50": 0.80, "map50_95": 0.45}, "s")
    assert not map50_drop.passed
    assert judge("b", {}, None, None, "s").passed
