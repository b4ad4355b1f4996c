from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from sqlalchemy.engine import Engine

from detection_service.api.responses import ok
from detection_service.orchestrator import DagsterClient
from detection_service.services.events import EventService
from detection_service.services.retention import RetentionService
from detection_service.storage import ObjectStore
from detection_service.services.health import check_health
from schemas.envelope import Envelope
from schemas.events import CleanupReport, CleanupRequest
from schemas.system import HealthReport


class SystemController(Controller):
    path = "/api/system"
    tags = ["System"]

    @get("/health", summary="Health of the database, object store and Dagster")
    async def health(
        self, engine: Engine, object_store: ObjectStore, dagster: DagsterClient, started_at: float, notifier: Any
    ) -> Response[Envelope[HealthReport]]:
        report = await check_health(engine, object_store, dagster, started_at, notifier=notifier)
        # Always 200: the body says how healthy we are; a load balancer can read `data.status`.
        return ok(report, message=f"system {report.status}")

    @post("/cleanup", status_code=200, sync_to_thread=True, summary="Clean up now: type 'images' (retention) or 'logs'",
          description="images: deletes events older than storage.max_days, then the oldest while captures exceed "
          "storage.max_size_gb, then orphans (objects without an event row, image rows without an object). "
          "logs: deletes system_logs / system_status_logs older than max_days. Runs whatever auto_cleanup says "
          "(that switch is for the nightly Dagster schedule).")  # fmt: skip
    def cleanup(
        self, retention: RetentionService, event_service: EventService, data: CleanupRequest | None = None
    ) -> Response[Envelope[CleanupReport]]:
        data = data or CleanupRequest()
        run = retention.cleanup_images if data.type == "images" else retention.cleanup_logs
        report: CleanupReport = run()
        event_service.invalidate_totals()
        deleted = report.events_deleted if data.type == "images" else report.logs_deleted
        return ok(report, message=f"{data.type} clean-up: {deleted} deleted")
