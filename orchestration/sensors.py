"""Sensors: the service's request queue (batch_jobs) -> Dagster runs; retraining on new labels;
batch job bookkeeping when a run ends."""

import dagster as dg
import sqlalchemy as sa

from assets.partitions import dataset_versions
from assets.resources import DatabaseResource
from detection_service.batch_jobs import BatchJobs, validate
from detection_service.errors import Invalid
from detection_service.services.retrain_progress import new_verified_labels
from detection_service.services.settings import SettingsService
from orchestration.batch_runs import batch_run_for, batch_target_jobs
from orchestration.jobs import BATCH_JOB_TAG
from schemas.batch_jobs import JobParameters
from schemas.db import Model
from schemas.enums import BatchJobType, JobStatus

__all__ = ["BATCH_JOB_TAG", "batch_job_sensor", "retrain_on_new_labels_sensor", "retrain_parameters", "run_request_for"]


def retrain_parameters(session_factory, profile: str, device: str = "cpu") -> dict:
    """What a retrain on new labels trains: fine-tune the deployed model (when it has PyTorch
    weights) on the union of the collected version (the run's partition) and the champion's
    human-labelled base data (``mix``; their teacher overlays come along with them). A champion
    that names no base data (registered from elsewhere) gets every imported data set instead, so
    a retrain never trains on the collected images alone."""
    from detection_service.datasets.evaluation_set import imported_dataset_refs, model_base_refs

    train: dict = {"profile": profile, "device": device, "auto_deploy": True, "job_type": "retrain"}
    with session_factory() as session:
        champion = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
        mix = model_base_refs(champion) or imported_dataset_refs(session)
    if champion is not None and champion.model_path.endswith(".pt"):
        train["base_model_id"] = champion.model_id
    if mix:
        train["mix"] = mix
    return train


def run_request_for(job_id: int, params: JobParameters) -> tuple[dg.RunRequest, str | None]:
    """The run that executes a batch job (its entry in ``orchestration.batch_runs.BATCH_JOB_RUNS``),
    and the dataset-version partition it needs added (if any). ValueError for a job type no Dagster
    job runs."""
    run = batch_run_for(job_id, params)
    request = dg.RunRequest(
        run_key=f"batch-job-{job_id}",
        job_name=run.job.name,
        partition_key=run.partition_key,
        tags={**(run.tags or {}), BATCH_JOB_TAG: str(job_id)},
        run_config=run.run_config or {},
    )
    # Only a dataset version is a dynamic partition the sensor adds (others, e.g. time windows, exist).
    new_version = run.partition_key if getattr(run.job, "partitions_def", None) == dataset_versions else None
    return request, new_version


@dg.sensor(
    minimum_interval_seconds=3,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=batch_target_jobs(),
    description="Starts one Dagster run per pending batch_jobs row (run_key = row id): requests the "
    "service accepted while Dagster was down run once it is back, and none runs twice.",
)
def batch_job_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
    # Nothing is written to the row here: a tick that fails must leave it pending. A row whose run
    # exists already (queued behind the heavy-run limit, or starting) is skipped by its tag, and
    # run_key makes Dagster drop any duplicate that slips through.
    session_factory = database.session_factory()
    jobs = BatchJobs(session_factory)
    requests: list[dg.RunRequest] = []
    new_partitions: set[str] = set()
    with session_factory.begin() as session:
        for job in jobs.waiting_for_a_run(session, limit=20):
            if context.instance.get_run_ids(filters=dg.RunsFilter(tags={BATCH_JOB_TAG: str(job.id)}), limit=1):
                continue
            try:
                request, key = run_request_for(job.id, validate(job.job_type, job.parameters))
            except (Invalid, ValueError) as exc:
                jobs.fail(job.id, f"cannot run: {exc}", session=session)
                continue
            if (
                key
                and key not in new_partitions
                and not context.instance.has_dynamic_partition(dataset_versions.name, key)
            ):
                new_partitions.add(key)
            requests.append(request)
    if not requests:
        return dg.SkipReason("no pending batch jobs without a run")
    context.log.info(f"submitting {len(requests)} batch job(s): {[r.run_key for r in requests]}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[dataset_versions.build_add_request(sorted(new_partitions))]
        if new_partitions
        else [],
    )


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When enough verified labels (relabelled events) arrived since the last training or "
    "auto-collection (services/retrain_progress.py), collects them into a new dataset version and retrains "
    "(training settings).",
)
def retrain_on_new_labels_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
    session_factory = database.session_factory()
    training = SettingsService(session_factory).get("training")
    if not training.auto_retrain:
        return dg.SkipReason("automatic retraining is off (training.auto_retrain)")
    # The same count as GET /api/models/retrain/status. No sensor cursor: the auto-collect job
    # queued below moves ``since`` past these labels, so they never trigger a second retrain.
    labels = new_verified_labels(session_factory)
    count = labels.count
    if count < training.retrain_min_new_labels:
        return dg.SkipReason(f"{count} new verified labels, retraining at {training.retrain_min_new_labels}")
    if labels.queued:
        return dg.SkipReason("a dataset update or training is already queued or running")
    BatchJobs(session_factory).submit(
        validate(
            BatchJobType.DATASET_UPDATE,
            {
                "source": "auto_collect",
                "dataset_id": training.auto_collect_dataset_id,
                "auto_label": True,
                "train": retrain_parameters(session_factory, training.profile, training.device),
            },
        ),
        f"auto-collect {count} verified labels and retrain",
        priority=5,
    )
    return dg.SkipReason(f"queued auto-collect + retrain for {count} new verified labels")


def _finish_batch_job(
    context: dg.RunStatusSensorContext, database: DatabaseResource, status: JobStatus, error: str | None
) -> None:
    job_id = context.dagster_run.tags.get(BATCH_JOB_TAG)
    if job_id:  # the run's own code may have recorded the outcome already: finish() then does nothing
        BatchJobs(database.session_factory()).finish(int(job_id), status, error, context.dagster_run.run_id)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, default_status=dg.DefaultSensorStatus.RUNNING)
def batch_job_succeeded_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource):
    _finish_batch_job(context, database, JobStatus.COMPLETED, None)


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def batch_job_failed_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource):
    message = context.failure_event.message if context.failure_event else "run failed"
    _finish_batch_job(context, database, JobStatus.FAILED, message)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.CANCELED, default_status=dg.DefaultSensorStatus.RUNNING)
def batch_job_canceled_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource):
    # A run terminated from the Dagster UI (DELETE /api/batch/jobs/{id} cancels the row itself first).
    _finish_batch_job(context, database, JobStatus.CANCELLED, "its Dagster run was terminated")
