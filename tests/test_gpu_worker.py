"""Training on a GPU worker, by configuration (docs/training.md "Training on a GPU worker").

infra/dagster-gpu.yaml is loaded with Dagster's own machinery; the runs the service queues get the
tags Dagster's sensor daemon gives them; the instance's launcher sends the GPU trainings to Docker
(a stand-in Docker Engine API on 127.0.0.1 receives the container, with its GPU request) and keeps
every other run on the box. The device a request names reaches Ultralytics' trainer. No GPU and no
Docker daemon needed: where a GPU exists, the cuda training runs on it instead of failing.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import msgspec
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import WorkerStatus
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster_docker import DockerRunLauncher

from orchestration.definitions import defs
from orchestration.jobs import GPU_TAG
from orchestration.launchers import TagRoutingRunLauncher
from orchestration.sensors import run_request_for
from schemas.batch_jobs import (
    DatasetMaterialize,
    DatasetUpdate,
    ModelEvaluation,
    ModelRetrain,
    ReportGenerate,
    StorageCleanup,
    TrainParameters,
)

REPO = Path(__file__).resolve().parents[1]
GPU_YAML = REPO / "infra" / "dagster-gpu.yaml"


class FakeDockerEngine:
    """The few Docker Engine API calls DockerRunLauncher makes (version, create, inspect, start,
    stop), answered on 127.0.0.1 and recorded; docker-py builds the requests as for a real daemon."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict | None]] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                engine.requests.append((self.command, path, body))
                if path.endswith("/version"):
                    self._answer(200, {"ApiVersion": "1.43", "Version": "24.0.0"})
                elif path.endswith("/containers/create"):
                    self._answer(201, {"Id": "c0ffee", "Warnings": []})
                elif path.endswith("/containers/c0ffee/json"):
                    self._answer(200, {"Id": "c0ffee", "Name": "/run", "State": {"Status": "running"}})
                elif path.endswith(("/containers/c0ffee/start", "/containers/c0ffee/stop")):
                    self._answer(204)
                else:
                    self._answer(404, {"message": f"not faked: {self.command} {path}"})

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> FakeDockerEngine:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def calls(self, suffix: str) -> list[dict | None]:
        return [body for method, path, body in self.requests if method == "POST" and path.endswith(suffix)]


@pytest.fixture
def gpu_instance(tmp_path: Path, monkeypatch):
    """The instance of infra/dagster-gpu.yaml, its Docker daemon a FakeDockerEngine. The whole file
    is validated against Dagster's instance schema; the instance is built from it with only the
    storage (MySQL, as infra/dagster.yaml) and compute-log folder swapped for temporary ones."""
    env = {
        "DAGSTER_MYSQL_HOST": "mysql",
        "DAGSTER_MYSQL_USER": "aidoor",
        "DAGSTER_MYSQL_PASSWORD": "secret",
        "DAGSTER_MYSQL_DB": "dagster",
        "AIDOOR_GPU_IMAGE": "aidoor-gpu-worker:latest",
        "AIDOOR_GPU_NETWORK": "aidoor",
        "AIDOOR_DATABASE_URL": "mysql+pymysql://aidoor:x@mysql:3306/aidoor",
        "AIDOOR_S3_ENDPOINT": "http://minio:9000",
        "AIDOOR_S3_ACCESS_KEY": "aidoor",
        "AIDOOR_S3_SECRET_KEY": "secret-too",
        "AIDOOR_S3_BUCKET": "ai-door-system",
        "AIDOOR_PUBLIC_URL": "http://door.local:8000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config, _ = dagster_instance_config(str(GPU_YAML.parent), GPU_YAML.name)  # raises on a schema error
    assert config["run_launcher"]["class"] == "TagRoutingRunLauncher"
    raw = yaml.safe_load(GPU_YAML.read_text())
    production = yaml.safe_load((REPO / "infra" / "dagster.yaml").read_text())
    # Same storage, monitoring and logs as production; only the launcher and the GPU limit differ.
    for key in ("storage", "telemetry", "run_monitoring", "compute_logs"):
        assert raw[key] == production[key], key
    raw.pop("storage")
    raw["compute_logs"]["config"]["base_dir"] = str(tmp_path / "compute_logs")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(raw))
    with FakeDockerEngine() as docker_engine:
        monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance, docker_engine, env


def _sensor_run(instance: dg.DagsterInstance, job_id: int, params) -> dg.DagsterRun:
    """The run the daemon creates for a batch job: the job's own tags, then the run request's."""
    request, partition = run_request_for(job_id, params)
    job = defs.resolve_job_def(request.job_name)
    origin = JobPythonOrigin(
        job.name,
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("orchestration.definitions", "defs", str(REPO)),
            container_image=None,
            entry_point=None,
            container_context=None,
        ),
    )
    return instance.create_run_for_job(
        job,
        run_config=request.run_config,
        tags={**job.run_tags, **request.tags, **({"dagster/partition": partition} if partition else {})},
        job_code_origin=origin,
    )


def test_gpu_instance_launches_gpu_trainings_on_docker_and_keeps_the_rest_on_the_box(gpu_instance):
    instance, docker_engine, env = gpu_instance
    launcher = instance.run_launcher
    assert isinstance(launcher, TagRoutingRunLauncher)
    assert isinstance(launcher.routed, DockerRunLauncher) and isinstance(launcher.default, dg.DefaultRunLauncher)

    retrain = {"dataset_id": "doorbell", "version": "v1", "training_id": 7, "profile": "tiny"}
    gpu_runs = {
        "train on cuda": _sensor_run(instance, 1, ModelRetrain(**retrain, device="cuda:0")),
        "train on two GPUs, deploy": _sensor_run(instance, 2, ModelRetrain(**retrain, device="0,1", auto_deploy=True)),
        "new dataset version to a model on cuda": _sensor_run(
            instance, 3, DatasetMaterialize(dataset_id="doorbell", version="v2", train=TrainParameters(device="cuda"))
        ),
    }
    box_runs = {
        "train on cpu": _sensor_run(instance, 4, ModelRetrain(**retrain, device="cpu")),
        "dataset materialize without training": _sensor_run(
            instance, 5, DatasetMaterialize(dataset_id="doorbell", version="v2")
        ),
        "dataset update": _sensor_run(instance, 6, DatasetUpdate(source="auto_collect", dataset_id="auto-collected")),
        "evaluation": _sensor_run(instance, 7, ModelEvaluation(model_id="yolo_v1")),
        "clean-up": _sensor_run(instance, 8, StorageCleanup()),
        "report": _sensor_run(instance, 9, ReportGenerate(report_type="daily_summary", period="2026-12-06")),
    }
    for name, run in gpu_runs.items():
        assert run.tags[GPU_TAG] == "true", name
        assert launcher.launcher_for(run) is launcher.routed, name
    for name, run in box_runs.items():
        assert run.tags.get(GPU_TAG, "false") == "false", name
        assert launcher.launcher_for(run) is launcher.default, name
    # The device of the run config is the one that chose the launcher.
    assert gpu_runs["train on cuda"].run_config["ops"]["trained_model"]["config"]["device"] == "cuda:0"
    assert box_runs["train on cpu"].run_config["ops"]["trained_model"]["config"]["device"] == "cpu"

    # Launching the GPU run through the instance: one container of the worker image, with every GPU.
    run = gpu_runs["train on cuda"]
    instance.launch_run(run.run_id, workspace=None)  # ty: ignore[invalid-argument-type]
    [create] = docker_engine.calls("/containers/create")
    assert create["Image"] == env["AIDOOR_GPU_IMAGE"]
    # The code location's interpreter (the same path in the worker image) runs the run worker.
    assert create["Cmd"][:5] == [sys.executable, "-m", "dagster", "api", "execute_run"]
    assert run.run_id in create["Cmd"][5]
    # What `docker run --gpus all` asks the daemon for.
    [gpus] = create["HostConfig"]["DeviceRequests"]
    assert gpus == {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    assert create["HostConfig"]["NetworkMode"] == "aidoor" and create["HostConfig"]["ShmSize"] == 2 * 1024**3
    container_env = dict(item.split("=", 1) for item in create["Env"])
    for key in ("DAGSTER_MYSQL_HOST", "AIDOOR_DATABASE_URL", "AIDOOR_S3_SECRET_KEY"):
        assert container_env[key] == env[key], key
    assert len(docker_engine.calls("/containers/c0ffee/start")) == 1
    launched = instance.get_run_by_id(run.run_id)
    assert launched.tags["docker/container_id"] == "c0ffee"
    # Monitoring and termination reach the same container; box runs are not Docker's business.
    assert launcher.check_run_worker_health(launched).status == WorkerStatus.RUNNING
    assert launcher.check_run_worker_health(box_runs["train on cpu"]).status == WorkerStatus.RUNNING
    assert launcher.terminate(run.run_id) is True
    assert len(docker_engine.calls("/containers/c0ffee/stop")) == 1
    assert len(docker_engine.calls("/containers/create")) == 1


def test_bad_gpu_launcher_config_fails_when_the_instance_loads(tmp_path: Path, monkeypatch):
    """A typo in the routed launcher's config is caught by Dagster's validation, not at the first GPU run."""
    monkeypatch.setenv("AIDOOR_GPU_IMAGE", "aidoor-gpu-worker:latest")
    monkeypatch.setenv("AIDOOR_GPU_NETWORK", "aidoor")
    raw = yaml.safe_load(GPU_YAML.read_text())
    raw.pop("storage")
    raw.pop("compute_logs")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(raw))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # as shipped: loads
        assert isinstance(instance.run_launcher, TagRoutingRunLauncher)
    raw["run_launcher"]["config"]["routed"]["config"]["container_kwarg"] = {}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(raw))
    with (
        pytest.raises(dg.DagsterInvalidConfigError, match="container_kwarg"),
        dg.DagsterInstance.from_config(str(tmp_path)) as instance,
    ):
        _ = instance.run_launcher


def test_device_from_settings_or_request_reaches_ultralytics(client, settings):
    """POST /api/models/train without a device takes training.device from the settings; the run the
    sensor requests is placed by it and Ultralytics gets it. cuda fails on a machine without a GPU
    (Ultralytics' own device check) and trains where there is one; an explicit cpu trains here."""
    import torch

    from assets.models import model_evaluation, trained_model
    from detection_service.datasets.importer import import_dataset
    from orchestration.resources import resources_from_settings
    from schemas.db import ModelTraining
    from tests.conftest import SHARED_DATASETS
    from tests.dagster_helpers import ephemeral_instance, next_batch_run

    packages = SHARED_DATASETS / "packages-v6"
    if not packages.exists():
        pytest.skip(f"shared dataset missing: {packages}")
    state = client.app.state
    import_dataset(state.session_factory, state.object_store, packages, "packages")
    body = {"dataset_id": "packages", "profile": "tiny", "epochs": 1, "imgsz": 64, "batch_size": 8}

    bad = client.post("/api/models/train", json={**body, "device": "gpu0"})
    assert bad.status_code == 400, bad.text
    assert client.put("/api/settings/training", json={"device": "tpu"}).status_code == 400
    assert client.put("/api/settings/training", json={"device": "cuda:0"}).status_code == 200

    def train(request: dict) -> tuple[dg.RunRequest, dg.ExecuteInProcessResult, ModelTraining]:
        response = client.post("/api/models/train", json=request)
        assert response.status_code == 202, response.text
        with ephemeral_instance() as instance:
            run = next_batch_run(settings, instance)
            result = dg.materialize(
                [trained_model, model_evaluation],
                partition_key=run.partition_key,
                run_config=run.run_config,
                instance=instance,
                resources=resources_from_settings(settings),
                tags=run.tags,
                raise_on_error=False,
            )
        with state.session_factory() as session:
            row = session.get(ModelTraining, response.json()["data"]["id"])
        return run, result, row

    run, result, row = train(body)  # no device: the settings' cuda:0
    assert run.tags[GPU_TAG] == "true"
    assert run.run_config["ops"]["trained_model"]["config"]["device"] == "cuda:0"
    if torch.cuda.is_available():
        assert result.success and row.status == "completed"
        assert _trained_device(state, row) == "cuda:0"
    else:
        assert not result.success and row.status == "failed"
        # Ultralytics' select_device refused it (it writes cuda:0 as 0): the device reached the trainer.
        assert "Invalid CUDA 'device=0' requested" in (row.error_message or ""), row.error_message

    run, result, row = train({**body, "device": "cpu"})  # asked for: wins over the settings
    assert run.tags[GPU_TAG] == "false"
    assert run.run_config["ops"]["trained_model"]["config"]["device"] == "cpu"
    assert result.success and row.status == "completed"
    assert _trained_device(state, row) == "cpu"


def _trained_device(state, row) -> str:
    """The device Ultralytics' trainer ran with, as it saved it in the weights (train_args)."""
    import torch

    from detection_service.ml import registry
    from schemas.db import Model

    with state.session_factory() as session:
        model = session.scalar(sa.select(Model).where(Model.id == row.model_id))
        model_id, path = model.model_id, model.model_path
    weights = registry.fetch_model(state.object_store, model_id, path, state.settings.data_dir / "cache")
    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    params = msgspec.to_builtins(checkpoint["train_args"])
    return str(params["device"])
