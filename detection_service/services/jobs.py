"""Background work requested by the API, queued in ``batch_jobs``.

The service never calls Dagster synchronously to start work: it writes a ``pending`` row here,
and the ``batch_job_sensor`` in orchestration/sensors.py turns each pending row into exactly one
Dagster run (run_key = the row id). With Dagster down, rows wait; nothing is lost and nothing
runs twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import BatchJob, ModelTraining, utcnow
from schemas.enums import BatchJobType, JobStatus


class BatchJobView(msgspec.Struct, kw_only=True):
    id: int
    job_type: str
    job_name: str
    status: str
    priority: int
    parameters: dict[str, Any] | None
    progress_percentage: int
    current_step: str | None
    result: Any
    error_message: str | None
    dagster_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, job: BatchJob) -> BatchJobView:
        return cls(
            id=job.id, job_type=job.job_type, job_name=job.job_name, status=job.status, priority=job.priority,
            parameters=job.parameters, progress_percentage=job.progress_percentage, current_step=job.current_step,
            result=job.result, error_message=job.error_message, dagster_run_id=job.dagster_run_id,
            created_at=job.created_at, started_at=job.started_at, completed_at=job.completed_at,
        )


class JobService:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def submit(self, job_type: str, job_name: str, parameters: dict[str, Any], priority: int = 5) -> BatchJobView:
        with self._session_factory.begin() as session:
            job = BatchJob(
                job_type=job_type, job_name=job_name[:100], parameters=parameters, priority=priority,
                status=JobStatus.PENDING, scheduled_at=utcnow(),
            )
            session.add(job)
            session.flush()
            return BatchJobView.of(job)

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

    def finish(self, job_id: int, status: JobStatus, error: str | None, run_id: str | None = None) -> bool:
        """Close a batch job (and the training it drives) that its run's own code did not close:
        the run failed, was cancelled, or its worker died. False if it was already finished."""
        with self._session_factory.begin() as session:
            job = session.get(BatchJob, job_id)
            if job is None or JobStatus(job.status).is_finished:
                return False
            job.status, job.completed_at = status, utcnow()
            job.dagster_run_id = job.dagster_run_id or run_id
            if error:
                job.error_message = error[:2000]
            params = job.parameters or {}
            # model_retrain jobs carry training_id; dataset_materialize jobs carry it under "train".
            training_id = params.get("training_id") or (params.get("train") or {}).get("training_id")
            training = session.get(ModelTraining, int(training_id)) if training_id else None
            if training is not None and not JobStatus(training.status).is_finished:
                training.status, training.completed_at = status, utcnow()
                if error:
                    training.error_message = error[:2000]
            return True


def queue_dataset_materialize(
    session_factory: sessionmaker[Session], dataset_id: str, version: str, train: dict[str, Any] | None = None
) -> int:
    """Queue the Dagster materialization of a freshly stored dataset version (its statistics and
    data.yaml assets) and, with ``train``, a training + gated deploy on it. Returns the batch job id.

    ``train`` holds TrainRequest-like fields (profile, epochs, auto_deploy, ...); a model_training
    row is created now so the training is visible in /api/models/train/status at once.
    """
    from schemas.db import Dataset  # local: keeps this module light for the sensor

    with session_factory.begin() as session:
        parameters: dict[str, Any] = {"dataset_id": dataset_id, "version": version}
        if train is not None:
            dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == dataset_id))
            training = ModelTraining(
                dataset_id=dataset.id if dataset else None, job_name=f"train on {dataset_id} {version}"[:100],
                job_type=train.get("job_type", "train"), status=JobStatus.PENDING,
                epochs=train.get("epochs") or 0, batch_size=train.get("batch_size") or 0,
                confidence_threshold=train.get("confidence_threshold", 0.5),
                sensitivity=train.get("sensitivity", "medium"),
            )
            session.add(training)
            session.flush()
            parameters["train"] = {**train, "training_id": training.id}
        job = BatchJob(
            job_type=BatchJobType.DATASET_MATERIALIZE, job_name=f"dataset {dataset_id} {version}"
            + (" + training" if train is not None else ""), status=JobStatus.PENDING,
            priority=3, parameters=parameters, scheduled_at=utcnow(),
        )
        session.add(job)
        session.flush()
        return job.id
