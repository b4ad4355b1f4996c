"""Writes training progress into ``model_training`` (and, through the batch-job owner
``detection_service.batch_jobs``, into its ``batch_jobs`` row) and reads cancel requests.

Both the Dagster asset and `aidoor bootstrap-model` train through this, so
``GET /api/models/train/status`` shows the same live numbers whoever runs the training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from detection_service.batch_jobs import BatchJobs
from detection_service.ml.training import EpochProgress, TrainingCancelled
from schemas.db import ModelTraining, utcnow
from schemas.enums import JobStatus

CANCEL_POLL_S = 2.0


class TrainingProgress:
    def __init__(
        self, session_factory: sessionmaker[Session], training_id: int | None, batch_job_id: int | None = None
    ) -> None:
        self._session_factory = session_factory
        self._jobs = BatchJobs(session_factory)
        self.training_id = training_id
        self.batch_job_id = batch_job_id
        self._last_poll = 0.0
        self._cancelled = False

    def _update(self, training: dict[str, Any] | None = None, job: Callable[..., Any] | None = None) -> None:
        """One transaction: the training row's ``training`` values, and ``job(batch_job_id,
        session=...)``, a transition of the batch-job owner (refused once the job is finished)."""
        with self._session_factory.begin() as session:
            if training and self.training_id is not None:
                row = session.get(ModelTraining, self.training_id)
                if row is not None:
                    for key, value in training.items():
                        setattr(row, key, value)
            if job is not None and self.batch_job_id is not None:
                job(self.batch_job_id, session=session)

    def started(self, run_id: str | None) -> None:
        """Marks the training running; TrainingCancelled when it was cancelled (or otherwise
        finished) before its run started: a cancelled request never trains."""
        if self.training_id is not None:
            with self._session_factory() as session:
                row = session.get(ModelTraining, self.training_id)
                if row is not None and JobStatus(row.status).is_finished:
                    raise TrainingCancelled(f"training {self.training_id} is already {row.status}")
        now = utcnow()
        self._update(
            {
                "status": JobStatus.RUNNING,
                "started_at": now,
                "dagster_run_id": run_id,
                "current_epoch": 0,
                "progress_percentage": 0,
                "error_message": None,
            },
            partial(self._jobs.start, run_id=run_id, step="training"),
        )

    def on_epoch(self, progress: EpochProgress) -> None:
        loss = sum(progress.losses.values()) if progress.losses else None
        training: dict[str, Any] = {
            "current_epoch": progress.epoch,
            "progress_percentage": int(progress.progress_pct),
            "training_loss": Decimal(f"{loss:.6f}") if loss is not None else None,
            "metrics": {
                "epoch": progress.epoch,
                "losses": progress.losses,
                "val": progress.metrics,
                "elapsed_s": round(progress.elapsed_s, 1),
            },
        }
        self._update(
            training,
            partial(
                self._jobs.progress,
                percentage=int(progress.progress_pct),
                step=f"epoch {progress.epoch}/{progress.epochs}",
            ),
        )

    def should_cancel(self) -> bool:
        """True once the API marked the training cancelled (polled at most every 2 s)."""
        if self._cancelled or self.training_id is None:
            return self._cancelled
        now = time.monotonic()
        if now - self._last_poll < CANCEL_POLL_S:
            return False
        self._last_poll = now
        with self._session_factory() as session:
            row = session.get(ModelTraining, self.training_id)
            self._cancelled = row is not None and row.status == JobStatus.CANCELLED
        return self._cancelled

    def step(self, name: str, pct: int | None = None) -> None:
        training = {"progress_percentage": pct} if pct is not None else None
        self._update(training, partial(self._jobs.progress, percentage=pct or None, step=name))

    def finished(self, model_pk: int | None, metrics: dict[str, Any], wall_s: float, result: dict[str, Any]) -> None:
        now = utcnow()
        map50 = metrics.get("map50")
        self._update(
            {
                "status": JobStatus.COMPLETED,
                "completed_at": now,
                "model_id": model_pk,
                "progress_percentage": 100,
                "final_accuracy": Decimal(f"{map50:.4f}") if map50 is not None else None,
                "training_time": round(wall_s),
                "metrics": metrics,
            },
            # The batch job completes when its whole run ends (evaluation, deploy): the run status
            # sensor records that.
            partial(self._jobs.progress, percentage=90, step="model registered", result=result),
        )

    def failed(self, error: str, cancelled: bool = False) -> None:
        now = utcnow()
        status = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
        job = (
            partial(self._jobs.cancel, reason=error, step=str(status))
            if cancelled
            else partial(self._jobs.fail, error=error, step=str(status))
        )
        self._update({"status": status, "completed_at": now, "error_message": error[:2000]}, job)
