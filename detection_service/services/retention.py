"""Retention of event captures: storage settings ``max_days``, ``max_size_gb`` (``auto_cleanup``
switches the nightly Dagster schedule on and off; the API's clean-up always runs).

Crash-safe order: the database rows of a batch of events go first (one transaction), their
objects after. A crash in between leaves objects without rows, never rows pointing at missing
images; those objects are orphans that the next run's sweep deletes (an object under
``events/.../<event_id>/`` whose event row is gone). Events still being recorded (no ``ended_at``,
detected in the last IN_FLIGHT) are never touched: the pipeline is still adding their captures.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.services.settings import SettingsService
from detection_service.storage import ObjectInfo, ObjectStore, StorageError
from detection_service.storage.keys import EVENTS_PREFIX, event_id_of
from schemas.db import DetectionEvent, EventImage, NotificationHistory, SystemLog, SystemStatusLog, utcnow
from schemas.events import CleanupReport
from schemas.settings import StorageSettings

log = logging.getLogger(__name__)

IN_FLIGHT = timedelta(minutes=10)
BATCH = 500
GB = 1024**3


def _chunks(values: Sequence, size: int = BATCH) -> Iterable[Sequence]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class RetentionService:
    def __init__(self, session_factory: sessionmaker[Session], store: ObjectStore, settings: SettingsService) -> None:
        self.session_factory = session_factory
        self.store = store
        self.settings = settings

    def cleanup_images(self, max_days: int | None = None, max_size_gb: float | None = None,
                       now: datetime | None = None) -> CleanupReport:  # fmt: skip
        """Delete events older than max_days, then the oldest ones while captures exceed
        max_size_gb, then orphans (objects without an event row, image rows without an object)."""
        started = time.monotonic()
        storage: StorageSettings = self.settings.get("storage")  # type: ignore[assignment]
        max_days = storage.max_days if max_days is None else max_days
        max_size_gb = storage.max_size_gb if max_size_gb is None else max_size_gb
        now = now or utcnow()
        report = CleanupReport(type="images", max_days=max_days, max_size_gb=max_size_gb)

        expired = self._expired_ids(now - timedelta(days=max_days), now)
        self._delete_events(expired, report)

        # One listing of the captures serves the quota and both orphan sweeps.
        listed_at = utcnow()
        objects: dict[int, list[ObjectInfo]] = defaultdict(list)
        stray = 0
        for info in self.store.list(EVENTS_PREFIX):
            event_id = event_id_of(info.key)
            if event_id is None:
                stray += 1
            else:
                objects[event_id].append(info)
        existing = self._existing_ids(sorted(objects))
        for event_id in sorted(set(objects) - existing):
            report.orphan_objects_deleted += self._delete_objects(event_id, objects.pop(event_id), report)
        keys = {info.key for infos in objects.values() for info in infos}
        report.orphan_rows_deleted = self._delete_rows_without_object(keys, listed_at - IN_FLIGHT)
        sizes = {event_id: sum(info.size for info in infos) for event_id, infos in objects.items()}

        quota = int(max_size_gb * GB)
        total = sum(sizes.values())
        if total > quota:
            victims = []
            for event_id in self._oldest_ids(now):
                if total <= quota:
                    break
                victims.append(event_id)
                total -= sizes.get(event_id, 0)
            self._delete_events(victims, report, objects)
        report.events_kept = len(self._existing_ids(sorted(sizes)))
        report.bytes_kept = max(total, 0)
        if stray:
            log.info("clean-up: %d objects under %s are not event captures; left alone", stray, EVENTS_PREFIX)
        report.duration_ms = round((time.monotonic() - started) * 1000)
        log.info("clean-up (images): %s", report)
        return report

    def cleanup_logs(self, max_days: int | None = None, now: datetime | None = None) -> CleanupReport:
        storage: StorageSettings = self.settings.get("storage")  # type: ignore[assignment]
        max_days = storage.max_days if max_days is None else max_days
        cutoff = (now or utcnow()) - timedelta(days=max_days)
        report = CleanupReport(type="logs", max_days=max_days, max_size_gb=storage.max_size_gb)
        started = time.monotonic()
        with self.session_factory.begin() as session:
            report.logs_deleted += session.execute(sa.delete(SystemLog).where(SystemLog.created_at < cutoff)).rowcount
            report.logs_deleted += session.execute(
                sa.delete(SystemStatusLog).where(SystemStatusLog.logged_at < cutoff)
            ).rowcount
        report.duration_ms = round((time.monotonic() - started) * 1000)
        return report

    # -- steps ----------------------------------------------------------------------------

    def _not_in_flight(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.or_(DetectionEvent.ended_at.is_not(None), DetectionEvent.detected_at < now - IN_FLIGHT)

    def _expired_ids(self, cutoff: datetime, now: datetime) -> list[int]:
        with self.session_factory() as session:
            return list(session.scalars(
                sa.select(DetectionEvent.id)
                .where(DetectionEvent.detected_at < cutoff, self._not_in_flight(now))
                .order_by(DetectionEvent.detected_at, DetectionEvent.id)
            ))  # fmt: skip

    def _oldest_ids(self, now: datetime) -> Iterable[int]:
        after: tuple[datetime, int] | None = None
        while True:
            with self.session_factory() as session:
                query = sa.select(DetectionEvent.detected_at, DetectionEvent.id).where(self._not_in_flight(now))
                if after is not None:
                    query = query.where(sa.tuple_(DetectionEvent.detected_at, DetectionEvent.id) > after)
                rows = session.execute(query.order_by(DetectionEvent.detected_at, DetectionEvent.id).limit(BATCH)).all()
            if not rows:
                return
            for detected_at, event_id in rows:
                yield event_id
            after = tuple(rows[-1])  # type: ignore[assignment]

    def _existing_ids(self, ids: Sequence[int]) -> set[int]:
        found: set[int] = set()
        with self.session_factory() as session:
            for chunk in _chunks(ids):
                found.update(session.scalars(sa.select(DetectionEvent.id).where(DetectionEvent.id.in_(chunk))))
        return found

    def _delete_events(self, ids: Sequence[int], report: CleanupReport,
                       objects: dict[int, list[ObjectInfo]] | None = None) -> None:  # fmt: skip
        for chunk in _chunks(ids):
            with self.session_factory.begin() as session:
                prefixes = {
                    event_id: key.rsplit("/", 1)[0] + "/"
                    for event_id, key in session.execute(
                        sa.select(EventImage.event_id, EventImage.image_path).where(EventImage.event_id.in_(chunk))
                    )
                }
                session.execute(
                    sa.update(NotificationHistory).where(NotificationHistory.event_id.in_(chunk)).values(event_id=None)
                )
                report.images_deleted += session.execute(
                    sa.delete(EventImage).where(EventImage.event_id.in_(chunk))
                ).rowcount
                report.events_deleted += session.execute(
                    sa.delete(DetectionEvent).where(DetectionEvent.id.in_(chunk))
                ).rowcount
            # Rows are gone (committed); now the objects. A failure here only leaves orphans,
            # and an event whose objects are not known here is swept as an orphan later.
            for event_id in chunk:
                if objects is not None and event_id in objects:
                    self._delete_objects(event_id, objects.pop(event_id), report)
                elif event_id in prefixes:
                    try:
                        infos = list(self.store.list(prefixes[event_id]))
                    except StorageError as exc:
                        log.warning("clean-up: objects of event %s stay for the next run: %s", event_id, exc)
                        continue
                    self._delete_objects(event_id, infos, report)

    def _delete_objects(self, event_id: int, infos: list[ObjectInfo], report: CleanupReport) -> int:
        """Delete the objects of one event (captures and their label files)."""
        deleted = 0
        for info in infos:
            try:
                self.store.delete(info.key)
            except StorageError as exc:
                log.warning("clean-up: %s of event %s stays for the next run: %s", info.key, event_id, exc)
                continue
            deleted += 1
            report.objects_deleted += 1
            report.bytes_freed += info.size
        return deleted

    def _delete_rows_without_object(self, keys: set[str], older_than: datetime) -> int:
        """Image rows of settled events whose capture is gone from the store (deleted by hand, or a
        lost bucket): the API would hand out links that 404."""
        deleted = 0
        with self.session_factory.begin() as session:
            rows = session.execute(
                sa.select(EventImage.id, EventImage.image_path, EventImage.event_id)
                .join(DetectionEvent, DetectionEvent.id == EventImage.event_id)
                .where(DetectionEvent.detected_at < older_than, DetectionEvent.ended_at.is_not(None))
            ).all()  # fmt: skip
            missing = [(row_id, event_id) for row_id, path, event_id in rows if path not in keys]
            for chunk in _chunks([row_id for row_id, _ in missing]):
                deleted += session.execute(sa.delete(EventImage).where(EventImage.id.in_(chunk))).rowcount
            # An event whose main snapshot is among the missing no longer points at it.
            missing_paths = sorted({path for _, path, _ in rows if path not in keys})
            for chunk in _chunks(missing_paths):  # type: ignore[assignment]
                session.execute(
                    sa.update(DetectionEvent).where(DetectionEvent.image_path.in_(chunk)).values(image_path=None)
                )
        return deleted
