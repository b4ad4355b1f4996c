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
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.errors import Unavailable
from detection_service.services.log_archive import LogArchiveService
from detection_service.services.settings import SettingsService
from detection_service.storage import ObjectInfo, ObjectStore, StorageError
from detection_service.storage.keys import EVENTS_PREFIX, event_id_of
from schemas.db import (
    BatchJob,
    DetectionEvent,
    EventImage,
    Model,
    ModelTraining,
    NotificationHistory,
    SystemStatusLog,
    utcnow,
)
from schemas.enums import JobStatus
from schemas.settings import StorageSettings
from schemas.system import CleanupReport

log = logging.getLogger(__name__)

IN_FLIGHT = timedelta(minutes=10)


BATCH = 500
GB = 1024**3


class LogArchiveFailed(Unavailable):
    """The old logs could not be archived (store down or refusing): they stay in the database."""

    code = "LOG_ARCHIVE_FAILED"


def _chunks(values: Sequence, size: int = BATCH) -> Iterable[Sequence]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class RetentionService:
    def __init__(self, session_factory: sessionmaker[Session], store: ObjectStore, settings: SettingsService) -> None:
        self.session_factory = session_factory
        self.store = store
        self.settings = settings

    def cleanup_images(
        self, max_days: int | None = None, max_size_gb: float | None = None, now: datetime | None = None
    ) -> CleanupReport:
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
        """Old logs, the one path of the API's clean-up and the nightly ``storage_cleanup``:
        ``system_logs`` rows older than ``max_days`` reach the object store first
        (``LogArchiveService``: gzip JSON lines, a row is deleted only once its object is stored),
        then ``system_status_logs`` rows (samples and transitions, not archived) are deleted.

        A store that cannot take the archive deletes nothing more: ``LogArchiveFailed`` (503) says
        how many rows were archived before it failed; the status logs stay too."""
        storage: StorageSettings = self.settings.get("storage")  # type: ignore[assignment]
        max_days = storage.max_days if max_days is None else max_days
        now = now or utcnow()
        cutoff = now - timedelta(days=max_days)  # one cut-off for both tables
        report = CleanupReport(type="logs", max_days=max_days, max_size_gb=storage.max_size_gb)
        started = time.monotonic()
        done = [0]

        def progress(rows: int, _total: int) -> None:
            done[0] = rows

        try:
            archived = LogArchiveService(self.session_factory, self.store, self.settings).archive(
                max_days, now, progress=progress
            )
        except (StorageError, OSError) as exc:
            log.warning("log clean-up: archive failed after %d rows, nothing else deleted: %s", done[0], exc)
            raise LogArchiveFailed(
                f"old logs were not deleted: the object store could not take their archive ({exc})",
                {"rows_archived": done[0], "reason": str(exc), "retention_days": max_days},
            ) from exc
        report.logs_archived = archived.rows_archived
        report.archive_keys = archived.object_keys
        report.logs_deleted = archived.rows_archived
        with self.session_factory.begin() as session:
            report.logs_deleted += session.execute(
                sa.delete(SystemStatusLog).where(SystemStatusLog.logged_at < cutoff)
            ).rowcount
        report.duration_ms = round((time.monotonic() - started) * 1000)
        log.info("clean-up (logs): %d archived, %d deleted in all", report.logs_archived, report.logs_deleted)
        return report

    # -- steps ----------------------------------------------------------------------------

    def _not_in_flight(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.or_(DetectionEvent.ended_at.is_not(None), DetectionEvent.detected_at < now - IN_FLIGHT)

    def _expired_ids(self, cutoff: datetime, now: datetime) -> list[int]:
        with self.session_factory() as session:
            return list(
                session.scalars(
                    sa.select(DetectionEvent.id)
                    .where(DetectionEvent.detected_at < cutoff, self._not_in_flight(now))
                    .order_by(DetectionEvent.detected_at, DetectionEvent.id)
                )
            )

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
            for _detected_at, event_id in rows:
                yield event_id
            after = tuple(rows[-1])  # type: ignore[assignment]

    def _existing_ids(self, ids: Sequence[int]) -> set[int]:
        found: set[int] = set()
        with self.session_factory() as session:
            for chunk in _chunks(ids):
                found.update(session.scalars(sa.select(DetectionEvent.id).where(DetectionEvent.id.in_(chunk))))
        return found

    def _delete_events(
        self, ids: Sequence[int], report: CleanupReport, objects: dict[int, list[ObjectInfo]] | None = None
    ) -> None:
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
            ).all()
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

    # -- temp -----------------------------------------------------------------------------

    def cleanup_temp(
        self,
        data_dir: Path,
        older_than: timedelta = timedelta(hours=24),
        cache_max_age: timedelta = timedelta(days=30),
        now: datetime | None = None,
    ) -> CleanupReport:
        """Delete what the data dir holds only for a while: run work dirs (``work/``), upload
        staging (``tmp/``), export staging left by a crash (``.staging-*``, ``.int8-*``,
        ``*.partial`` under ``cache/``), all untouched for ``older_than``; and cached dataset
        versions and models (``cache/datasets/<id>/<version>``, ``cache/models/<id>``) untouched
        for ``cache_max_age``. Never the work dir of a pending or running job (batch_jobs or
        model_training with that Dagster run id), never a cache while a job runs, never the
        deployed model's cache, never anything written within the threshold."""
        started = time.monotonic()
        storage: StorageSettings = self.settings.get("storage")  # type: ignore[assignment]
        report = CleanupReport(type="temp", max_days=storage.max_days, max_size_gb=storage.max_size_gb)
        now_ts = (now or datetime.now(UTC)).timestamp()
        busy_runs, current_models = self._in_use()
        data_dir = Path(data_dir)

        def keep(path: Path, why: str) -> None:
            report.temp_kept += 1
            if len(report.kept_paths) < REPORTED_PATHS:
                report.kept_paths[str(path.relative_to(data_dir))] = why

        def consider(path: Path, age: timedelta) -> None:
            cutoff = now_ts - age.total_seconds()
            if _newest_mtime(path, stop_at=cutoff) >= cutoff:
                keep(path, f"changed within {_human(age)}")
                return
            freed = _remove(path)
            if freed is None:
                keep(path, "could not be deleted")
                return
            report.temp_deleted += 1
            report.bytes_freed += freed
            if len(report.deleted_paths) < REPORTED_PATHS:
                report.deleted_paths.append(str(path.relative_to(data_dir)))

        for entry in _children(data_dir / "work"):
            run_id = entry.name.partition("-")[2]
            if run_id and run_id in busy_runs:
                keep(entry, "work dir of a running job")
            else:
                consider(entry, older_than)
        for entry in _children(data_dir / "tmp"):
            for child in _children(entry) if entry.is_dir() and not entry.is_symlink() else [entry]:
                consider(child, older_than)
        cache = data_dir / "cache"
        for staging in _staging_entries(cache):
            consider(staging, older_than)
        cached = [
            *(v for d in _children(cache / "datasets") for v in _children(d) if d.is_dir()),
            *_children(cache / "models"),
        ]
        for entry in cached:
            if not entry.exists():
                continue
            if busy_runs:
                keep(entry, "a job is running (it may read the cache)")
            elif entry.parent.name == "models" and entry.name in current_models:
                keep(entry, "cache of the deployed model")
            else:
                consider(entry, cache_max_age)
        report.duration_ms = round((time.monotonic() - started) * 1000)
        log.info(
            "clean-up (temp): %d deleted (%d bytes), %d kept", report.temp_deleted, report.bytes_freed, report.temp_kept
        )
        return report

    def _in_use(self) -> tuple[set[str], set[str]]:
        """Dagster run ids of pending/running jobs, and the model_id of the deployed model(s)."""
        active = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
        with self.session_factory() as session:
            runs = {
                run
                for table in (BatchJob, ModelTraining)
                for run in session.scalars(
                    sa.select(table.dagster_run_id).where(table.status.in_(active), table.dagster_run_id.is_not(None))
                )
            }
            current = set(session.scalars(sa.select(Model.model_id).where(Model.is_current.is_(True))))
        return runs, current


REPORTED_PATHS = 100
# Staging a crash leaves in the cache: export staging (pipeline/detector.py), INT8 work dirs
# (ml/quantize.py), half-done downloads (ml/registry.py).
_STAGING_PREFIXES = (".staging-", ".int8-")
_STAGING_SUFFIX = ".partial"


def _children(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _staging_entries(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        for name in list(dirs):
            if name.startswith(_STAGING_PREFIXES) or name.endswith(_STAGING_SUFFIX):
                found.append(Path(folder) / name)
                dirs.remove(name)
        found.extend(Path(folder) / name for name in files if name.endswith(_STAGING_SUFFIX))
    return found


def _newest_mtime(path: Path, stop_at: float) -> float:
    """The newest mtime in a tree (symlinks not followed); stops early once one is >= stop_at."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0
    if newest >= stop_at or path.is_symlink() or not path.is_dir():
        return newest
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            except FileNotFoundError:
                continue
            if newest >= stop_at:
                return newest
    return newest


def _remove(path: Path) -> int | None:
    """Delete a file, link or tree; its size in bytes, or None if it could not be deleted."""
    try:
        if path.is_symlink() or not path.is_dir():
            size = path.lstat().st_size
            path.unlink()
            return size
        size = sum(os.lstat(os.path.join(folder, name)).st_size for folder, _, files in os.walk(path) for name in files)
        shutil.rmtree(path)
        return size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("clean-up (temp): %s stays: %s", path, exc)
        return None


def _human(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} h"
