"""The service's own log records in ``system_logs`` (the seed's table), and reading them back.

``SystemLogHandler`` is a :class:`logging.handlers.QueueHandler` on the root logger. A record of
one of the service's loggers (``COMPONENTS``) at the ``general.log_level`` setting or above is
turned into a row on the caller's thread and put on a bounded queue without waiting; one writer
thread inserts what is queued in batches, one transaction each. A slow or dead database therefore
never stalls a request or the frame loop: the queue fills and further records are dropped and
counted (``dropped``), a failed write drops its batch (``failed``); both counts and the last error
are in ``GET /api/system/logs`` (``data.handler``), and the first drop / failure of a streak is
logged once (to the other handlers, not to the table).

No feedback: records made on the writer thread (what SQLAlchemy or a driver logs while the
handler writes) and records of this module's own logger are never queued.

Records below the process's own level (``AIDOOR_LOG_LEVEL``, the root logger's) are never made,
so ``general.log_level`` can only raise the bar above it.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import threading
import time
import traceback
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.errors import Invalid
from detection_service.services.event_history import check_paging, parse_date_range
from detection_service.services.settings import SettingsService
from schemas.db import SystemLog
from schemas.enums import LogLevel
from schemas.system import LogHandlerStats, SystemLogEntry, SystemLogPage

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 10_000
BATCH_SIZE = 500
FLUSH_INTERVAL_S = 0.5  # a record waits at most this long for companions in its batch
RETRY_AFTER_S = 2.0  # after a failed write; meanwhile the queue absorbs (or drops) new records
MAX_MESSAGE = 10_000
MAX_TRACEBACK = 20_000

# Logger name prefix -> component (system_logs.component). The longest matching prefix wins; a
# logger that matches none is not the service's and is not kept. Every detection_service prefix
# names a module or package that exists (tests/test_system_logs.py), so a rename shows up.
COMPONENTS: dict[str, str] = {
    "detection_service.camera_client": "camera",
    "aidoor.camera": "camera",
    "detection_service.pipeline.capture": "camera",
    "detection_service.pipeline.sources": "camera",
    "detection_service.pipeline": "detection",
    "detection_service.ml": "detection",
    "detection_service.realtime.pipeline_service": "detection",
    "detection_service.realtime.ingest": "camera",
    "detection_service.realtime.demo_source": "camera",
    "detection_service.realtime.live_config": "detection",
    "detection_service.realtime.manual_detection": "detection",
    "detection_service.realtime.model_loader": "detection",
    "detection_service.realtime.viewers": "api",
    "detection_service.notifications": "notification",
    "detection_service.storage": "storage",
    "detection_service.services.retention": "storage",
    "detection_service.database": "database",
    "schemas": "database",
    "detection_service.dagster_client": "dagster",
    "detection_service.services.job_queue": "dagster",
    "detection_service.batch_jobs": "dagster",
    "assets": "dagster",
    "orchestration": "dagster",
    "dagster": "dagster",
    "detection_service.datasets": "dataset",
    "detection_service.services.data_yaml": "dataset",
    "detection_service.services.models": "model",
    "detection_service.bootstrap": "model",
    "detection_service.api": "api",
    "detection_service.app": "api",
    "litestar": "api",
    "uvicorn": "api",
    "detection_service.services.settings": "settings",
    "detection_service.supervisor": "system",
    "aidoor.run": "system",
    "detection_service": "system",
}
COMPONENT_NAMES: tuple[str, ...] = tuple(sorted(set(COMPONENTS.values())))

_LEVELS = [level.value for level in LogLevel]  # DEBUG .. CRITICAL, lowest first


@lru_cache(maxsize=1024)
def component_of(logger_name: str) -> str | None:
    """The component of a logger (``detection_service.pipeline.runner`` -> ``detection``), or
    None when the logger is not one of the service's."""
    name = logger_name
    while name:
        component = COMPONENTS.get(name)
        if component is not None:
            return component
        name = name.rpartition(".")[0]
    return None


def _named_component(record: logging.LogRecord) -> str | None:
    component = getattr(record, "component", None)
    return component if component in COMPONENT_NAMES else None


def level_name(levelno: int) -> str:
    """A record's level as one of the seed's five names (custom levels round down)."""
    for name in reversed(_LEVELS):
        if levelno >= logging.getLevelName(name):
            return name
    return LogLevel.DEBUG.value


class _Flush:
    """A marker in the queue: set once everything queued before it is written (or dropped)."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class SystemLogHandler(logging.handlers.QueueHandler):
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        level: int | str = logging.WARNING,
        capacity: int = QUEUE_CAPACITY,
        batch_size: int = BATCH_SIZE,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        super().__init__(queue.Queue(maxsize=capacity))
        self.setLevel(level)
        self.session_factory = session_factory
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_after_s = retry_after_s
        self.written = self.dropped = self.failed = 0
        self.last_error: str | None = None
        self._dropping = self._failing = False
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._run, name="system-log-writer", daemon=True)
        self._writer.start()

    # -- caller's side (any thread; never waits) ------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if record.name == __name__ or threading.current_thread() is self._writer:
            return False
        if component_of(record.name) is None:
            return False
        return bool(super().filter(record))

    def prepare(self, record: logging.LogRecord) -> dict[str, Any]:  # type: ignore[override]
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable: {exc})"
        details: dict[str, Any] = {
            "logger": record.name,
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
        }
        if record.exc_info and record.exc_info[1] is not None:
            details["exception"] = "".join(traceback.format_exception(*record.exc_info))[-MAX_TRACEBACK:]
        elif record.exc_text:
            details["exception"] = record.exc_text[-MAX_TRACEBACK:]
        return {
            "level": level_name(record.levelno),
            # A record may name its component (``extra={"component": ...}``, the status registry does).
            "component": _named_component(record) or component_of(record.name) or "system",
            "message": message[:MAX_MESSAGE],
            "details": details,
            "created_at": datetime.fromtimestamp(record.created, UTC).replace(tzinfo=None, microsecond=0),
        }

    def enqueue(self, record: Any) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._stats_lock:
                self.dropped += 1
                first, self._dropping = not self._dropping, True
            if first:  # once until the writer has written again
                log.warning(
                    "system_logs queue full (%d records): dropping log records until the database keeps up",
                    self.capacity,
                )

    def set_level_name(self, name: str) -> None:
        self.setLevel(logging.getLevelName(name.upper()))

    def on_settings(self, category: str, values: msgspec.Struct) -> None:
        """SettingsService listener: ``general.log_level`` applies at once."""
        if category == "general":
            self.set_level_name(values.log_level)  # type: ignore[attr-defined]

    def stats(self) -> LogHandlerStats:
        with self._stats_lock:
            return LogHandlerStats(
                level=logging.getLevelName(self.level),
                queue_size=self.queue.qsize(),
                queue_capacity=self.capacity,
                written=self.written,
                dropped=self.dropped,
                failed=self.failed,
                last_error=self.last_error,
            )

    def flush(self, timeout: float = 5.0) -> bool:  # type: ignore[override]
        """Wait until what was queued before now is written; False if that took over ``timeout``."""
        if self._stopping.is_set():
            return True
        marker = _Flush()
        try:
            self.queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self) -> None:
        """Write what is queued (up to a few seconds), stop the writer."""
        if not self._stopping.is_set():
            self._stopping.set()
            with contextlib.suppress(queue.Full):
                self.queue.put(_STOP, timeout=2.0)
            self._writer.join(timeout=5.0)
        super().close()

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self.queue.get()
            batch: list[dict[str, Any]] = []
            markers: list[_Flush] = []
            deadline = time.monotonic() + self.flush_interval_s
            while True:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, _Flush):
                    markers.append(item)
                    break
                batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                wait = 0.0 if self._stopping.is_set() else deadline - time.monotonic()
                try:
                    item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for marker in markers:
                marker.done.set()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            with self.session_factory.begin() as session:
                session.execute(sa.insert(SystemLog), batch)
        except Exception as exc:  # the database is down or refuses: drop this batch, count it
            with self._stats_lock:
                self.failed += len(batch)
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                first, self._failing = not self._failing, True
            if first:
                log.warning(
                    "system_logs: writing %d log records failed (%s); they are dropped, retrying in %.0f s",
                    len(batch),
                    self.last_error,
                    self.retry_after_s,
                )
            self._stopping.wait(self.retry_after_s)
            return
        with self._stats_lock:
            self.written += len(batch)
            recovered = self._failing or self._dropping
            self._failing = self._dropping = False
        if recovered:
            log.warning(
                "system_logs: writing again (so far %d records dropped, %d lost to failed writes)",
                self.dropped,
                self.failed,
            )


def install_log_handler(
    session_factory: sessionmaker[Session],
    settings_service: SettingsService | None = None,
    logger: logging.Logger | None = None,
) -> SystemLogHandler:
    """Put a SystemLogHandler on ``logger`` (default: the root logger) at the ``general.log_level``
    setting, kept in step with it; undo with :func:`remove_log_handler`. The app's lifespan calls
    this once."""
    level = LogLevel.WARNING.value
    if settings_service is not None:
        try:
            level = settings_service.get("general").log_level  # type: ignore[attr-defined]
        except Exception as exc:  # the database is not there yet: the default, the setting applies later
            log.warning("general.log_level not readable (%s); system_logs keeps %s and above", exc, level)
    handler = SystemLogHandler(session_factory, level=logging.getLevelName(level))
    if settings_service is not None:
        settings_service.subscribe(handler.on_settings)
    (logger or logging.getLogger()).addHandler(handler)
    return handler


def remove_log_handler(handler: SystemLogHandler, logger: logging.Logger | None = None) -> None:
    (logger or logging.getLogger()).removeHandler(handler)
    handler.close()


class SystemLogService:
    """GET /api/system/logs: ``system_logs`` rows, newest first, filtered and paged."""

    def __init__(self, session_factory: sessionmaker[Session], handler: SystemLogHandler | None = None) -> None:
        self.session_factory = session_factory
        self.handler = handler

    def list(
        self,
        level: str | None = None,
        component: str | None = None,
        date_range: str | None = None,
        page: int = 1,
        limit: int = 50,
    ) -> SystemLogPage:
        check_paging(page, limit)
        conds: list[Any] = []
        if level is not None:
            name = level.strip().upper()
            if name not in _LEVELS:
                raise Invalid(
                    f"level must be one of {_LEVELS} (the lowest level shown)", {"value": level}, code="INVALID_LEVEL"
                )
            conds.append(SystemLog.level.in_(_LEVELS[_LEVELS.index(name) :]))
        if component is not None:
            if component not in COMPONENT_NAMES:
                raise Invalid(
                    f"component must be one of {list(COMPONENT_NAMES)}", {"value": component}, code="INVALID_COMPONENT"
                )
            conds.append(SystemLog.component == component)
        if date_range is not None:
            start, end = parse_date_range(date_range)
            if start is not None and end is not None and start >= end:
                raise Invalid(
                    "the start of the range must be before its end",
                    {"start": start.isoformat(), "end": end.isoformat()},
                    code="INVALID_DATE_RANGE",
                )
            if start is not None:
                conds.append(SystemLog.created_at >= start)
            if end is not None:
                conds.append(SystemLog.created_at < end)
        with self.session_factory() as session:
            total = session.scalar(sa.select(sa.func.count(SystemLog.id)).where(*conds)) or 0
            rows = session.scalars(
                sa.select(SystemLog)
                .where(*conds)
                .order_by(SystemLog.created_at.desc(), SystemLog.id.desc())
                .limit(limit)
                .offset((page - 1) * limit)
            ).all()
            items = [
                SystemLogEntry(
                    id=r.id,
                    level=r.level,
                    component=r.component,
                    message=r.message,
                    details=r.details,
                    user_id=r.user_id,
                    created_at=r.created_at,
                )
                for r in rows
            ]
        return SystemLogPage(
            items=items, total=total, page=page, limit=limit, handler=self.handler.stats() if self.handler else None
        )
