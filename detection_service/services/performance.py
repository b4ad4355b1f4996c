"""GET /api/system/performance and the status of the components that do not report themselves.

``PerformanceMonitor`` runs two daemon threads:

- ``status-poll`` (every ``POLL_S``): reads the pipeline's status (camera, detection) into the
  component registry and measures the process's CPU (psutil: the share since the last poll).
  Cheap reads only, so a hung probe never delays the camera's state.
- ``performance-sampler`` (every ``general.performance_sample_s``, default 10): probes the database,
  the object store, Dagster and the notifier into the registry, then writes one
  ``system_status_logs`` row per component (metadata ``{"kind": "sample", ...}``) through the
  registry's writer (never blocking; drops are counted).

``PerformanceService.report`` answers with the values now and the samples of the last minutes.
``AppCollector`` gives Prometheus what only exists at scrape time: pipeline fps, queue depths,
alert failures by reason, batch jobs by status (``GET /metrics``).

The parts of the realtime side are duck-typed (``pipeline_status``: ``DetectionPipeline.status``,
``notifier``: the Telegram ``Notifier``): services sit below them.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import psutil
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy.orm import Session, sessionmaker

from detection_service import metrics
from detection_service.bus import EventBus, EventCreated
from detection_service.dagster_client import DagsterClient
from detection_service.database import ping
from detection_service.errors import Invalid
from detection_service.services.component_status import SAMPLE, ComponentStatusRegistry
from detection_service.services.settings import SettingsService
from detection_service.storage import ObjectStore
from schemas.db import BatchJob, NotificationHistory, SystemStatusLog, utcnow
from schemas.enums import JobStatus
from schemas.settings import GeneralSettings
from schemas.system import (
    STATUS_COMPONENTS,
    GpuUsage,
    JournalStats,
    PerformanceNow,
    PerformanceReport,
    PerformanceSample,
)

log = logging.getLogger(__name__)

POLL_S = 1.0
MAX_MINUTES = 360  # GET /api/system/performance?minutes=: at most six hours of samples
DEFAULT_MINUTES = 15
ALERTS_QUEUED = ("pending", "sending")  # notification_history.send_status of alerts not yet out
PipelineStatus = Callable[[], dict[str, Any]]


def _pct(value: float | None) -> float | None:
    """A percentage as system_status_logs' NUMERIC(5,2) holds it."""
    return None if value is None else round(min(max(value, 0.0), 999.99), 2)


def gpu_usage() -> GpuUsage | None:
    """CUDA device 0 through torch, if torch is loaded (the detector loads it) and sees one."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        try:
            utilization: float | None = float(torch.cuda.utilization(0))
        except Exception:  # needs pynvml; memory figures are still worth showing
            utilization = None
        return GpuUsage(
            name=props.name,
            memory_allocated_bytes=int(torch.cuda.memory_allocated(0)),
            memory_reserved_bytes=int(torch.cuda.memory_reserved(0)),
            memory_total_bytes=int(props.total_memory),
            utilization_pct=utilization,
        )
    except Exception as exc:  # a broken driver must not break the endpoint
        log.debug("GPU usage unknown: %s", exc)
        return None


class PerformanceMonitor:
    def __init__(
        self,
        *,
        registry: ComponentStatusRegistry,
        session_factory: sessionmaker[Session],
        engine: sa.Engine,
        store: ObjectStore | None,
        dagster: DagsterClient | None,
        settings_service: SettingsService,
        data_dir: Path,
        pipeline_status: PipelineStatus | None = None,
        notifier: Any = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.registry = registry
        self.session_factory = session_factory
        self.engine = engine
        self.store = store
        self.dagster = dagster
        self.settings_service = settings_service
        self.data_dir = Path(data_dir)
        self.pipeline_status = pipeline_status
        self.notifier = notifier
        self.poll_s = poll_s
        self.sample_s = float(GeneralSettings().performance_sample_s)
        self.cpu_pct = 0.0
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the measurement
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        try:
            self.sample_s = float(settings_service.get("general").performance_sample_s)  # type: ignore[attr-defined]
        except Exception as exc:  # database not there yet: the default until the setting is read
            log.warning("general.performance_sample_s not readable (%s); sampling every %.0f s", exc, self.sample_s)
        settings_service.subscribe(self.on_settings)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("status-poll", self._poll_loop), ("performance-sampler", self._sample_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(2.0)

    def on_settings(self, category: str, values: msgspec.Struct) -> None:
        """SettingsService listener: a new sample interval applies at once."""
        if category == "general":
            self.sample_s = float(values.performance_sample_s)  # type: ignore[attr-defined]
            self._wake.set()

    # -- status poll (cheap, every second) ------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # never let the poller die: log and go on
                log.exception("status poll failed")
            self._stop.wait(self.poll_s)

    def poll(self) -> dict[str, Any] | None:
        """CPU since the last poll; camera and detection from the pipeline's status."""
        self.cpu_pct = float(self._process.cpu_percent(None))
        if self.pipeline_status is None:
            return None
        raw = self.pipeline_status()
        state = raw.get("status")
        if state == "running":
            self.registry.report("detection", "running", raw.get("backend") or "running without a model")
        elif state == "error":
            self.registry.report("detection", "error", raw.get("error") or "the pipeline failed")
        else:
            self.registry.report("detection", "stopped", "pipeline stopped")
        source = raw.get("source")
        if state == "stopped":
            self.registry.report("camera", "stopped", "pipeline stopped" if source else "no camera source configured")
        elif raw.get("camera_status") == "connected":
            self.registry.report("camera", "running", raw.get("source"))
        else:
            reason = raw.get("camera_error") or "no frame from the source"
            self.registry.report("camera", "error", f"{source}: {reason}" if source else reason)
        return raw

    # -- probes and samples (every sample interval) ---------------------------------------------

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception:
                log.exception("performance sample failed")
            self._wake.clear()
            self._wake.wait(max(0.5, self.sample_s - (time.monotonic() - started)))

    def probe(self) -> dict[str, float]:
        """Database, object store, Dagster and notifier into the registry; latency (ms) of each."""
        latency: dict[str, float] = {}

        def timed(name: str, check: Callable[[], tuple[str, str | None]]) -> None:
            started = time.perf_counter()
            try:
                status, reason = check()
            except Exception as exc:
                status, reason = "error", (str(exc).splitlines() or [type(exc).__name__])[0]
            latency[name] = round((time.perf_counter() - started) * 1000, 1)
            self.registry.report(name, status, reason)  # type: ignore[arg-type]

        def database() -> tuple[str, str | None]:
            ping(self.engine)
            return "running", self.engine.dialect.name

        def storage() -> tuple[str, str | None]:
            if self.store is None:
                return "stopped", "no object store"
            self.store.check()
            return "running", f"{self.store.kind}:{self.store.bucket}"

        def dagster() -> tuple[str, str | None]:
            if self.dagster is None:
                return "stopped", "no Dagster client"
            try:
                self.dagster.server_info()
            except Exception as exc:
                # Nothing listening: not started (make run starts it); anything else is an error.
                refused = "refused" in str(exc).lower() or "connecterror" in repr(exc.__cause__).lower()
                return ("stopped" if refused else "error"), str(exc)
            return "running", self.dagster.base_url

        def notification() -> tuple[str, str | None]:
            if self.notifier is None:
                return "stopped", "no notifier"
            health, detail = self.notifier.health()
            if health == "ok":
                return "running", detail
            if not getattr(self.notifier, "running", True):
                return "stopped", detail
            return "error", detail

        timed("database", database)
        timed("storage", storage)
        timed("dagster", dagster)
        timed("notification", notification)
        return latency

    def sample(self) -> PerformanceNow:
        latency = self.probe()
        now = self.current()
        states = self.registry.snapshot()
        logged_at = utcnow()
        per_component: dict[str, dict[str, Any]] = {
            "camera": {"fps": round(now.source_fps), "values": {"dropped_frames": now.dropped_frames}},
            "detection": {
                "fps": round(now.pipeline_fps),
                "cpu_usage": _pct(now.cpu_pct),
                "memory_usage": _pct(now.memory_pct),
                "gpu_usage": _pct(now.gpu.utilization_pct) if now.gpu else None,
                "values": {
                    "rss_bytes": now.rss_bytes,
                    "pipeline_fps": now.pipeline_fps,
                    "inference_ms_p50": now.inference_ms_p50,
                    "inference_ms_p95": now.inference_ms_p95,
                    "frame_age_ms": now.frame_age_ms,
                    "writer_queue_depth": now.writer_queue_depth,
                },
            },
            "notification": {"values": {"alert_queue_depth": now.alert_queue_depth}},
            "storage": {"disk_usage": _pct(now.disk_used_pct), "values": {}},
            "database": {"values": {}},
            "dagster": {"values": {}},
        }
        for component in STATUS_COMPONENTS:
            state = states[component]
            fields = per_component[component]
            values = {"kind": SAMPLE, **fields.pop("values")}
            if component in latency:
                values["latency_ms"] = latency[component]
            self.registry.enqueue(
                {
                    "component": component,
                    "status": state.status,
                    "error_message": state.reason if state.status == "error" else None,
                    "metadata_": values,
                    "logged_at": logged_at,
                    **fields,
                }
            )
        return now

    # -- values now -----------------------------------------------------------------------------

    def alert_queue_depth(self) -> int | None:
        try:
            with self.session_factory() as session:
                return int(
                    session.scalar(
                        sa.select(sa.func.count(NotificationHistory.id)).where(
                            NotificationHistory.send_status.in_(ALERTS_QUEUED)
                        )
                    )
                    or 0
                )
        except sa.exc.SQLAlchemyError as exc:
            log.debug("alert queue depth unknown: %s", exc)
            return None

    def current(self) -> PerformanceNow:
        raw = self.pipeline_status() if self.pipeline_status is not None else {}
        recorder = raw.get("recorder") or {}
        samples, p50, p95 = metrics.INFERENCE_WINDOW.percentiles()
        try:
            memory = self._process.memory_info()
            rss, memory_pct = int(memory.rss), 100.0 * memory.rss / psutil.virtual_memory().total
        except psutil.Error:
            rss, memory_pct = 0, 0.0
        try:
            disk = shutil.disk_usage(self.data_dir)
            disk_pct: float | None = round(100.0 * disk.used / disk.total, 2) if disk.total else None
        except OSError:
            disk_pct = None
        return PerformanceNow(
            cpu_pct=round(self.cpu_pct, 1),
            rss_bytes=rss,
            memory_pct=round(memory_pct, 2),
            gpu=gpu_usage(),
            pipeline_fps=float(raw.get("fps", 0.0)),
            source_fps=float(raw.get("source_fps", 0.0)),
            inference_ms_p50=p50,
            inference_ms_p95=p95,
            inferences_last_minute=samples,
            frame_age_ms=float(raw.get("frame_age_ms", 0.0)),
            dropped_frames=int(raw.get("dropped_frames", 0)),
            writer_queue_depth=int(recorder.get("pending_db", 0)) + int(recorder.get("pending_images", 0)),
            alert_queue_depth=self.alert_queue_depth(),
            disk_used_pct=disk_pct,
            journal=journal_of(raw),
        )

    def journal(self) -> JournalStats | None:
        """The event writer's journal now (GET /api/system/status)."""
        return journal_of(self.pipeline_status() if self.pipeline_status is not None else {})


def journal_of(pipeline_status: dict[str, Any]) -> JournalStats | None:
    stats = (pipeline_status.get("recorder") or {}).get("journal")
    return msgspec.convert(stats, JournalStats, strict=False) if stats else None


class PerformanceService:
    """GET /api/system/performance: the values now and the sampler's rows of the last minutes."""

    def __init__(self, session_factory: sessionmaker[Session], monitor: PerformanceMonitor) -> None:
        self.session_factory = session_factory
        self.monitor = monitor

    def report(self, minutes: int = DEFAULT_MINUTES) -> PerformanceReport:
        if isinstance(minutes, bool) or not 1 <= minutes <= MAX_MINUTES:
            raise Invalid(f"minutes must be between 1 and {MAX_MINUTES}", {"value": minutes}, code="INVALID_MINUTES")
        return PerformanceReport(
            current=self.monitor.current(),
            sample_interval_s=round(self.monitor.sample_s),
            minutes=minutes,
            history=self.history(minutes),
        )

    def history(self, minutes: int) -> dict[str, list[PerformanceSample]]:
        since = utcnow() - timedelta(minutes=minutes)
        row = SystemStatusLog
        with self.session_factory() as session:
            rows = session.scalars(
                sa.select(row)
                .where(row.logged_at >= since, row.metadata_["kind"].as_string() == SAMPLE)
                .order_by(row.logged_at, row.id)
            ).all()
        history: dict[str, list[PerformanceSample]] = {name: [] for name in STATUS_COMPONENTS}
        for r in rows:
            values = {k: v for k, v in (r.metadata_ or {}).items() if k != "kind"}
            history.setdefault(r.component, []).append(
                PerformanceSample(
                    logged_at=r.logged_at,
                    status=r.status,
                    cpu_usage=_float(r.cpu_usage),
                    memory_usage=_float(r.memory_usage),
                    gpu_usage=_float(r.gpu_usage),
                    disk_usage=_float(r.disk_usage),
                    fps=r.fps,
                    values=values,
                )
            )
        return history


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class AppCollector:
    """Prometheus collector of one app: what only exists at scrape time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        monitor: PerformanceMonitor,
        registry: ComponentStatusRegistry,
        notifier: Any = None,
    ) -> None:
        self.session_factory = session_factory
        self.monitor = monitor
        self.registry = registry
        self.notifier = notifier

    def collect(self) -> Iterator[Any]:
        raw = self.monitor.pipeline_status() if self.monitor.pipeline_status is not None else {}
        recorder = raw.get("recorder") or {}
        yield GaugeMetricFamily(
            "aidoor_pipeline_fps", "Frames the pipeline handles per second", float(raw.get("fps", 0))
        )
        yield GaugeMetricFamily(
            "aidoor_source_fps", "Frames per second the camera source delivers", float(raw.get("source_fps", 0))
        )
        yield GaugeMetricFamily(
            "aidoor_writer_queue_depth",
            "Event rows and images waiting for the database / object store",
            float(recorder.get("pending_db", 0)) + float(recorder.get("pending_images", 0)),
        )
        yield CounterMetricFamily(
            "aidoor_writer_retries",
            "Failed event writes retried (since the pipeline was built)",
            recorder.get("retries", 0),
        )
        depth = self.monitor.alert_queue_depth()
        if depth is not None:
            yield GaugeMetricFamily("aidoor_alert_queue_depth", "Alerts pending or being sent", float(depth))
        if self.notifier is not None:
            stats = self.notifier.stats
            failures = CounterMetricFamily(
                "aidoor_alert_failures",
                "Notifier errors by where they happened (send, deliver, polling, ...)",
                labels=["reason"],
            )
            for reason, count in sorted(dict(stats.errors_by_kind).items()):
                failures.add_metric([reason], count)
            yield failures
            yield CounterMetricFamily("aidoor_alerts_sent", "Alerts sent since start", stats.sent)
            yield CounterMetricFamily("aidoor_alerts_given_up", "Alerts that failed for good since start", stats.failed)
        jobs = GaugeMetricFamily("aidoor_batch_jobs", "Batch jobs by status (batch_jobs table)", labels=["status"])
        try:
            with self.session_factory() as session:
                counts = dict(
                    session.execute(sa.select(BatchJob.status, sa.func.count(BatchJob.id)).group_by(BatchJob.status))
                    .tuples()
                    .all()
                )
        except sa.exc.SQLAlchemyError as exc:
            log.debug("batch job counts unknown: %s", exc)
        else:
            for status in JobStatus:
                jobs.add_metric([status.value], float(counts.get(status.value, 0)))
            yield jobs
        up = GaugeMetricFamily(
            "aidoor_component_up", "1 if the component runs (GET /api/system/status)", labels=["component"]
        )
        for name, state in self.registry.snapshot().items():
            up.add_metric([name], 1.0 if state.status == "running" else 0.0)
        yield up


class Monitoring:
    """What the app's lifespan builds for GET /api/system/status, /performance and /metrics."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        engine: sa.Engine,
        store: ObjectStore | None,
        dagster: DagsterClient | None,
        settings_service: SettingsService,
        data_dir: Path,
        bus: EventBus,
        pipeline_status: PipelineStatus | None,
        notifier: Any = None,
        record: bool = True,
    ) -> None:
        # record False: the states stay in memory, no system_status_logs rows (transitions nor
        # samples): another process owns them (the detector worker; docs/deployment.md).
        self.registry = ComponentStatusRegistry(session_factory if record else None)
        self.record = record
        self.monitor = PerformanceMonitor(
            registry=self.registry,
            session_factory=session_factory,
            engine=engine,
            store=store,
            dagster=dagster,
            settings_service=settings_service,
            data_dir=data_dir,
            pipeline_status=pipeline_status,
            notifier=notifier,
        )
        self.service = PerformanceService(session_factory, self.monitor)
        # This app's scrape-time metrics; the process-wide ones are in prometheus_client's REGISTRY.
        self.metrics_registry = CollectorRegistry(auto_describe=False)
        self.metrics_registry.register(AppCollector(session_factory, self.monitor, self.registry, notifier))
        self._events = bus.subscribe_callback("metrics", _count_created)

    def report_camera(self, status: str, reason: str | None) -> None:
        """The capture's ``on_state`` hook."""
        self.registry.report("camera", status, reason)  # type: ignore[arg-type]

    def start(self) -> None:
        self.monitor.start()

    def close(self) -> None:
        self._events.close()
        self.monitor.close()
        self.registry.close()  # writes what is queued


def _count_created(message: Any) -> None:
    if isinstance(message, EventCreated):
        metrics.count_event(message.object_type)
