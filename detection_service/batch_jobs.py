"""The one owner of ``batch_jobs``: the queue of background work and each job's state machine.

Every write to a ``batch_jobs`` row goes through :class:`BatchJobs` (tests/test_architecture.py
greps the tree for any other): the API and the services submit, the sensors start runs and close
them when the run ends, the assets and the training loop (``ml/progress.py``) record start,
progress and outcome, ``aidoor bootstrap-model`` runs one in its own process.

State machine::

    pending --start--> running --complete / fail / cancel--> completed / failed / cancelled
    pending --complete / fail / cancel--> (a run that never claimed its row, a row that cannot run,
                                            a request cancelled before it started)

A finished job (completed, failed, cancelled) is frozen: every later transition or progress
write is refused the same way, by returning ``False`` (``start`` returns ``None``) and changing
nothing, so a run that ends after its job was cancelled cannot mark it completed, and the
run-status sensors may close what the run's own code already closed.

Parameters are typed (``schemas.batch_jobs``: a msgspec tagged union, one Struct per
``BatchJobType``) and validated on submit: an unknown job type or bad parameters raise
``detection_service.errors.Invalid`` (400 in the API) and no row is written.

Layer: the database layer, next to ``detection_service/database.py`` (below ``ml`` and the
services). It imports only ``schemas``, SQLAlchemy and ``detection_service.errors``, so the
training progress writer in ``ml/`` may use it as well as the services, the Dagster assets and
sensors above them. Each method opens its own transaction, or joins the caller's with
``session=`` when the job row must change together with another row (a training request creates
its ``model_training`` row and its job at once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.errors import Conflict, Invalid, NotFound
from schemas.batch_jobs import (
    BatchJobView,
    DatasetMaterialize,
    DatasetUpdate,
    JobParameters,
    ModelRetrain,
    encode_parameters,
    job_type_of,
    parse_parameters,
)
from schemas.db import BatchJob, ModelTraining, utcnow
from schemas.enums import BatchJobType, JobStatus

# The Dagster run tag that ties a run to the batch_jobs row it executes (the sensor sets it; the
# code a run executes reads its job id from it: ``batch_job_id_of(context.run.tags)``).
BATCH_JOB_TAG = "aidoor/batch_job_id"
# current_step of a job that `aidoor bootstrap-model` runs in its own process (no sensor run).
IN_PROCESS = "running in `aidoor bootstrap-model`"
ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)
# submit_once: one check-then-insert at a time in this process (the service is the only submitter
# of such jobs), so two requests at once cannot both find nothing and both queue.
_SUBMIT_ONCE_LOCK = threading.Lock()
# Active rows compared per submit_once (their parameters are matched in Python: JSON paths differ
# between SQLite and MySQL); far more than are ever pending or running at once.
_ACTIVE_SCAN = 500
# Job types whose row names the model_training row it drives (ModelRetrain, or under "train").
TRAINING_JOB_TYPES = (BatchJobType.MODEL_RETRAIN, BatchJobType.DATASET_MATERIALIZE)
_KEEP: Any = object()


class BatchJobNotFound(NotFound):
    code = "BATCH_JOB_NOT_FOUND"


class BatchJobFinished(Conflict):
    """The job is completed, failed or cancelled already: it does not run (again)."""

    code = "BATCH_JOB_FINISHED"


def validate(job_type: str, parameters: dict[str, Any] | None) -> JobParameters:
    """The typed parameters of a job, or ``Invalid`` (unknown job type, bad parameters)."""
    try:
        return parse_parameters(job_type, parameters)
    except msgspec.ValidationError as exc:
        raise Invalid(f"bad {job_type} parameters: {exc}", {"job_type": str(job_type)}, code="INVALID_JOB") from None


def batch_job_id_of(run_tags: Mapping[str, str]) -> int | None:
    """The batch job a Dagster run executes (its ``BATCH_JOB_TAG``); None for a run nobody queued
    (a schedule, a launch from the UI)."""
    value = run_tags.get(BATCH_JOB_TAG)
    return int(value) if value and value.isdigit() else None


def training_id_of(parameters: JobParameters | None) -> int | None:
    """The model_training row a job drives (model_retrain; dataset_materialize with ``train``)."""
    if isinstance(parameters, ModelRetrain):
        return parameters.training_id
    if isinstance(parameters, (DatasetMaterialize, DatasetUpdate)) and parameters.train:
        training_id = parameters.train.training_id
        return training_id if isinstance(training_id, int) else None
    return None


def _typed(job: BatchJob) -> JobParameters | None:
    try:
        return parse_parameters(job.job_type, job.parameters)
    except msgspec.ValidationError:
        return None


class BatchJobs:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    @contextmanager
    def _transaction(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with self._session_factory.begin() as own:
                yield own

    def _open(self, session: Session, job_id: int) -> BatchJob | None:
        """The row if it may still change (exists and is not finished)."""
        job = session.get(BatchJob, job_id)
        return job if job is not None and not JobStatus(job.status).is_finished else None

    # ------------------------------------------------------------------ queue

    def submit(
        self, parameters: JobParameters, name: str, priority: int = 5, *, session: Session | None = None
    ) -> BatchJobView:
        """Queue a job (``pending``); the batch_job_sensor turns it into one Dagster run."""
        job_type = job_type_of(parameters)
        stored = encode_parameters(validate(job_type, encode_parameters(parameters)))  # types checked too
        with self._transaction(session) as tx:
            job = BatchJob(
                job_type=job_type.value,
                job_name=name[:100],
                parameters=stored,
                priority=priority,
                status=JobStatus.PENDING,
                scheduled_at=utcnow(),
            )
            tx.add(job)
            tx.flush()
            return BatchJobView.of(job)

    def submit_once(self, parameters: JobParameters, name: str, priority: int = 5) -> tuple[BatchJobView, bool]:
        """The pending or running job of the same type with the same parameters, else a new one:
        ``(job, submitted)``. For work that means the same thing however often it is asked for
        (a report partition): a second request while the first is queued or running gets that job."""
        job_type = job_type_of(parameters)
        stored = encode_parameters(validate(job_type, encode_parameters(parameters)))
        with _SUBMIT_ONCE_LOCK:
            existing = self.active_like(job_type, stored)
            if existing is not None:
                return existing, False
            return self.submit(parameters, name, priority=priority), True

    def active_like(self, job_type: BatchJobType, parameters: dict[str, Any]) -> BatchJobView | None:
        """The oldest pending or running job of ``job_type`` whose stored parameters equal these."""
        with self._session_factory() as session:
            for job in session.scalars(
                sa.select(BatchJob)
                .where(BatchJob.job_type == job_type.value, BatchJob.status.in_(ACTIVE))
                .order_by(BatchJob.id)
                .limit(_ACTIVE_SCAN)
            ):
                if (job.parameters or {}) == parameters:
                    return BatchJobView.of(job)
        return None

    def get(self, job_id: int) -> BatchJobView | None:
        with self._session_factory() as session:
            job = session.get(BatchJob, job_id)
            return BatchJobView.of(job) if job else None

    def list(self, status: str | None = None, limit: int = 50) -> list[BatchJobView]:
        query = sa.select(BatchJob).order_by(BatchJob.id.desc()).limit(limit)
        if status:
            query = query.where(BatchJob.status == status)
        with self._session_factory() as session:
            return [BatchJobView.of(job) for job in session.scalars(query)]

    def parameters(self, job_id: int) -> JobParameters:
        with self._session_factory() as session:
            job = session.get(BatchJob, job_id)
            if job is None:
                raise BatchJobNotFound(f"batch job {job_id} not found", {"id": job_id})
            return validate(job.job_type, job.parameters)

    def active_count(self, job_types: Iterable[str] | None = None, *, session: Session | None = None) -> int:
        """Jobs pending or running (of these types)."""
        query = sa.select(sa.func.count()).select_from(BatchJob).where(BatchJob.status.in_(ACTIVE))
        if job_types is not None:
            query = query.where(BatchJob.job_type.in_([str(t) for t in job_types]))
        with self._transaction(session) as tx:
            return tx.scalar(query) or 0

    @staticmethod
    def waiting_for_a_run(session: Session, limit: int = 20) -> list[BatchJob]:
        """Pending rows no run has claimed (nor `aidoor bootstrap-model`), by priority, oldest first.
        The rows are for reading: change them through the transitions below."""
        return list(
            session.scalars(
                sa.select(BatchJob)
                .where(
                    BatchJob.status == JobStatus.PENDING,
                    BatchJob.dagster_run_id.is_(None),
                    sa.or_(BatchJob.current_step.is_(None), BatchJob.current_step != IN_PROCESS),
                )
                .order_by(BatchJob.priority, BatchJob.id)
                .limit(limit)
            )
        )

    @staticmethod
    def of_training(session: Session, training_id: int) -> BatchJob | None:
        """The job that drives a model_training row (for reading)."""
        # JSON paths differ between SQLite and MySQL: filter in Python over the few training jobs.
        jobs = session.scalars(
            sa.select(BatchJob)
            .where(BatchJob.job_type.in_([t.value for t in TRAINING_JOB_TYPES]))
            .order_by(BatchJob.id.desc())
            .limit(200)
        )
        return next((job for job in jobs if training_id_of(_typed(job)) == training_id), None)

    # ------------------------------------------------------------------ running a job

    @contextmanager
    def running(self, job_id: int | None, run_id: str | None, step: str | None = None) -> Iterator[JobRun]:
        """The bookkeeping of the code that executes a job (the Dagster assets and ops): starts it
        (``BatchJobNotFound`` / ``BatchJobFinished`` when it cannot run), fails it with the
        exception that leaves the block (which propagates), completes it when the block ends
        without having closed it. ``job_id=None`` (work run without a queued job): no bookkeeping."""
        parameters = None
        if job_id is not None:
            parameters = self.start(job_id, run_id, step)
            if parameters is None:
                with self._session_factory() as session:
                    job = session.get(BatchJob, job_id)
                    if job is None:
                        raise BatchJobNotFound(f"batch job {job_id} not found", {"id": job_id})
                    raise BatchJobFinished(f"batch job {job_id} is already {job.status}", {"id": job_id})
        run = JobRun(self, job_id, parameters)
        try:
            yield run
        except Exception as exc:
            if job_id is not None:
                self.fail(job_id, f"{type(exc).__name__}: {exc}")
            raise
        if job_id is not None and not run.closed:
            self.complete(job_id)

    # ------------------------------------------------------------------ transitions

    def start(
        self, job_id: int, run_id: str | None, step: str | None = None, *, session: Session | None = None
    ) -> JobParameters | None:
        """pending/running -> running, claimed by run ``run_id`` (a running job may be claimed
        again: the in-process bootstrap, then its training). The job's typed parameters, or
        ``None`` when refused (no such job, or finished)."""
        with self._transaction(session) as tx:
            job = self._open(tx, job_id)
            if job is None:
                return None
            job.status, job.started_at = JobStatus.RUNNING, job.started_at or utcnow()
            job.dagster_run_id = run_id or job.dagster_run_id
            if step is not None:
                job.current_step = step[:100]
            return validate(job.job_type, job.parameters)

    def progress(
        self,
        job_id: int,
        percentage: int | None = None,
        step: str | None = None,
        *,
        result: Any = _KEEP,
        session: Session | None = None,
    ) -> bool:
        """Record how far a job is (percentage, current step, a partial result)."""
        with self._transaction(session) as tx:
            job = self._open(tx, job_id)
            if job is None:
                return False
            if percentage is not None:
                job.progress_percentage = max(0, min(100, int(percentage)))
            if step is not None:
                job.current_step = step[:100]
            if result is not _KEEP:
                job.result = result
            return True

    def complete(
        self, job_id: int, result: Any = _KEEP, step: str | None = "done", *, session: Session | None = None
    ) -> bool:
        return self._close(job_id, JobStatus.COMPLETED, result=result, step=step, session=session)

    def fail(self, job_id: int, error: str, step: str | None = None, *, session: Session | None = None) -> bool:
        return self._close(job_id, JobStatus.FAILED, error=error, step=step, session=session)

    def cancel(
        self, job_id: int, reason: str | None = None, step: str | None = "cancelled", *, session: Session | None = None
    ) -> bool:
        return self._close(job_id, JobStatus.CANCELLED, error=reason, step=step, session=session)

    def finish(
        self,
        job_id: int,
        status: JobStatus,
        error: str | None = None,
        run_id: str | None = None,
        step: str | None = None,
    ) -> bool:
        """Close a job (and the training it drives) when its run ended and the run's own code did
        not: the run failed, was cancelled, or its worker died; or when the Batch API cancels it
        (the training loop polls its row and stops). False if it was finished already."""
        with self._session_factory.begin() as session:
            job = session.get(BatchJob, job_id)
            if not self._close(job_id, status, error=error, run_id=run_id, step=step, session=session):
                return False
            training_id = training_id_of(_typed(job))
            training = session.get(ModelTraining, training_id) if training_id else None
            if training is not None and not JobStatus(training.status).is_finished:
                training.status, training.completed_at = status, utcnow()
                if error:
                    training.error_message = error[:2000]
            return True

    def _close(
        self,
        job_id: int,
        status: JobStatus,
        *,
        error: str | None = None,
        step: str | None = None,
        result: Any = _KEEP,
        run_id: str | None = None,
        session: Session | None = None,
    ) -> bool:
        assert JobStatus(status).is_finished
        with self._transaction(session) as tx:
            job = self._open(tx, job_id)
            if job is None:
                return False
            job.status, job.completed_at = status, utcnow()
            job.dagster_run_id = job.dagster_run_id or run_id
            if status == JobStatus.COMPLETED:
                job.progress_percentage = 100
            if error:
                job.error_message = error[:2000]
            if step is not None:
                job.current_step = step[:100]
            if result is not _KEEP:
                job.result = result
            return True


class JobRun:
    """A job claimed by the code that runs it (``BatchJobs.running``); without a job id every
    write is a no-op."""

    def __init__(self, jobs: BatchJobs, job_id: int | None, parameters: JobParameters | None) -> None:
        self.jobs, self.id, self.parameters = jobs, job_id, parameters
        self.closed = False

    def progress(
        self, percentage: int | None = None, step: str | None = None, *, session: Session | None = None
    ) -> bool:
        return self.id is not None and self.jobs.progress(self.id, percentage, step, session=session)

    def complete(self, result: Any = _KEEP, step: str | None = "done", *, session: Session | None = None) -> bool:
        self.closed = True
        return self.id is not None and self.jobs.complete(self.id, result, step, session=session)
