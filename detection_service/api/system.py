from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post

from detection_service.api.responses import in_thread, ok
from detection_service.services.health import check_health
from schemas.envelope import Envelope
from schemas.events import CleanupReport, CleanupRequest
from schemas.system import HealthReport


class SystemController(Controller):
    path = "/api/system"
    tags = ["System"]

    @get("/health", summary="Health of the database, object store and Dagster")
    async def health(self, request: Request[Any, Any, Any]) -> Response[Envelope[HealthReport]]:
        state = request.app.state
        report = await check_health(state.engine, state.object_store, state.dagster, state.started_at,
                                    notifier=getattr(state, "notifier", None))
        # Always 200: the body says how healthy we are; a load balancer can read `data.status`.
        return ok(report, message=f"system {report.status}")

    @post("/cleanup", status_code=200, summary="Clean up now: type 'images' (retention) or 'logs'",
          description="images: deletes events older than storage.max_days, then the oldest while captures exceed "
          "storage.max_size_gb, then orphans (objects without an event row, image rows without an object). "
          "logs: deletes system_logs / system_status_logs older than max_days. Runs whatever auto_cleanup says "
          "(that switch is for the nightly Dagster schedule).")  # fmt: skip
    async def cleanup(
        self, request: Request[Any, Any, Any], data: CleanupRequest | None = None
    ) -> Response[Envelope[CleanupReport]]:
        data = data or CleanupRequest()
        retention = request.app.state.retention
        run = retention.cleanup_images if data.type == "images" else retention.cleanup_logs
        report: CleanupReport = await in_thread(run)
        request.app.state.event_service.invalidate_totals()
        deleted = report.events_deleted if data.type == "images" else report.logs_deleted
        return ok(report, message=f"{data.type} clean-up: {deleted} deleted")
