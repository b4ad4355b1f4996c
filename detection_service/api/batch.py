"""Batch API (the seed's four endpoints) over ``batch_jobs``: list, trigger, one job, cancel.

Every job type runs as a Dagster job (docs/orchestration.md "Batch API"); the handlers only ask
``services/batch.py`` and wrap its answers in the envelope.
"""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec

from detection_service.api.params import RowId
from detection_service.api.responses import ok
from detection_service.services.batch import MAX_LIST_LIMIT, BatchService
from schemas.batch_api import BatchCancelResult, BatchJobInfo, BatchTriggerRequest
from schemas.envelope import Envelope


class BatchController(Controller):
    path = "/api/batch"
    tags = ["Batch"]

    @get(
        "/jobs",
        sync_to_thread=True,
        summary="Batch jobs, newest first: status, limit",
        description="status: pending, running, completed, failed or cancelled (default: all). "
        f"limit: 1-{MAX_LIST_LIMIT} (default 50). Each job has its Dagster run id and a link to the run in the "
        "Dagster UI once a run claimed it.",
    )
    def list_jobs(
        self, batch: BatchService, status: str | None = None, limit: int = 50
    ) -> Response[Envelope[list[BatchJobInfo]]]:
        jobs = batch.list(status, limit)
        return ok(jobs, message=f"{len(jobs)} batch job(s)")

    @post(
        "/trigger",
        status_code=202,
        sync_to_thread=True,
        summary="Queue a batch job: job_type and its parameters (runs as a Dagster job)",
        description="job_type: dataset_update, model_retrain, storage_cleanup, log_archive, dataset_materialize, "
        "model_evaluation; parameters: that type's (docs/orchestration.md). An unknown job type or parameters that "
        "do not fit are a 400 INVALID_JOB and queue nothing. 202 with the pending job; the batch_job_sensor starts "
        "its Dagster run within seconds (or once Dagster is up). report_generate for a report and period whose job "
        "is already pending or running: 200 with that job, nothing queued (as GET /api/analytics/reports does).",
        responses={
            200: ResponseSpec(Envelope[BatchJobInfo], description="The same work is already queued: that job"),
            202: ResponseSpec(Envelope[BatchJobInfo], description="Queued: the new pending job"),
        },
    )
    def trigger(self, batch: BatchService, data: BatchTriggerRequest) -> Response[Envelope[BatchJobInfo]]:
        job, submitted = batch.trigger(data)
        if not submitted:
            return ok(job, message=f"{job.job_type} job {job.id} is already {job.status}: nothing queued")
        return ok(job, message=f"{job.job_type} job {job.id} queued", status_code=202)

    @get("/jobs/{job_id:int}", sync_to_thread=True, summary="One batch job: state, progress, Dagster run and its link")
    def get_job(self, batch: BatchService, job_id: RowId) -> Response[Envelope[BatchJobInfo]]:
        job = batch.get(job_id)
        return ok(job, message=f"batch job {job_id} is {job.status}")

    @delete(
        "/jobs/{job_id:int}",
        status_code=200,
        sync_to_thread=True,
        summary="Cancel a pending or running batch job",
        description="A pending job never starts; a running job's Dagster run is terminated (a training stops "
        "within seconds). The job ends cancelled; a finished one is a 409 BATCH_JOB_FINISHED.",
    )
    def cancel_job(self, batch: BatchService, job_id: RowId) -> Response[Envelope[BatchCancelResult]]:
        result = batch.cancel(job_id)
        message = f"batch job {job_id} cancelled"
        if result.termination_error:
            message += f" (its Dagster run could not be reached: {result.termination_error})"
        return ok(result, message=message)
