from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Response, get, post
from sqlalchemy.engine import Engine

from detection_service.api.responses import ok
from detection_service.config import Settings
from detection_service.orchestrator import DagsterClient
from detection_service.services.events import EventService
from detection_service.services.health import check_health
from detection_service.services.retention import RetentionService
from detection_service.services.storage_report import StorageReportService
from detection_service.services.system_logs import SystemLogService
from detection_service.storage import ObjectStore
from schemas.envelope import Envelope
from schemas.system import CleanupReport, CleanupRequest, HealthReport, StorageReport, SystemLogPage


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

    @get(
        "/logs",
        sync_to_thread=True,
        summary="The service's own log records (system_logs), newest first: level, component, date_range, page, limit",
        description="level: the lowest level shown (DEBUG, INFO, WARNING, ERROR, CRITICAL); which records are kept "
        "at all is the setting general.log_level (default WARNING). component: camera, detection, notification, "
        "storage, database, dagster, api, dataset, model, settings, system. date_range: today, 1h, 24h, 7d, 30d, "
        "90d, all, or '<start>/<end>' in ISO 8601. limit <= 100. `data.handler` says how many records the "
        "non-blocking handler wrote, dropped (queue full) or lost to a failed write.",
    )
    def logs(
        self,
        system_logs: SystemLogService,
        level: str | None = None,
        component: str | None = None,
        date_range: str | None = None,
        page: int = 1,
        limit: int = 50,
    ) -> Response[Envelope[SystemLogPage]]:
        result = system_logs.list(level=level, component=component, date_range=date_range, page=page, limit=limit)
        return ok(result, message=f"{len(result.items)} of {result.total} log record(s)")

    @get(
        "/storage",
        sync_to_thread=True,
        summary="Storage use: object store by prefix (latest snapshot and its age), database size, free disk",
        description="object_store comes from the storage_usage Dagster asset's latest snapshot (hourly schedule; "
        "null until it first ran, `message` says so); database (SQLite file or MySQL information_schema) and disk "
        "(the data dir's file system) are measured now.",
    )
    def storage(self, storage_report: StorageReportService) -> Response[Envelope[StorageReport]]:
        report = storage_report.report()
        return ok(report, message=report.message)

    @post(
        "/cleanup",
        status_code=200,
        sync_to_thread=True,
        summary="Clean up now: type 'images' (retention), 'logs' or 'temp'",
        description="images: deletes events older than storage.max_days, then the oldest while captures exceed "
        "storage.max_size_gb, then orphans (objects without an event row, image rows without an object). "
        "logs: deletes system_logs / system_status_logs older than max_days. temp: deletes run work dirs, upload "
        "and export staging untouched for older_than_hours (default 24) and cached datasets / models untouched for "
        "cache_max_days (default 30); never a running job's work dir, never a cache while a job runs, never the "
        "deployed model's cache. Runs whatever auto_cleanup says (that switch is for the nightly Dagster schedule).",
    )
    def cleanup(
        self,
        retention: RetentionService,
        event_service: EventService,
        settings: Settings,
        data: CleanupRequest | None = None,
    ) -> Response[Envelope[CleanupReport]]:
        data = data or CleanupRequest()
        if data.type == "temp":
            report = retention.cleanup_temp(
                settings.data_dir, timedelta(hours=data.older_than_hours), timedelta(days=data.cache_max_days)
            )
            return ok(report, message=f"temp clean-up: {report.temp_deleted} deleted, {report.temp_kept} kept")
        report = retention.cleanup_images() if data.type == "images" else retention.cleanup_logs()
        event_service.invalidate_totals()
        deleted = report.events_deleted if data.type == "images" else report.logs_deleted
        return ok(report, message=f"{data.type} clean-up: {deleted} deleted")
