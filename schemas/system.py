"""API structs of the System group."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

HealthStatus = Literal["ok", "degraded", "down"]


class ComponentHealth(msgspec.Struct, kw_only=True):
    status: HealthStatus
    latency_ms: float | None = None
    detail: str | None = None
    # Where the component lives (db dialect, bucket, URL): helps an operator, never a secret.
    target: str | None = None


class HealthReport(msgspec.Struct, kw_only=True):
    status: HealthStatus
    components: dict[str, ComponentHealth]
    version: str
    uptime_s: float


# -- POST /api/system/cleanup ------------------------------------------------------------------

CleanupType = Literal["images", "logs", "temp"]


class CleanupRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: CleanupType = "images"
    # temp: work dirs, upload and export staging untouched for this long are deleted ...
    older_than_hours: Annotated[int, msgspec.Meta(ge=1, le=87600)] = 24
    # ... and cached dataset versions / models not written for this many days.
    cache_max_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30


class CleanupReport(msgspec.Struct, kw_only=True):
    type: str
    max_days: int
    max_size_gb: float
    events_deleted: int = 0
    images_deleted: int = 0  # event_images rows
    objects_deleted: int = 0  # store objects, orphans included
    bytes_freed: int = 0
    orphan_objects_deleted: int = 0
    orphan_rows_deleted: int = 0  # event_images rows whose object was missing
    logs_deleted: int = 0  # system_logs (archived first) + system_status_logs rows
    # logs: system_logs rows written to the object store before they were deleted, and the objects.
    logs_archived: int = 0
    archive_keys: list[str] = msgspec.field(default_factory=list)
    events_kept: int = 0
    bytes_kept: int = 0
    # temp: what was deleted (paths relative to the data dir, the first 100) and what was kept
    # because it is in use (a running job's work dir, the deployed model's cache) or too recent.
    temp_deleted: int = 0
    temp_kept: int = 0
    deleted_paths: list[str] = msgspec.field(default_factory=list)
    kept_paths: dict[str, str] = msgspec.field(default_factory=dict)  # path -> why
    duration_ms: int = 0


# -- GET /api/system/logs -----------------------------------------------------------------------


class SystemLogEntry(msgspec.Struct, kw_only=True):
    id: int
    level: str  # schemas.enums.LogLevel
    component: str
    message: str
    details: Any = None
    user_id: int | None = None
    created_at: datetime


class LogHandlerStats(msgspec.Struct, kw_only=True):
    """The handler that feeds system_logs (services/system_logs.py): records are queued without
    waiting; ``dropped`` counts those lost to a full queue, ``failed`` those of a failed write."""

    level: str
    queue_size: int
    queue_capacity: int
    written: int = 0
    dropped: int = 0
    failed: int = 0
    last_error: str | None = None


class SystemLogPage(msgspec.Struct, kw_only=True):
    items: list[SystemLogEntry]
    total: int
    page: int
    limit: int
    # None where this process keeps no handler (an app without the lifespan's logging).
    handler: LogHandlerStats | None = None


# -- GET /api/system/storage --------------------------------------------------------------------


class PrefixUsage(msgspec.Struct, kw_only=True):
    objects: int
    bytes: int


class ObjectStoreSnapshot(msgspec.Struct, kw_only=True):
    """The object store by top-level prefix, as the ``storage_usage`` Dagster asset last listed it."""

    taken_at: datetime
    age_s: float
    objects: int
    bytes: int
    # events, datasets, models, reports always; any other top-level prefix under its name.
    by_prefix: dict[str, PrefixUsage]


class DatabaseUsage(msgspec.Struct, kw_only=True):
    dialect: str
    bytes: int | None = None  # None: this database does not say (e.g. SQLite in memory)
    detail: str | None = None


class DiskUsage(msgspec.Struct, kw_only=True):
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


class StorageReport(msgspec.Struct, kw_only=True):
    object_store: ObjectStoreSnapshot | None  # None: no snapshot yet (see message)
    database: DatabaseUsage
    disk: DiskUsage | None
    message: str


# -- GET /api/system/status ---------------------------------------------------------------------

ComponentState = Literal["running", "stopped", "error"]
# The seed's system_status_logs components, plus the database and Dagster.
STATUS_COMPONENTS: tuple[str, ...] = ("camera", "detection", "notification", "storage", "database", "dagster")
# Listed only where configured (ComponentStatusRegistry.enable): mqtt with AIDOOR_MQTT_URL.
OPTIONAL_STATUS_COMPONENTS: tuple[str, ...] = ("mqtt",)


class ComponentStatus(msgspec.Struct, kw_only=True):
    component: str
    status: ComponentState
    reason: str | None = None  # why it is stopped / in error (or what it runs on)
    since: datetime  # when ``status`` last changed (UTC)
    checked_at: datetime | None = None  # the last report or probe; None: not checked yet


class JournalStats(msgspec.Struct, kw_only=True):
    """The event writer's local journal (docs/pipeline.md "Journal"): writes not yet in the
    database / store, their size against the bound, and what the bound refused, per kind."""

    entries: int
    bytes: int
    max_bytes: int
    replayed: int  # entries a previous run left, replayed at this start
    refused: dict[str, int]  # insert / update / image: refused by the bound (full), logged


class SystemStatus(msgspec.Struct, kw_only=True):
    # running: every component runs; degraded: one is stopped or in error.
    status: Literal["running", "degraded"]
    components: dict[str, ComponentStatus]
    uptime_s: float
    # Rows the registry could not write to system_status_logs (queue full or the database failed).
    rows_dropped: int = 0
    journal: JournalStats | None = None  # None: no pipeline (or it runs without a journal)


# -- GET /api/system/performance ----------------------------------------------------------------


class GpuUsage(msgspec.Struct, kw_only=True):
    name: str
    memory_allocated_bytes: int
    memory_reserved_bytes: int
    memory_total_bytes: int
    utilization_pct: float | None = None  # needs NVML; None where it is not available


class PerformanceNow(msgspec.Struct, kw_only=True):
    cpu_pct: float  # of one core (psutil): 200 = two cores busy
    rss_bytes: int
    memory_pct: float  # RSS of the machine's memory
    gpu: GpuUsage | None  # None: no CUDA device (or torch not loaded)
    pipeline_fps: float
    source_fps: float
    inference_ms_p50: float | None  # over the last minute; None: no inference in it
    inference_ms_p95: float | None
    inferences_last_minute: int
    frame_age_ms: float
    dropped_frames: int  # since the pipeline started
    writer_queue_depth: int  # event rows + images waiting for the database / store
    alert_queue_depth: int | None  # alerts pending or being sent; None: database not readable
    disk_used_pct: float | None  # the data dir's disk
    journal: JournalStats | None = None  # the event writer's local journal


class PerformanceSample(msgspec.Struct, kw_only=True):
    """One system_status_logs row of the sampler."""

    logged_at: datetime
    status: str
    cpu_usage: float | None = None
    memory_usage: float | None = None
    gpu_usage: float | None = None
    disk_usage: float | None = None
    fps: int | None = None
    values: dict[str, Any] = msgspec.field(default_factory=dict)


class PerformanceReport(msgspec.Struct, kw_only=True):
    current: PerformanceNow
    sample_interval_s: int  # setting general.performance_sample_s
    minutes: int
    # component -> its samples in the last ``minutes``, oldest first
    history: dict[str, list[PerformanceSample]]
