"""The Dagster jobs of the code location, and the run config of a training run (shared by the
batch_job_sensor and `aidoor bootstrap-model`, which runs the same chain in its own process)."""

from typing import Any

import dagster as dg
import msgspec

from assets.partitions import dataset_versions
from assets.resources import DatabaseResource, ObjectStoreResource
from assets.system import storage_usage
from detection_service.batch_jobs import BATCH_JOB_TAG as BATCH_JOB_TAG  # re-exported: where its callers import it
from detection_service.batch_jobs import BatchJobs, batch_job_id_of
from detection_service.services.retention import RetentionService
from detection_service.services.settings import SettingsService
from schemas.batch_jobs import ModelRetrain, TrainParameters, train_config

# The training fields the trained_model asset's config takes (assets/models.py TrainConfig).
TRAIN_CONFIG_KEYS = (
    "training_id",
    "profile",
    "epochs",
    "batch_size",
    "imgsz",
    "base_model_id",
    "mix",
    "confidence_threshold",
    "sensitivity",
    "device",
)

# Where a run goes. A Dagster instance configured with orchestration.launchers.TagRoutingRunLauncher
# (infra/dagster-gpu.yaml) launches runs tagged GPU_TAG=true on its GPU launcher (a container on the
# GPU worker); every other run, and every run of an instance without it, stays on the box.
GPU_TAG = "aidoor/gpu"
HEAVY_TAG = "aidoor/heavy"
# The training jobs' own tags: heavy (one at a time on the box) and GPU-capable. A run from the
# Dagster UI keeps them (set the trained_model device to cuda there); runs queued by the service
# override GPU_TAG with training_run_tags(), so a cpu training never leaves the box.
TRAINING_JOB_TAGS = {HEAVY_TAG: "true", GPU_TAG: "true"}


def training_run_config(job_id: int, train: TrainParameters | ModelRetrain | dict[str, Any], with_deploy: bool) -> dict:
    """Run config of a training run from a batch job's training parameters (a model_retrain job's,
    or the ``train`` block of a dataset job)."""
    given = train if isinstance(train, dict) else train_config(train)
    config = {key: given[key] for key in TRAIN_CONFIG_KEYS if given.get(key) is not None}
    config["batch_job_id"] = job_id
    ops: dict = {"trained_model": {"config": config}}
    if with_deploy:
        ops["deployed_model"] = {"config": {"force": bool(given.get("force_deploy", False))}}
    return {"ops": ops}


def training_run_tags(run_config: dict) -> dict[str, str]:
    """The run tags that place a training run: on the GPU worker unless its device is cpu (the
    trained_model config's ``device``, default cpu)."""
    device = run_config["ops"]["trained_model"]["config"].get("device", "cpu")
    return {GPU_TAG: "false" if device == "cpu" else "true"}


storage_usage_job = dg.define_asset_job("storage_usage_job", selection=[storage_usage])

# A stored dataset version: statistics + its data.yaml row.
dataset_assets_job = dg.define_asset_job(
    "dataset_assets_job", selection=["dataset_version", "data_yaml"], partitions_def=dataset_versions
)
# Train and evaluate against the champion; deploying stays a person's decision (API / UI).
train_model_job = dg.define_asset_job(
    "train_model_job",
    selection=["trained_model", "model_evaluation"],
    partitions_def=dataset_versions,
    tags=TRAINING_JOB_TAGS,
)
# Train, evaluate and deploy if the challenger passes the gate (automatic retraining, bootstrap).
train_and_deploy_job = dg.define_asset_job(
    "train_and_deploy_job",
    selection=["trained_model", "model_evaluation", "deployed_model"],
    partitions_def=dataset_versions,
    tags=TRAINING_JOB_TAGS,
)
# A new dataset version end to end: statistics, data.yaml, teacher labels for the classes it lacks,
# model, gate, deploy.
dataset_to_model_job = dg.define_asset_job(
    "dataset_to_model_job",
    selection=["dataset_version", "data_yaml", "teacher_labels", "trained_model", "model_evaluation", "deployed_model"],
    partitions_def=dataset_versions,
    tags=TRAINING_JOB_TAGS,
)


@dg.op(
    description="Retention (storage settings): events older than max_days, then the oldest while captures "
    "exceed max_size_gb, then orphans; old system logs too (archived to the object store first). The nightly "
    "run is skipped while storage.auto_cleanup is off; a storage_cleanup batch job (a person asked) always runs."
)
def storage_cleanup(
    context: dg.OpExecutionContext, database: DatabaseResource, object_store: ObjectStoreResource
) -> dg.Output[None]:
    session_factory = database.session_factory()
    settings = SettingsService(session_factory)
    job_id = batch_job_id_of(context.run.tags)
    if job_id is None and not settings.get("storage").auto_cleanup:  # type: ignore[attr-defined]
        context.log.info("storage.auto_cleanup is off: nothing deleted")
        return dg.Output(None, metadata={"skipped": "storage.auto_cleanup is off"})
    with BatchJobs(session_factory).running(job_id, context.run_id, "deleting expired events") as job:
        store = object_store.store()
        retention = RetentionService(session_factory, store, settings)
        images = retention.cleanup_images()
        job.progress(60, "archiving and deleting old logs")
        # The same path as POST /api/system/cleanup {"type": "logs"}: archived first, then deleted.
        logs = retention.cleanup_logs()
        metadata = {k: v for k, v in msgspec.structs.asdict(images).items() if isinstance(v, (int, float))}
        metadata |= {"logs_archived": logs.logs_archived, "logs_deleted": logs.logs_deleted}
        job.complete(metadata)
    context.log.info(f"clean-up: {images}; {logs.logs_archived} logs archived; {logs}")
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Retention clean-up: nightly (schedule storage_cleanup_nightly) and storage_cleanup batch jobs. "
    "POST /api/system/cleanup runs the same code inside the service."
)
def storage_cleanup_job() -> None:
    storage_cleanup()
