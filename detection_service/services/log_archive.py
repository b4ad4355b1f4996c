"""Archive of old ``system_logs`` rows: gzip-compressed JSON lines in the object store, then the
rows go from the database.

Rows older than the retention (``storage.max_days``, the same cut-off the log clean-up uses) are
read in id order, a batch at a time, written to one object per ``rows_per_object`` rows
(``storage.keys.system_log_archive_key``), and only once that object is stored are exactly those
rows deleted (by id, in batches: portable SQL, short transactions). A failed upload deletes
nothing; a failed delete after an upload leaves the rows for the next run, which archives them
again (a duplicate line in two archives, never a lost one).

Run by the ``system_log_archive`` Dagster asset (nightly schedule, or a ``log_archive`` batch job)
and by ``RetentionService.cleanup_logs`` before it deletes old status logs: the one log clean-up of
the nightly ``storage_cleanup`` op and ``POST /api/system/cleanup {"type": "logs"}``.
"""

from __future__ import annotations

import gzip
import io
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.services.settings import SettingsService
from detection_service.storage import ObjectStore
from detection_service.storage.keys import system_log_archive_key
from schemas.db import SystemLog, utcnow
from schemas.settings import StorageSettings

log = logging.getLogger(__name__)

READ_BATCH = 1000
DELETE_BATCH = 500
ROWS_PER_OBJECT = 100_000
CONTENT_TYPE = "application/gzip"

# (rows done, rows in all): called after each stored object's rows were deleted.
ProgressCallback = Callable[[int, int], None]


class LogArchiveReport(msgspec.Struct, kw_only=True):
    retention_days: int
    cutoff: datetime
    rows_archived: int = 0  # archived and deleted by this run
    object_keys: list[str] = msgspec.field(default_factory=list)
    bytes_written: int = 0  # compressed, summed over the objects
    duration_ms: int = 0


class LogArchiveService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        settings: SettingsService | None = None,
        *,
        rows_per_object: int = ROWS_PER_OBJECT,
        read_batch: int = READ_BATCH,
    ) -> None:
        self._session_factory = session_factory
        self._store = store
        self._settings = settings or SettingsService(session_factory)
        self._rows_per_object = rows_per_object
        self._read_batch = min(read_batch, rows_per_object)

    def archive(
        self, max_days: int | None = None, now: datetime | None = None, progress: ProgressCallback | None = None
    ) -> LogArchiveReport:
        """Archive and delete every system_logs row older than ``max_days`` (default: the setting
        ``storage.max_days``)."""
        started = time.monotonic()
        if max_days is None:
            storage: StorageSettings = self._settings.get("storage")  # type: ignore[assignment]
            max_days = storage.max_days
        now = now or utcnow()
        cutoff = now - timedelta(days=max_days)
        report = LogArchiveReport(retention_days=max_days, cutoff=cutoff)
        with self._session_factory() as session:
            total = session.scalar(sa.select(sa.func.count(SystemLog.id)).where(SystemLog.created_at < cutoff)) or 0
        after_id = 0
        while True:
            lines, ids = self._read_part(cutoff, after_id)
            if not ids:
                break
            data = _gzip_lines(lines)
            key = system_log_archive_key(now, ids[0], ids[-1])
            self._store.put_bytes(key, data, CONTENT_TYPE)  # nothing is deleted unless this worked
            # Counted as deleted here: a concurrent archive run (the nightly one and a batch job) may
            # have written and deleted the same rows; between them each row is counted once.
            report.rows_archived += self._delete(ids, cutoff)
            report.object_keys.append(key)
            report.bytes_written += len(data)
            after_id = ids[-1]
            log.info("log archive: %d rows (ids %d-%d) -> %s (%d bytes)", len(ids), ids[0], ids[-1], key, len(data))
            if progress is not None:
                progress(report.rows_archived, max(total, report.rows_archived))
        report.duration_ms = round((time.monotonic() - started) * 1000)
        return report

    def _read_part(self, cutoff: datetime, after_id: int) -> tuple[list[bytes], list[int]]:
        """Up to ``rows_per_object`` rows older than ``cutoff`` with an id above ``after_id``, as
        JSON lines, read in id order a batch at a time (keyset paging: no OFFSET)."""
        lines: list[bytes] = []
        ids: list[int] = []
        with self._session_factory() as session:
            while len(ids) < self._rows_per_object:
                limit = min(self._read_batch, self._rows_per_object - len(ids))
                rows = session.scalars(
                    sa.select(SystemLog)
                    .where(SystemLog.created_at < cutoff, SystemLog.id > (ids[-1] if ids else after_id))
                    .order_by(SystemLog.id)
                    .limit(limit)
                ).all()
                for row in rows:
                    lines.append(msgspec.json.encode(_record(row)))
                    ids.append(row.id)
                session.expunge_all()
                if len(rows) < limit:
                    break
        return lines, ids

    def _delete(self, ids: list[int], cutoff: datetime) -> int:
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            chunk = ids[start : start + DELETE_BATCH]
            with self._session_factory.begin() as session:
                # The cut-off again: only the rows that were archived, even if an id were reused.
                result = session.execute(
                    sa.delete(SystemLog).where(SystemLog.id.in_(chunk), SystemLog.created_at < cutoff)
                )
                deleted += result.rowcount or 0
        return deleted


def _record(row: SystemLog) -> dict:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat() + "Z",
        "level": row.level,
        "component": row.component,
        "message": row.message,
        "details": row.details,
        "user_id": row.user_id,
    }


def _gzip_lines(lines: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    # mtime=0: the same rows give the same bytes (a re-run of a failed delete rewrites an equal object).
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
        for line in lines:
            out.write(line)
            out.write(b"\n")
    return buffer.getvalue()


def read_archive(data: bytes) -> list[dict]:
    """The records of one archive object (tests, and whoever restores logs)."""
    return [msgspec.json.decode(line) for line in gzip.decompress(data).splitlines() if line]
