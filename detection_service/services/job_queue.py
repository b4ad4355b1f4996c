"""Background work requested by the API, queued in ``batch_jobs`` (the service face of
``detection_service.batch_jobs``, which owns the table and the job state machine).

The service never calls Dagster synchronously to start work: it writes a ``pending`` row, and
the ``batch_job_sensor`` in orchestration/sensors.py turns each pending row into exactly one
Dagster run (run_key = the row id). With Dagster down, rows wait; nothing is lost and nothing
runs twice.
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.batch_jobs import BatchJobs, validate
from detection_service.services.settings import SettingsService
from schemas.batch_jobs import BatchJobView, DatasetMaterialize, JobParameters, TrainParameters
from schemas.db import Dataset, ModelTraining
from schemas.enums import JobStatus, TrainingJobType

__all__ = ["BatchJobView", "JobService", "queue_dataset_materialize"]


class JobService(BatchJobs):
    """The batch-job owner, plus submission from plain (API) values."""

    def submit(  # type: ignore[override]
        self,
        job_type: str | JobParameters,
        job_name: str,
        parameters: dict[str, Any] | None = None,
        priority: int = 5,
        *,
        session: Session | None = None,
    ) -> BatchJobView:
        """Queue ``job_type`` with ``parameters`` (validated: ``Invalid`` when they do not fit), or
        an already typed ``JobParameters`` value."""
        if not isinstance(job_type, str):
            if parameters is not None:
                raise TypeError("typed job parameters come alone")
            return super().submit(job_type, job_name, priority, session=session)
        typed = validate(job_type, parameters)
        return super().submit(typed, job_name, priority, session=session)

    def queue_dataset_materialize(
        self, dataset_id: str, version: str, train: TrainParameters | dict[str, Any] | None = None
    ) -> int:
        return queue_dataset_materialize(self._session_factory, dataset_id, version, train)


def queue_dataset_materialize(
    session_factory: sessionmaker[Session],
    dataset_id: str,
    version: str,
    train: TrainParameters | dict[str, Any] | None = None,
) -> int:
    """Queue the Dagster materialization of a freshly stored dataset version (its statistics and
    data.yaml assets) and, with ``train``, a training + gated deploy on it. Returns the batch job id.

    ``train`` holds TrainRequest-like fields (profile, epochs, auto_deploy, ...); a model_training
    row is created now so the training is visible in /api/models/train/status at once.
    """
    if isinstance(train, dict):
        train = validate("dataset_materialize", {"dataset_id": dataset_id, "version": version, "train": train}).train
    # No device asked for: the training settings' device, fixed now with the job.
    if train is not None and train.device is msgspec.UNSET:
        train = msgspec.structs.replace(train, device=SettingsService(session_factory).get("training").device)
    with session_factory.begin() as session:
        parameters = DatasetMaterialize(dataset_id=dataset_id, version=version)
        if train is not None:
            dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == dataset_id))
            training = ModelTraining(
                dataset_id=dataset.id if dataset else None,
                job_name=f"train on {dataset_id} {version}"[:100],
                job_type=_given(train.job_type, TrainingJobType.TRAIN),
                status=JobStatus.PENDING,
                epochs=_given(train.epochs, None) or 0,
                batch_size=_given(train.batch_size, None) or 0,
                confidence_threshold=_given(train.confidence_threshold, 0.5),
                sensitivity=_given(train.sensitivity, "medium"),
            )
            session.add(training)
            session.flush()
            parameters.train = msgspec.structs.replace(train, training_id=training.id)
        name = f"dataset {dataset_id} {version}" + (" + training" if train is not None else "")
        return BatchJobs(session_factory).submit(parameters, name, priority=3, session=session).id


def _given(value: Any, default: Any) -> Any:
    return default if value is msgspec.UNSET else value
