"""The one owner of component state: GET /api/system/status.

Every part reports into :class:`ComponentStatusRegistry` (``report(component, status, reason)``):
the capture on its own thread the moment its source dies or returns, the status poller
(``services/performance.py``) for the rest every second, the probes every sample interval. The
registry keeps, per component, its state (running / stopped / error), the reason and since when
(the time the state last changed). A change writes a ``system_status_logs`` row (metadata
``{"kind": "transition"}``) and logs it: a WARNING on error (so the outage reaches system_logs
under the component's name), INFO on recovery.

Rows are written by one writer thread from a bounded queue, the way the log handler does it: a
report never waits for the database (the capture thread calls it), a full queue or failed write
drops rows and counts them (``rows_dropped``). The performance sampler's rows take the same path.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from schemas.db import SystemStatusLog, utcnow
from schemas.system import OPTIONAL_STATUS_COMPONENTS, STATUS_COMPONENTS, ComponentState, ComponentStatus

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 2_000
BATCH_SIZE = 200
TRANSITION = "transition"  # metadata.kind of a state change row
SAMPLE = "sample"  # metadata.kind of a performance sampler row
MAX_REASON = 2_000

_STOP = object()


class ComponentStatusRegistry:
    def __init__(self, session_factory: sessionmaker[Session] | None, capacity: int = QUEUE_CAPACITY) -> None:
        """``session_factory`` None: keep the state in memory only (no rows)."""
        self.session_factory = session_factory
        started = utcnow()
        self._states = {
            name: ComponentStatus(component=name, status="stopped", reason="not checked yet", since=started)
            for name in STATUS_COMPONENTS
        }
        self._lock = threading.Lock()
        self.rows_dropped = 0
        self.rows_written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._writer: threading.Thread | None = None
        if session_factory is not None:
            self._writer = threading.Thread(target=self._run, name="component-status-writer", daemon=True)
            self._writer.start()

    def enable(self, component: str) -> None:
        """List an optional component (``mqtt`` when configured): from now on it counts in the status."""
        if component not in OPTIONAL_STATUS_COMPONENTS:
            raise ValueError(f"unknown optional component {component!r}")
        with self._lock:
            self._states.setdefault(
                component,
                ComponentStatus(component=component, status="stopped", reason="not checked yet", since=utcnow()),
            )

    # -- reports (any thread; never waits) ---------------------------------------------------

    def report(self, component: str, status: ComponentState, reason: str | None = None) -> bool:
        """The component's state now; True if that is a change (a row and a log record follow)."""
        if component not in self._states:
            raise ValueError(f"unknown component {component!r}")
        reason = reason[:MAX_REASON] if reason else None
        now = utcnow()
        with self._lock:
            current = self._states[component]
            changed = current.status != status
            previous = current.status
            self._states[component] = ComponentStatus(
                component=component,
                status=status,
                reason=reason,
                since=now if changed else current.since,
                checked_at=now,
            )
        if changed:
            self._log_change(component, previous, status, reason)
            self.enqueue(
                {
                    "component": component,
                    "status": status,
                    "error_message": reason if status == "error" else None,
                    "metadata_": {"kind": TRANSITION, "previous": previous, "reason": reason},
                    "logged_at": now,
                }
            )
        return changed

    def get(self, component: str) -> ComponentStatus:
        with self._lock:
            return self._states[component]

    def snapshot(self) -> dict[str, ComponentStatus]:
        with self._lock:
            return dict(self._states)

    def enqueue(self, row: dict[str, Any]) -> None:
        """A system_status_logs row (the columns of SystemStatusLog), written on the writer thread."""
        if self._writer is None:
            return
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            with self._lock:
                self.rows_dropped += 1

    def _log_change(self, component: str, previous: str, status: str, reason: str | None) -> None:
        extra = {"component": component}  # system_logs files the record under this component
        if status == "error":
            log.warning("%s: %s -> error: %s", component, previous, reason or "no reason given", extra=extra)
        elif previous == "error":
            log.warning("%s: recovered, %s%s", component, status, f" ({reason})" if reason else "", extra=extra)
        else:
            log.info("%s: %s -> %s%s", component, previous, status, f" ({reason})" if reason else "", extra=extra)

    # -- writer thread -------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was queued before now is written (tests, shutdown)."""
        if self._writer is None or not self._writer.is_alive():
            return True
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=2.0)
            self._writer.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[dict[str, Any]] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    batch.append(item)
                if stop or len(batch) >= BATCH_SIZE:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for marker in markers:
                marker.set()
            if stop:
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        assert self.session_factory is not None
        try:
            with self.session_factory.begin() as session:
                session.add_all(SystemStatusLog(**row) for row in batch)
        except Exception as exc:  # the database is down: these rows are lost, the state is not
            with self._lock:
                self.rows_dropped += len(batch)
            log.debug("system_status_logs: %d rows not written: %s", len(batch), exc)
            return
        with self._lock:
            self.rows_written += len(batch)


def status_of_all(registry: ComponentStatusRegistry) -> tuple[str, dict[str, ComponentStatus]]:
    """(running | degraded, the components)."""
    components = registry.snapshot()
    overall = "running" if all(c.status == "running" for c in components.values()) else "degraded"
    return overall, components
