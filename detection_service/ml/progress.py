"""Writes training progress into ``model_training`` / ``batch_jobs`` and reads cancel requests.

Both the Dagster asset and `aidoor bootstrap-model` train through this, so
``GET /api/models/train/status`` shows the same live numbers whoever runs the training.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from detection_service.ml.training import EpochProgress
from schemas.db import BatchJob, ModelTraining, utcnow
from schemas.enums import JobStatus

CANCEL_POLL_S = 2.0


class TrainingProgress:
    def __init__(
        self, session_factory: sessionmaker[Session], training_id: int | None, batch_job_id: int | None = None
    ) -> None:
        self._session_factory = session_factory
        self.training_id = training_id
        self.batch_job_id = batch_job_id
        self._last_poll = 0.0
        self._cancelled = False

    def _update(self, training: dict[str, Any] | None = None, job: dict[str, Any] | None = None) -> None:
        with self._session_factory.begin() as session:
            if training and self.training_id is not None:
                row = session.get(ModelTraining, self.training_id)
                if row is not None:
                    for key, value in training.items():
                        setattr(row, key, value)
            if job and self.batch_job_id is not None:
                row = session.get(BatchJob, self.batch_job_id)
                if row is not None:
                    for key, value in job.items():
                        setattr(row, key, value)

    def started(self, run_id: str | None) -> None:
        now = utcnow()
        self._update(
            {"status": JobStatus.RUNNING, "started_at": now, "dagster_run_id": run_id, "current_epoch": 0,
             "progress_percentage": 0, "error_message": None},
            {"status": JobStatus.RUNNING, "started_at": now, "dagster_run_id": run_id, "current_step": "training"},
        )

    def on_epoch(self, progress: EpochProgress) -> None:
        loss = sum(progress.losses.values()) if progress.losses else None
        training: dict[str, Any] = {
            "current_epoch": progress.epoch,
            "progress_percentage": int(progress.progress_pct),
            "training_loss": Decimal(f"{loss:.6f}") if loss is not None else None,
            "metrics": {"epoch": progress.epoch, "losses": progress.losses, "val": progress.metrics,
                        "elapsed_s": round(progress.elapsed_s, 1)},
        }
        self._update(training, {"progress_percentage": int(progress.progress_pct),
                                "current_step": f"epoch {progress.epoch}/{progress.epochs}"})

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
        self._update(training, {"current_step": name[:100], **({"progress_percentage": pct} if pct else {})})

    def finished(self, model_pk: int | None, metrics: dict[str, Any], wall_s: float, result: dict[str, Any]) -> None:
        now = utcnow()
        map50 = metrics.get("map50")
        self._update(
            {"status": JobStatus.COMPLETED, "completed_at": now, "model_id": model_pk, "progress_percentage": 100,
             "final_accuracy": Decimal(f"{map50:.4f}") if map50 is not None else None,
             "training_time": round(wall_s), "metrics": metrics},
            # The batch job completes when its whole run ends (evaluation, deploy): the run status
            # sensor records that.
            {"progress_percentage": 90, "current_step": "model registered", "result": result},
        )

    def failed(self, error: str, cancelled: bool = False) -> None:
        now = utcnow()
        status = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
        self._update(
            {"status": status, "completed_at": now, "error_message": error[:2000]},
            {"status": status, "completed_at": now, "error_message": error[:2000], "current_step": str(status)},
        )
