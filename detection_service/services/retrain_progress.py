"""Progress toward the next automatic retraining: the one rule that both the Dagster sensor
(``orchestration.sensors.retrain_on_new_labels_sensor``) and the API (``GET
/api/models/retrain/status``) use, so the page shows exactly the count that makes the sensor fire.

A verified label counts when its event is ``user_verified`` and was reclassified after the later
of the newest training (``model_training.created_at``) and the newest auto-collection request
(a ``dataset_update`` batch job with ``source: auto_collect``, whether the sensor or a person
queued it): labels a collection already took or a model already learned from do not count again.
Times are whole seconds, so a relabel in the very second a retrain is queued counts for neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.batch_jobs import BatchJobs
from schemas.db import BatchJob, DetectionEvent, ModelTraining
from schemas.enums import BatchJobType

__all__ = ["DATA_AND_MODEL_JOBS", "NewLabels", "new_verified_labels"]

# A retrain on new labels waits while any of these is queued or running.
DATA_AND_MODEL_JOBS = (
    BatchJobType.DATASET_UPDATE,
    BatchJobType.DATASET_MATERIALIZE,
    BatchJobType.MODEL_RETRAIN,
    BatchJobType.MODEL_EVALUATION,
)
# Dataset updates looked at for the newest auto-collection (JSON paths differ between SQLite and
# MySQL, so the source is checked in Python over the newest few).
_RECENT_UPDATES = 200


@dataclass(frozen=True, slots=True)
class NewLabels:
    count: int  # verified labels since ``since``
    since: datetime | None  # the newest training or auto-collection request; None: none yet
    queued: bool  # a dataset update, materialization, retrain or evaluation is pending or running


def _last_auto_collect(session: Session) -> datetime | None:
    rows = session.execute(
        sa.select(BatchJob.created_at, BatchJob.parameters)
        .where(BatchJob.job_type == BatchJobType.DATASET_UPDATE.value)
        .order_by(BatchJob.id.desc())
        .limit(_RECENT_UPDATES)
    )
    return next(
        (created for created, params in rows if isinstance(params, dict) and params.get("source") == "auto_collect"),
        None,
    )


def new_verified_labels(session_factory: sessionmaker[Session]) -> NewLabels:
    """The verified labels that count toward the next retraining (module docstring)."""
    with session_factory() as session:
        last_training = session.scalar(sa.select(sa.func.max(ModelTraining.created_at)))
        bounds = [t for t in (last_training, _last_auto_collect(session)) if t is not None]
        since = max(bounds) if bounds else None
        query = sa.select(sa.func.count()).select_from(DetectionEvent).where(DetectionEvent.user_verified.is_(True))
        if since is not None:
            query = query.where(DetectionEvent.reclassified_at > since)
        count = session.scalar(query) or 0
        queued = BatchJobs(session_factory).active_count(DATA_AND_MODEL_JOBS, session=session) > 0
    return NewLabels(count=count, since=since, queued=queued)
