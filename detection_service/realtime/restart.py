"""In-process restarts (``POST /api/system/restart``): the HTTP server keeps serving throughout.

- ``camera``: the capture is re-opened; the detector, tracker, open events and writer carry on.
- ``detection``: a fresh detector for the loaded model, then the pipeline restarted (new tracker
  and motion gate; open package events are re-adopted by the recorder, so none is duplicated).
- ``all``: the settings read again, ``detection`` (which re-opens the camera), the Telegram
  notifier closed and started again, the database pool emptied (fresh connections) and the object
  store's bucket checked.

Each step is timed and reported; a failing step is logged and reported, and the others still run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from detection_service.errors import DomainError
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.storage import ObjectStore
from schemas.restart import ComponentRestart, RestartReport, RestartService

log = logging.getLogger(__name__)


class SystemRestart:
    def __init__(
        self,
        pipeline_service: PipelineService,
        *,
        notifier: Any = None,
        engine: Engine | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        """``notifier``: anything with ``restart() -> bool`` (the Telegram notifier); None: skipped."""
        self.pipeline_service = pipeline_service
        self.notifier = notifier
        self.engine = engine
        self.store = store

    def restart(self, service: RestartService) -> RestartReport:
        """Blocking (a detector rebuild, a capture re-open): call off the event loop. Domain
        errors of the one step of ``camera`` / ``detection`` propagate (e.g. a stopped pipeline)."""
        log.warning("system restart requested: %s", service)
        started = time.perf_counter()
        components: list[ComponentRestart] = []
        pipeline = self.pipeline_service
        if service == "camera":
            components.append(_step("camera", pipeline.restart_camera, raise_domain=True))
        elif service == "detection":
            components.append(_step("detection", pipeline.restart_detection, raise_domain=True))
        else:
            components.append(_step("detection", lambda: pipeline.restart_detection(reload_settings=True)))
            components.append(_step("notification", self._restart_notifier))
            components.append(_step("database", self._reset_database))
            components.append(_step("storage", self._check_store))
        status = pipeline.pipeline.status()
        report = RestartReport(
            service=service,
            components=components,
            pipeline_status=status["status"],
            camera_status=status["camera_status"],
            took_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        failed = [c.component for c in components if c.outcome == "failed"]
        if failed:
            log.error("system restart %s: %s failed", service, ", ".join(failed))
        else:
            log.warning(
                "system restart %s done in %.0f ms (pipeline %s, camera %s)",
                service,
                report.took_ms,
                report.pipeline_status,
                report.camera_status,
            )
        return report

    def _restart_notifier(self) -> str | None:
        if self.notifier is None:
            return None
        if not self.notifier.restart():
            raise RuntimeError("the notifier's loop did not stop in time; it was not started again")
        return "notifier loop started again"

    def _reset_database(self) -> str | None:
        if self.engine is None:
            return None
        # Checked-out connections finish their work and are then discarded; new ones are opened.
        self.engine.dispose()
        return "connection pool emptied"

    def _check_store(self) -> str | None:
        if self.store is None:
            return None
        self.store.ensure_bucket()
        return "bucket reachable"


def _step(component: str, action: Callable[[], Any], *, raise_domain: bool = False) -> ComponentRestart:
    started = time.perf_counter()
    try:
        result = action()
    except Exception as exc:
        if raise_domain and isinstance(exc, DomainError):
            raise
        log.error("restart of %s failed: %s", component, exc)
        return _done(component, "failed", f"{type(exc).__name__}: {exc}", started)
    if result is None:
        return _done(component, "skipped", "not configured in this process", started)
    if isinstance(result, dict):  # a pipeline status
        detail = f"pipeline {result['status']}, camera {result['camera_status']}"
    else:
        detail = str(result)
    log.info("restart: %s %s", component, detail)
    return _done(component, "restarted", detail, started)


def _done(component: str, outcome: str, detail: str, started: float) -> ComponentRestart:
    took = round((time.perf_counter() - started) * 1000, 1)
    return ComponentRestart(component=component, outcome=outcome, detail=detail, took_ms=took)  # type: ignore[arg-type]
