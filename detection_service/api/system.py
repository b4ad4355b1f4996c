from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from litestar import Controller, Response, get, post
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine

from detection_service.api.responses import ok
from detection_service.config import Settings
from detection_service.dagster_client import DagsterClient
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.services.component_status import ComponentStatusRegistry, status_of_all
from detection_service.services.event_history import EventService
from detection_service.services.health import check_health
from detection_service.services.performance import DEFAULT_MINUTES, MAX_MINUTES, PerformanceService
from detection_service.services.retention import RetentionService
from detection_service.services.storage_report import StorageReportService
from detection_service.services.system_logs import SystemLogService
from detection_service.storage import ObjectStore
from schemas.envelope import Envelope
from schemas.system import (
    CleanupReport,
    CleanupRequest,
    HealthReport,
    PerformanceReport,
    StorageReport,
    SystemLogPage,
    SystemStatus,
)

# HTTP request latency by route (``aidoor_http_request_duration_seconds{path=<route template>}``):
# Litestar's Prometheus middleware; its metrics live in the default registry next to ours.
PROMETHEUS = PrometheusConfig(
    app_name="aidoor", prefix="aidoor_http", group_path=True, exclude=["^/metrics$"], exclude_unhandled_paths=True
)


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
        "/status",
        summary="Each component (camera, detection, notification, storage, database, dagster): running / stopped / "
        "error, the reason and since when",
        description="The camera reports the moment its source dies or returns; camera and detection are polled every "
        "second, the database, object store, Dagster and the notifier every general.performance_sample_s seconds. "
        "`since` is when the state last changed; each change is a system_status_logs row and a log record (WARNING "
        "on error, so outages show in GET /api/system/logs?level=WARNING).",
    )
    async def status(
        self,
        component_status: ComponentStatusRegistry,
        started_at: float,
        performance: PerformanceService,
        pipeline_service: PipelineService,
    ) -> Response[Envelope[SystemStatus]]:
        overall, components = status_of_all(component_status)
        report = SystemStatus(
            status=overall,  # type: ignore[arg-type]
            components=components,
            uptime_s=round(time.time() - started_at, 1),
            rows_dropped=component_status.rows_dropped,
            # The event writer's local journal (docs/pipeline.md); a live link request when the pipeline is apart.
            journal=await pipeline_service.call(performance.monitor.journal),
        )
        bad = [name for name, c in components.items() if c.status != "running"]
        return ok(report, message="all components running" if not bad else f"not running: {', '.join(bad)}")

    @get(
        "/performance",
        sync_to_thread=True,
        summary="CPU, memory, GPU, pipeline fps, inference p50/p95, frame age, drops, queue depths; and their history",
        description=f"current: measured now (CPU over the last second, inference percentiles over the last minute). "
        f"history: the sampler's system_status_logs rows of the last `minutes` (1-{MAX_MINUTES}, default "
        f"{DEFAULT_MINUTES}) per component, oldest first; one every general.performance_sample_s seconds.",
    )
    def performance(
        self, performance: PerformanceService, minutes: int = DEFAULT_MINUTES
    ) -> Response[Envelope[PerformanceReport]]:
        report = performance.report(minutes)
        now = report.current
        return ok(
            report,
            message=f"{now.pipeline_fps:.1f} fps, inference p50 {now.inference_ms_p50} ms, CPU {now.cpu_pct:.0f}%",
        )

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
        "logs: system_logs older than max_days are archived to the object store (gzip JSON lines, as the nightly "
        "clean-up does) and deleted once archived, then system_status_logs older than max_days are deleted; a store "
        "that cannot take the archive is a 503 LOG_ARCHIVE_FAILED and no unarchived log is deleted. temp: deletes "
        "run work dirs, upload and export staging untouched for older_than_hours (default 24) and cached datasets / "
        "models untouched for cache_max_days (default 30); never a running job's work dir, never a cache while a "
        "job runs, never the deployed model's cache. Runs whatever auto_cleanup says (that switch is for the "
        "nightly Dagster schedule).",
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
        if data.type == "logs":
            return ok(report, message=f"logs clean-up: {report.logs_deleted} deleted ({report.logs_archived} archived)")
        return ok(report, message=f"images clean-up: {report.events_deleted} deleted")


class MetricsController(Controller):
    """``GET /metrics``: Prometheus text format (not the envelope), left out of the OpenAPI schema."""

    path = "/metrics"
    include_in_schema = False

    @get(sync_to_thread=True, include_in_schema=False)
    def metrics(self, metrics_registry: CollectorRegistry) -> Response[bytes]:
        # The process-wide metrics (pipeline, events, HTTP, process), then this app's scrape-time ones.
        body = generate_latest(REGISTRY) + generate_latest(metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
