"""The starter model: a fresh install has none, so we train one from real exports.

The starter data is a mix: the doorbell parcels (the Dagster partition), the person photos, and
teacher labels for the people in the doorbell frames (the ``teacher_labels`` asset).

- `aidoor bootstrap-model [EXPORT ...]` runs the whole chain in this process as a Dagster run in the
  local instance (visible in the UI): import -> dataset assets -> teacher labels -> train -> gate -> deploy.
- `make run` queues the same chain through Dagster (batch_jobs -> sensors) when no model exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from detection_service.batch_jobs import IN_PROCESS, BatchJobs, validate
from detection_service.config import DEFAULT_BOOTSTRAP_EXPORTS, Settings
from detection_service.database import make_engine, make_session_factory
from schemas.batch_jobs import DatasetMaterialize
from schemas.db import Model, ModelTraining
from schemas.enums import BatchJobType, JobStatus


def dataset_id_for(export_dir: Path) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", export_dir.name.lower()).strip("-.") or "dataset"
    return slug[:50]


def bootstrap_exports(settings: Settings) -> list[Path]:
    """``settings.bootstrap_dataset`` (``AIDOOR_BOOTSTRAP_DATASET``, ``:``-separated; the first is the
    main one), default the doorbell parcels + the person photos in shared/. Extra exports that are
    not there are left out of the mix."""
    exports = list(settings.bootstrap_dataset or DEFAULT_BOOTSTRAP_EXPORTS)
    return exports[:1] + [p for p in exports[1:] if (p / "data.yaml").exists()]


def bootstrap_parameters(exports: list[Path], profile: str, epochs: int | None = None) -> dict:
    """The dataset_update job that imports the exports and trains the starter model on their mix."""
    main, extras = exports[0], exports[1:]
    train = {
        "profile": profile,
        "auto_deploy": True,
        "job_type": "train",
        "mix": [dataset_id_for(p) for p in extras],
        **({"epochs": epochs} if epochs else {}),
    }
    return {
        "source": "path",
        "path": str(main),
        "dataset_id": dataset_id_for(main),
        "name": main.name,
        "description": "starter dataset (bootstrap)",
        "with_paths": [{"path": str(p), "dataset_id": dataset_id_for(p)} for p in extras],
        "train": train,
    }


def queue_bootstrap_if_needed(settings: Settings, profile: str = "default") -> int | None:
    """Queue import + train + deploy when there is no model and nothing is queued yet."""
    exports = bootstrap_exports(settings)
    export_dir = exports[0]
    engine = make_engine(settings.database_url)
    try:
        session_factory = make_session_factory(engine)
        with session_factory.begin() as session:
            if session.scalar(sa.select(sa.func.count()).select_from(Model)):
                return None
            busy = BatchJobs(session_factory).active_count(session=session)
            training = session.scalar(
                sa.select(sa.func.count())
                .select_from(ModelTraining)
                .where(ModelTraining.status.in_((JobStatus.PENDING, JobStatus.RUNNING)))
            )
            if busy or training:
                return None
            if not (export_dir / "data.yaml").exists():
                print(
                    f"==> no model yet, and no starter dataset at {export_dir}: set AIDOOR_BOOTSTRAP_DATASET, "
                    "upload a dataset and train, or `aidoor model register FILE`",
                    flush=True,
                )
                return None
            parameters = validate(BatchJobType.DATASET_UPDATE, bootstrap_parameters(exports, profile))
            return (
                BatchJobs(session_factory)
                .submit(parameters, "bootstrap: starter model", priority=2, session=session)
                .id
            )
    finally:
        engine.dispose()


def run_bootstrap(settings: Settings, exports: list[Path], profile: str = "default", epochs: int | None = None) -> str:
    """Import, teacher-label, train, evaluate and deploy in this process; returns the deployed model id."""
    import os

    import dagster as dg

    from assets.datasets import data_yaml, dataset_version
    from assets.models import deployed_model, model_evaluation, trained_model
    from assets.partitions import dataset_versions, partition_key
    from assets.teacher import teacher_labels
    from detection_service.datasets import import_missing
    from detection_service.datasets.importer import import_dataset
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.services.job_queue import queue_dataset_materialize
    from detection_service.storage import make_object_store
    from orchestration.instance import ensure_local_instance
    from orchestration.jobs import BATCH_JOB_TAG, training_run_config
    from orchestration.resources import resources_from_settings

    configure_offline(settings.data_dir)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    store = make_object_store(settings)
    store.ensure_bucket()
    parameters = bootstrap_parameters(exports, profile, epochs)
    for extra in parameters["with_paths"]:
        version = import_missing(
            session_factory, store, Path(extra["path"]), extra["dataset_id"], settings.data_dir / "work"
        )
        print(f"==> mixing in {extra['dataset_id']}@{version}", flush=True)
    export_dir, dataset_id = exports[0], parameters["dataset_id"]
    print(f"==> importing {export_dir} as dataset {dataset_id}", flush=True)
    result = import_dataset(
        session_factory,
        store,
        export_dir,
        dataset_id=dataset_id,
        name=export_dir.name,
        description="starter dataset (bootstrap)",
    )
    print(f"==> {result.total_images} images, {result.total_labels} boxes -> {dataset_id}@{result.version}", flush=True)
    # The batch job records the request (and makes the training visible in the API); it is run
    # right here instead of by the sensor, so it is started now (IN_PROCESS keeps the sensor off it).
    jobs = BatchJobs(session_factory)
    job_id = queue_dataset_materialize(session_factory, dataset_id, result.version, parameters["train"])
    params = jobs.start(job_id, None, IN_PROCESS)
    if not isinstance(params, DatasetMaterialize) or not params.train:
        raise RuntimeError(f"batch job {job_id} could not be started")
    ensure_local_instance(settings.dagster_home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    instance = dg.DagsterInstance.get()
    key = partition_key(dataset_id, result.version)
    instance.add_dynamic_partitions(dataset_versions.name, [key])
    # The run lands in the local instance the Dagster UI shows: secrets as EnvVar (settings came
    # from the environment: the CLI's Settings.from_env()), as in the code location.
    outcome = dg.materialize(
        [dataset_version, data_yaml, teacher_labels, trained_model, model_evaluation, deployed_model],
        partition_key=key,
        instance=instance,
        resources=resources_from_settings(settings, secrets_from_env=True),
        run_config=training_run_config(job_id, params.train, True),
        tags={BATCH_JOB_TAG: str(job_id)},
        raise_on_error=False,
    )
    # What the run status sensors do for a run of the daemon (none watches this one).
    jobs.finish(
        job_id,
        JobStatus.COMPLETED if outcome.success else JobStatus.FAILED,
        None if outcome.success else "bootstrap run failed; see its Dagster run logs",
        outcome.run_id,
    )
    with session_factory() as session:
        current = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
        current_id = current.model_id if current else None
    engine.dispose()
    if not outcome.success or current_id is None:
        raise RuntimeError("bootstrap training failed; see the Dagster run logs (`make run`, Dagster UI)")
    return current_id
