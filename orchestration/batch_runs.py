"""Which Dagster job runs each batch job type: the one registry, ``BATCH_JOB_RUNS``.

``batch_job_sensor`` turns a pending ``batch_jobs`` row into the run its entry describes, and
launches only the jobs the entries name. A new job type is one Struct in ``schemas/batch_jobs.py``
(with its ``BatchJobType``) and one entry here:

- ``tagged(job)``: the job's code reads its batch job id from the run's tag
  (``detection_service.batch_jobs.batch_job_id_of(context.run.tags)``) and runs under
  ``BatchJobs.running(...)``; no run config;
- a ``BatchJobRoute`` with the jobs it may launch and a function ``(job id, typed parameters) ->
  BatchRun`` for jobs that need run config or a partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from assets.collection import collection_job
from assets.datasets import dataset_update_job
from assets.evaluation import registered_model_evaluation_job
from assets.partitions import partition_key
from assets.system import log_archive_job
from orchestration.jobs import (
    dataset_assets_job,
    dataset_to_model_job,
    storage_cleanup_job,
    train_and_deploy_job,
    train_model_job,
    training_run_config,
    training_run_tags,
)
from orchestration.reports import REPORT_TYPE_JOBS, report_run
from schemas.batch_jobs import (
    DatasetMaterialize,
    DatasetUpdate,
    JobParameters,
    ModelEvaluation,
    ModelRetrain,
    job_type_of,
)
from schemas.enums import BatchJobType

# A JobDefinition, or the unresolved job define_asset_job returns (its class is not public API).
JobDef = Any


class BatchRun(NamedTuple):
    """The run that executes one batch job."""

    job: JobDef
    run_config: dict[str, Any] | None = None
    partition_key: str | None = None  # a dataset version (the sensor adds it to the dynamic partitions)
    tags: dict[str, str] | None = None  # more run tags (a training's placement: training_run_tags)


class BatchJobRoute(NamedTuple):
    jobs: tuple[JobDef, ...]  # every job ``run`` may return (the sensor's targets)
    run: Callable[[int, Any], BatchRun]


def tagged(job: JobDef) -> BatchJobRoute:
    """A job that needs nothing but its run's batch-job tag."""
    return BatchJobRoute((job,), lambda job_id, params: BatchRun(job))


def _model_retrain(job_id: int, params: ModelRetrain) -> BatchRun:
    target = train_and_deploy_job if params.auto_deploy else train_model_job
    config = training_run_config(job_id, params, params.auto_deploy)
    return BatchRun(target, config, partition_key(params.dataset_id, params.version), training_run_tags(config))


def _dataset_materialize(job_id: int, params: DatasetMaterialize) -> BatchRun:
    key = partition_key(params.dataset_id, params.version)
    if params.train:
        config = training_run_config(job_id, params.train, True)
        return BatchRun(dataset_to_model_job, config, key, training_run_tags(config))
    return BatchRun(dataset_assets_job, None, key)


def _model_evaluation(job_id: int, params: ModelEvaluation) -> BatchRun:
    config = {"batch_job_id": job_id, "model_id": params.model_id}
    return BatchRun(registered_model_evaluation_job, {"ops": {"evaluate_registered_model": {"config": config}}})


def _dataset_update(job_id: int, params: DatasetUpdate) -> BatchRun:
    if params.source == "auto_collect":
        return BatchRun(collection_job, {"ops": {"collected_dataset": {"config": {"batch_job_id": job_id}}}})
    return BatchRun(dataset_update_job, {"ops": {"dataset_update": {"config": {"batch_job_id": job_id}}}})


BATCH_JOB_RUNS: dict[BatchJobType, BatchJobRoute] = {
    BatchJobType.MODEL_RETRAIN: BatchJobRoute((train_model_job, train_and_deploy_job), _model_retrain),
    BatchJobType.DATASET_MATERIALIZE: BatchJobRoute((dataset_assets_job, dataset_to_model_job), _dataset_materialize),
    BatchJobType.MODEL_EVALUATION: BatchJobRoute((registered_model_evaluation_job,), _model_evaluation),
    BatchJobType.DATASET_UPDATE: BatchJobRoute((dataset_update_job, collection_job), _dataset_update),
    BatchJobType.STORAGE_CLEANUP: tagged(storage_cleanup_job),
    BatchJobType.LOG_ARCHIVE: tagged(log_archive_job),
    BatchJobType.REPORT_GENERATE: BatchJobRoute(
        tuple(REPORT_TYPE_JOBS.values()), lambda job_id, params: BatchRun(*report_run(job_id, params))
    ),
}


def batch_target_jobs() -> list[JobDef]:
    """Every job a batch job may run, once each (the sensor's ``jobs``)."""
    seen: dict[str, JobDef] = {}
    for route in BATCH_JOB_RUNS.values():
        for job in route.jobs:
            seen.setdefault(job.name, job)
    return list(seen.values())


def batch_run_for(job_id: int, params: JobParameters) -> BatchRun:
    """The run of a batch job. ValueError for a job type no entry runs."""
    route = BATCH_JOB_RUNS.get(job_type_of(params))
    if route is None:
        raise ValueError(f"no Dagster job runs batch job type {job_type_of(params)}")
    run = route.run(job_id, params)
    if run.job.name not in {job.name for job in route.jobs}:
        raise ValueError(f"{run.job.name} is not among the jobs of its batch job type's entry")
    return run
