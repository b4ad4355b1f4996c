"""The Batch API's service: list, trigger, show and cancel ``batch_jobs`` (``/api/batch``).

Every job type it triggers runs as a Dagster job (``orchestration/batch_runs.py``: the
``batch_job_sensor`` launches each pending row). A trigger is checked before any row exists: an
unknown job type or parameters that do not fit its Struct are ``Invalid`` (``INVALID_JOB``), and
the references a job would stumble on later (a dataset, a model, a source folder, the Roboflow
credentials) are looked up now. ``model_retrain`` goes through ``ModelService.request_training``
so that its ``model_training`` row exists with the job, as with ``POST /api/models/train``.

Cancel: a pending job is cancelled before a run claims it (its run refuses a finished job, and a
run the sensor already launched is terminated too); a running job's Dagster run is terminated
through the webserver, and the training it drives is cancelled with it (the loop polls its row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.batch_jobs import BATCH_JOB_TAG, BatchJobFinished, BatchJobNotFound, validate
from detection_service.config import Settings
from detection_service.dagster_client import DagsterClient, DagsterUnavailable
from detection_service.datasets.roboflow_sync import roboflow_credentials
from detection_service.errors import Forbidden, Invalid, NotFound
from detection_service.services.job_queue import JobService, queue_dataset_materialize
from detection_service.services.models import ModelService
from schemas.batch_api import BatchCancelResult, BatchJobInfo, BatchTriggerRequest
from schemas.batch_jobs import BatchJobView, DatasetMaterialize, DatasetUpdate, JobParameters, ModelEvaluation
from schemas.db import Dataset, DatasetVersion, Model
from schemas.enums import BatchJobType, JobStatus
from schemas.models import TrainRequest

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 100
# Dagster run statuses after which there is nothing to terminate.
_RUN_FINISHED = {"SUCCESS", "FAILURE", "CANCELED", "CANCELING"}


# Job types whose parameters name the whole result (a report partition): a trigger while the same
# job is pending or running answers that job instead of queueing a second run of the same work.
ONCE_TYPES = frozenset({BatchJobType.REPORT_GENERATE})


def _invalid(message: str, details: Any = None) -> Invalid:
    return Invalid(message, details, code="INVALID_JOB")


class BatchService:
    def __init__(
        self,
        jobs: JobService,
        dagster: DagsterClient,
        model_service: ModelService,
        session_factory: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        self._jobs = jobs
        self._dagster = dagster
        self._models = model_service
        self._session_factory = session_factory
        self._settings = settings
        # How a job type is submitted; the rest are validated and queued as they are.
        self._triggers: dict[BatchJobType, Callable[[BatchTriggerRequest], BatchJobView]] = {
            BatchJobType.MODEL_RETRAIN: self._model_retrain,
            BatchJobType.DATASET_UPDATE: self._dataset_update,
            BatchJobType.DATASET_MATERIALIZE: self._dataset_materialize,
            BatchJobType.MODEL_EVALUATION: self._model_evaluation,
        }

    # ------------------------------------------------------------------ reading

    def info(self, job: BatchJobView) -> BatchJobInfo:
        url = self._dagster.run_url(job.dagster_run_id) if job.dagster_run_id else None
        return BatchJobInfo(**msgspec.structs.asdict(job), dagster_run_url=url)

    def list(self, status: str | None = None, limit: int = 50) -> list[BatchJobInfo]:
        if status is not None:
            try:
                status = JobStatus(status.strip().lower()).value
            except ValueError:
                raise Invalid(
                    f"unknown status {status!r}",
                    {"status": status, "allowed": [s.value for s in JobStatus]},
                    code="INVALID_STATUS",
                ) from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise Invalid(
                f"limit must be between 1 and {MAX_LIST_LIMIT}",
                {"limit": limit, "max": MAX_LIST_LIMIT},
                code="INVALID_LIMIT",
            )
        return [self.info(job) for job in self._jobs.list(status, limit)]

    def get(self, job_id: int) -> BatchJobInfo:
        job = self._jobs.get(job_id)
        if job is None:
            raise BatchJobNotFound(f"batch job {job_id} not found", {"id": job_id})
        return self.info(job)

    # ------------------------------------------------------------------ trigger

    def trigger(self, request: BatchTriggerRequest) -> tuple[BatchJobInfo, bool]:
        """``(job, submitted)``: ``submitted`` is False when the request was answered with a job
        already pending or running for the same work (``ONCE_TYPES``) and nothing was queued."""
        try:
            job_type = BatchJobType(request.job_type.strip())
        except ValueError:
            raise _invalid(
                f"unknown job type {request.job_type!r}",
                {"job_type": request.job_type, "allowed": [t.value for t in BatchJobType]},
            ) from None
        submit = self._triggers.get(job_type)
        if submit is not None:
            return self.info(submit(request)), True
        params = validate(job_type, request.parameters)
        name = request.job_name or job_type.value.replace("_", " ")
        if job_type in ONCE_TYPES:
            job, submitted = self._jobs.submit_once(params, name, priority=request.priority)
            return self.info(job), submitted
        return self.info(self._submit(params, request, name)), True

    def _submit(self, params: JobParameters, request: BatchTriggerRequest, default_name: str) -> BatchJobView:
        return self._jobs.submit(params, request.job_name or default_name, priority=request.priority)

    def _model_retrain(self, request: BatchTriggerRequest) -> BatchJobView:
        """A training like POST /api/models/train (``base_model_id``: fine-tune that model, like
        POST /api/models/{id}/update); the model_training row and its job are made together."""
        given = dict(request.parameters or {})
        base_model = given.pop("base_model_id", None)
        try:
            train = msgspec.convert(given, TrainRequest)
        except msgspec.ValidationError as exc:
            raise _invalid(f"bad model_retrain parameters: {exc}", {"job_type": "model_retrain"}) from None
        if base_model is not None and not isinstance(base_model, str):
            raise _invalid("base_model_id must be a model id", {"base_model_id": base_model})
        status = self._models.request_training(train, "update" if base_model else "train", base_model)
        job = self._jobs.get(status.batch_job_id) if status.batch_job_id else None
        assert job is not None, "a training request always queues its batch job"
        return job

    def _dataset_update(self, request: BatchTriggerRequest) -> BatchJobView:
        params = validate(BatchJobType.DATASET_UPDATE, request.parameters)
        assert isinstance(params, DatasetUpdate)
        if params.source == "roboflow":
            credentials = roboflow_credentials(self._settings)  # RoboflowNotConfigured: 400
            if params.workspace in (msgspec.UNSET, None):
                params.workspace = credentials.workspace
        elif params.source == "auto_collect":
            self._require_dataset(str(params.dataset_id))
        else:
            for path in [params.path, *(extra.path for extra in (params.with_paths or []))]:
                self._require_import_folder(str(path))
        return self._submit(params, request, f"dataset update ({params.source}) -> {params.dataset_id}")

    def _dataset_materialize(self, request: BatchTriggerRequest) -> BatchJobView:
        params = validate(BatchJobType.DATASET_MATERIALIZE, request.parameters)
        assert isinstance(params, DatasetMaterialize)
        with self._session_factory() as session:
            found = session.scalar(
                sa.select(DatasetVersion.id)
                .join(Dataset, DatasetVersion.dataset_id == Dataset.id)
                .where(Dataset.dataset_id == params.dataset_id, DatasetVersion.version == params.version)
            )
        if found is None:
            raise NotFound(
                f"dataset {params.dataset_id} has no version {params.version!r}",
                {"dataset_id": params.dataset_id, "version": params.version},
                code="DATASET_VERSION_NOT_FOUND",
            )
        train = params.train if params.train is not msgspec.UNSET else None
        job_id = queue_dataset_materialize(self._session_factory, params.dataset_id, params.version, train)
        job = self._jobs.get(job_id)
        assert job is not None
        return job

    def _model_evaluation(self, request: BatchTriggerRequest) -> BatchJobView:
        params = validate(BatchJobType.MODEL_EVALUATION, request.parameters)
        assert isinstance(params, ModelEvaluation)
        with self._session_factory() as session:
            if session.scalar(sa.select(Model.id).where(Model.model_id == params.model_id)) is None:
                raise NotFound(f"model {params.model_id!r} not found", {"model_id": params.model_id})
        return self._submit(params, request, f"evaluate {params.model_id}")

    def _require_dataset(self, dataset_id: str) -> None:
        with self._session_factory() as session:
            if session.scalar(sa.select(Dataset.id).where(Dataset.dataset_id == dataset_id)) is None:
                raise NotFound(
                    f"dataset {dataset_id!r} not found", {"dataset_id": dataset_id}, code="DATASET_NOT_FOUND"
                )

    def _require_import_folder(self, path_text: str) -> None:
        """The same rule as a JSON dataset import: only folders inside the import folders."""
        allowed = self._settings.import_dirs
        path = Path(path_text).expanduser()
        resolved = (path if path.is_absolute() else allowed[0] / path).resolve()
        if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
            raise Forbidden(
                "path must be inside one of the import folders (AIDOOR_DATASET_IMPORT_DIRS)",
                {"path": path_text, "import_dirs": [str(p) for p in allowed]},
                code="SOURCE_PATH_NOT_ALLOWED",
            )
        if not resolved.is_dir():
            raise _invalid(f"no folder {path_text!r}", {"path": path_text})

    # ------------------------------------------------------------------ cancel

    def cancel(self, job_id: int) -> BatchCancelResult:
        job = self.get(job_id)
        if JobStatus(job.status).is_finished:
            raise BatchJobFinished(f"batch job {job_id} is already {job.status}", {"id": job_id, "status": job.status})
        # The row first: whatever run still starts or ends now finds it finished and changes nothing.
        if not self._jobs.finish(job_id, JobStatus.CANCELLED, "cancelled by request", step="cancelled"):
            now = self.get(job_id)
            raise BatchJobFinished(f"batch job {job_id} is already {now.status}", {"id": job_id, "status": now.status})
        run_ids = [job.dagster_run_id] if job.dagster_run_id else []
        try:
            # A pending job's run may have been launched in the last sensor tick, before it claimed the row.
            tagged = self._dagster.runs_tagged(BATCH_JOB_TAG, str(job_id))
            run_ids += [run_id for run_id, status in tagged if status not in _RUN_FINISHED and run_id not in run_ids]
        except DagsterUnavailable as exc:
            # Harmless for a job no run claimed: a run launched for it finds the row finished and stops.
            log.info("batch job %s cancelled; its Dagster runs could not be listed: %s", job_id, exc)
        terminated, error = [], None
        for run_id in run_ids:
            try:
                self._dagster.terminate_run(run_id)
                terminated.append(run_id)
            except DagsterUnavailable as exc:
                error = str(exc)
                log.warning(
                    "batch job %s cancelled, but its Dagster run %s was not terminated: %s", job_id, run_id, exc
                )
        return BatchCancelResult(job=self.get(job_id), terminated_run_ids=terminated, termination_error=error)
