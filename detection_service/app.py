"""Litestar application factory. Long-lived resources are opened in the lifespan and kept on
``app.state``; handlers never read it: they declare what they need as parameters and the
providers in ``detection_service/api/dependencies.py`` (registered here) inject it. Domain errors
become the error envelope through ``api/responses.EXCEPTION_HANDLERS``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from detection_service.api.analytics import AnalyticsController
from detection_service.api.auth import AuthController, AuthGuard, LoginPageController
from detection_service.api.batch import BatchController
from detection_service.api.cameras import CamerasController
from detection_service.api.dashboard import DashboardController, dashboard_assets
from detection_service.api.data_yaml import DataYamlController
from detection_service.api.datasets import DatasetController
from detection_service.api.dependencies import DEPENDENCIES
from detection_service.api.detection import DetectionController
from detection_service.api.detections import DetectionsController
from detection_service.api.events import EventsController
from detection_service.api.live import LiveController
from detection_service.api.models import ModelController
from detection_service.api.notifications import NotificationController
from detection_service.api.objects import ObjectController
from detection_service.api.reports import ReportController
from detection_service.api.responses import EXCEPTION_HANDLERS, UtcDateTimeSchema, document_errors
from detection_service.api.restart import RestartController
from detection_service.api.security_headers import (
    SecurityHeaders,
    content_security_policy,
    image_origins,
    inline_script_hashes,
)
from detection_service.api.settings import SettingsController
from detection_service.api.stream import VIEWER_HTML, StreamController
from detection_service.api.system import PROMETHEUS, MetricsController, SystemController
from detection_service.bus import EventBus
from detection_service.config import Settings
from detection_service.dagster_client import DagsterClient
from detection_service.database import make_engine, make_session_factory
from detection_service.errors import DomainError
from detection_service.live_link import LiveLink
from detection_service.ml.ultralytics_env import configure_offline
from detection_service.mqtt import build_mqtt_bridge, pipeline_commands
from detection_service.notifications.service import NotificationService
from detection_service.notifications.worker import build_notifier, updates_mode
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.realtime.remote import RemotePipelineService
from detection_service.realtime.restart import SystemRestart
from detection_service.services.auth import AuthService
from detection_service.services.data_yaml import DataYamlService
from detection_service.services.event_history import EventService
from detection_service.services.health import package_version
from detection_service.services.job_queue import JobService
from detection_service.services.models import ModelService
from detection_service.services.performance import Monitoring
from detection_service.services.retention import RetentionService
from detection_service.services.settings import SettingsService
from detection_service.services.storage_report import StorageReportService
from detection_service.services.system_logs import SystemLogService, install_log_handler, remove_log_handler
from detection_service.storage import StorageError, make_object_store

log = logging.getLogger(__name__)

MQTT_TEST_ALERT = "ai-door-system: test alert (sent from MQTT / Home Assistant)"

ROUTE_HANDLERS = [
    SystemController,
    SettingsController,
    ObjectController,
    DatasetController,
    DataYamlController,
    ModelController,
]
ROUTE_HANDLERS += [DetectionController, StreamController, DetectionsController, EventsController]
ROUTE_HANDLERS += [NotificationController, AnalyticsController, ReportController]
ROUTE_HANDLERS += [MetricsController]  # GET /metrics (Prometheus text, not in the schema)
ROUTE_HANDLERS += [BatchController]
ROUTE_HANDLERS += [CamerasController]  # /api/cameras (docs/cameras.md)
ROUTE_HANDLERS += [RestartController]  # POST /api/system/restart (api/restart.py)
ROUTE_HANDLERS += [DashboardController, dashboard_assets, LiveController]  # the page at / (docs/dashboard.md)
ROUTE_HANDLERS += [AuthController, LoginPageController]  # /api/auth/..., /login (docs/security.md)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    settings.check_auth_bind(settings.host)
    # Every route's one guard (api/auth.py); it gets the AuthService once the database is open.
    auth_guard = AuthGuard(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_offline(settings.data_dir)  # before anything imports ultralytics
        engine = make_engine(settings.database_url)
        store = make_object_store(settings)
        try:
            store.ensure_bucket()
        except StorageError as exc:
            # Keep serving: health reports storage down and writers retry later.
            log.warning("object store not ready at start-up: %s", exc)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.object_store = store
        app.state.dagster = DagsterClient(settings.dagster_url)
        app.state.settings_service = SettingsService(app.state.session_factory)
        app.state.auth_service = AuthService(app.state.session_factory, timedelta(hours=settings.session_ttl_h))
        auth_guard.service = app.state.auth_service
        _first_start_admin(app.state.auth_service, settings)
        # The service's own records at general.log_level and up reach system_logs, never blocking.
        log_handler = install_log_handler(app.state.session_factory, app.state.settings_service)
        app.state.system_logs = SystemLogService(app.state.session_factory, log_handler)
        app.state.storage_report = StorageReportService(app.state.session_factory, engine, settings.data_dir)
        app.state.jobs = JobService(app.state.session_factory)
        app.state.event_service = EventService(
            app.state.session_factory, store, url_ttl=timedelta(seconds=settings.image_url_ttl_s)
        )
        app.state.data_yaml_service = DataYamlService(app.state.session_factory, store)
        app.state.retention = RetentionService(app.state.session_factory, store, app.state.settings_service)
        app.state.model_service = ModelService(
            app.state.session_factory, store, app.state.jobs, app.state.dagster, settings.data_dir / "cache"
        )
        bus = EventBus()  # pipeline -> notifier, viewers, tests (docs/events.md)
        live_broker = settings.live_broker  # None: the pipeline runs here (docs/deployment.md)
        # Telegram alerts (docs/notifications.md): its own thread; never blocks start-up. Whatever
        # records an event queues its alerts with the notifier's queue configuration. With detector
        # workers apart, button presses by polling are theirs (two pollers conflict); webhooks stay here.
        notifier = build_notifier(
            settings,
            app.state.session_factory,
            store,
            bus=bus,
            relabel=app.state.event_service.classify,
            **({"updates": "webhook" if updates_mode(settings) == "webhook" else "off"} if live_broker else {}),
        )
        pipeline_service: PipelineService | RemotePipelineService
        if live_broker is None:
            # Realtime pipeline (docs/pipeline.md "Service wiring"): nothing heavy here; the current
            # model loads on a background thread, the pipeline starts only if a source is configured.
            pipeline_service = PipelineService(
                settings=settings,
                session_factory=app.state.session_factory,
                store=store,
                settings_service=app.state.settings_service,
                model_service=app.state.model_service,
                bus=bus,
                alerts=notifier.queue_config,
            )
        else:
            # The pipeline runs in `aidoor detect` workers; the same handlers reach it over the live
            # link, and its bus messages arrive on this process's bus.
            link = LiveLink(live_broker, role="api", timeout_s=settings.live_timeout_s)
            pipeline_service = RemotePipelineService(settings, link, bus, app.state.session_factory)
            app.state.settings_service.subscribe(pipeline_service.settings_changed)
            app.state.model_service.deploy_hook = pipeline_service.load_model  # the worker loads, then "current"
        app.state.pipeline_service = pipeline_service
        app.state.pipeline = pipeline_service.pipeline
        app.state.bus = bus
        app.state.detector_holder = pipeline_service.holder
        app.state.manual_detection = pipeline_service.manual
        notifier.start()
        app.state.notifier = notifier
        app.state.notification_service = NotificationService(
            app.state.session_factory, app.state.settings_service, notifier
        )
        app.state.system_restart = SystemRestart(
            pipeline_service,  # type: ignore[arg-type]
            notifier=notifier,
            engine=engine,
            store=store,
        )
        # GET /api/system/status, /performance, /metrics (docs/system.md): the component registry
        # (the capture reports its camera into it), the status poller and sampler, the collectors.
        monitoring = Monitoring(
            session_factory=app.state.session_factory,
            engine=engine,
            store=store,
            dagster=app.state.dagster,
            settings_service=app.state.settings_service,
            data_dir=settings.data_dir,
            bus=bus,
            pipeline_status=pipeline_status_of(pipeline_service),
            notifier=notifier,
            # With detector workers apart, system_status_logs is the detector worker's to write: N API
            # workers sampling would write N rows per sample (docs/deployment.md "Singletons").
            record=live_broker is None,
        )
        pipeline_service.pipeline.on_camera_state = monitoring.report_camera
        app.state.component_status = monitoring.registry
        app.state.performance = monitoring.service
        app.state.metrics_registry = monitoring.metrics_registry
        # MQTT / Home Assistant (docs/mqtt.md), when AIDOOR_MQTT_URL is set: its own threads; a
        # broker that is away degrades the mqtt component and blocks nothing. Commands call the
        # same services as the Detection Process API and POST /api/notifications/test.
        notification_service = app.state.notification_service
        mqtt_bridge = (
            None
            if isinstance(pipeline_service, RemotePipelineService)  # the detector worker runs the bridge
            else build_mqtt_bridge(
                settings,
                bus,
                app.state.session_factory,
                monitoring.registry,
                pipeline_commands(
                    pipeline_service, lambda: asyncio.run(notification_service.send_test(MQTT_TEST_ALERT, 0.0))
                ),
                version=package_version(),
            )
        )
        app.state.mqtt = mqtt_bridge
        if mqtt_bridge is not None:  # cameras added / renamed / removed: Home Assistant hears of it
            pipeline_service.camera_service.subscribe(mqtt_bridge.cameras_changed)
        pipeline_service.start_background()
        monitoring.start()
        if mqtt_bridge is not None:
            mqtt_bridge.start()
        app.state.started_at = time.time()
        try:
            yield
        finally:
            monitoring.close()
            pipeline_service.close()
            if mqtt_bridge is not None:
                mqtt_bridge.close()  # availability "offline" (retained)
            notifier.close()  # after the pipeline's last writes; unsent alerts stay queued
            remove_log_handler(log_handler)  # writes what is queued
            engine.dispose()

    csp = content_security_policy(inline_script_hashes(VIEWER_HTML), image_origins(settings))
    app = Litestar(
        route_handlers=ROUTE_HANDLERS,
        lifespan=[lifespan],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        guards=[auth_guard],
        middleware=[PROMETHEUS.middleware],  # HTTP request latency by route (GET /metrics)
        request_max_body_size=settings.max_upload_mb * 1024 * 1024,
        cors_config=CORSConfig(allow_origins=[settings.public_url]),
        openapi_config=OpenAPIConfig(
            title="ai-door-system detection service",
            version=package_version(),
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
        before_send=[SecurityHeaders(csp)],  # on every response, errors included (api/security_headers.py)
        plugins=[UtcDateTimeSchema()],  # stored UTC times as served (api/responses.py)
    )
    document_errors(app)  # the OpenAPI document declares the error envelope on every operation
    return app


def pipeline_status_of(pipeline_service: PipelineService | RemotePipelineService) -> Callable[[], dict[str, Any]]:
    """The monitoring's view of the pipeline; a worker that cannot be reached reads as an error."""

    def status() -> dict[str, Any]:
        try:
            return pipeline_service.pipeline.status()
        except DomainError as exc:
            return {"status": "error", "error": exc.message, "camera_status": "disconnected"}

    return status


def _first_start_admin(auth_service: AuthService, settings: Settings) -> None:
    """A fresh install (no users) gets ``admin`` with a one-time password, shown once here."""
    if not settings.auth_enabled:
        log.warning("AIDOOR_AUTH=off: no sign-in, every request acts as an admin (loopback only)")
        return
    password = auth_service.ensure_first_admin()
    if password is not None:
        log.warning(
            "\n==> First start: sign in at %s/login as 'admin' with the one-time password  %s\n"
            "    (shown only now; you choose a new one at first sign-in). "
            "Or create accounts and tokens: aidoor user create / aidoor token create",
            settings.public_url,
            password,
        )
