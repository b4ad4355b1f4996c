"""``aidoor detect``: the realtime pipeline in a process of its own, without HTTP (docs/deployment.md).

The worker opens the same database and object store as the API, builds the same
``PipelineService`` the single-process service builds, and serves it to the API workers over
the live link (``realtime/live_endpoint.py``). It also runs what must run once, next to the
pipeline: the Home Assistant bridge (``AIDOOR_MQTT_URL``; its commands drive this pipeline)
and Telegram's button presses by polling (alerts themselves are claimed row by row from the
database, so every process may send them).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from detection_service.bus import EventBus
from detection_service.config import ConfigError, Settings
from detection_service.dagster_client import DagsterClient
from detection_service.database import make_engine, make_session_factory
from detection_service.live_link import LiveLink
from detection_service.ml.ultralytics_env import configure_offline
from detection_service.mqtt import build_mqtt_bridge, pipeline_commands
from detection_service.notifications.service import NotificationService
from detection_service.notifications.worker import build_notifier, updates_mode
from detection_service.realtime.live_endpoint import LiveEndpoint
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.services.event_history import EventService
from detection_service.services.health import package_version
from detection_service.services.job_queue import JobService
from detection_service.services.models import ModelService
from detection_service.services.performance import Monitoring
from detection_service.services.settings import SettingsService
from detection_service.storage import StorageError, make_object_store

log = logging.getLogger(__name__)

MQTT_TEST_ALERT = "ai-door-system: test alert (sent from MQTT / Home Assistant)"


class DetectorWorker:
    """Build with the process settings, ``start()``, and ``close()`` at the end."""

    def __init__(self, settings: Settings, *, node: str = "default", demo_policy: str | None = None) -> None:
        broker = settings.live_broker
        if broker is None:
            raise ConfigError("aidoor detect needs AIDOOR_LIVE_BROKER_URL (the broker the API workers use)")
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_offline(settings.data_dir)
        self.engine = make_engine(settings.database_url)
        self.session_factory = make_session_factory(self.engine)
        self.store = make_object_store(settings)
        try:
            self.store.ensure_bucket()
        except StorageError as exc:
            log.warning("object store not ready at start-up: %s", exc)
        self.settings_service = SettingsService(self.session_factory)
        dagster = DagsterClient(settings.dagster_url)
        self.model_service = ModelService(
            self.session_factory, self.store, JobService(self.session_factory), dagster, settings.data_dir / "cache"
        )
        event_service = EventService(
            self.session_factory, self.store, url_ttl=timedelta(seconds=settings.image_url_ttl_s)
        )
        # Button presses by polling are this worker's; webhooks reach the API.
        updates = "polling" if updates_mode(settings) == "polling" else "off"
        bus = EventBus()
        self.notifier = build_notifier(
            settings, self.session_factory, self.store, bus=bus, relabel=event_service.classify, updates=updates
        )
        self.service = PipelineService(
            settings=settings,
            session_factory=self.session_factory,
            store=self.store,
            settings_service=self.settings_service,
            model_service=self.model_service,
            bus=bus,
            alerts=self.notifier.queue_config,
            demo_policy=demo_policy,
        )
        # The periodic writers of shared state run here, once, not in each API worker: component
        # transitions and performance samples (system_status_logs; the API workers keep their
        # states in memory only). One detector worker per broker prefix, so one writer.
        self.monitoring = Monitoring(
            session_factory=self.session_factory,
            engine=self.engine,
            store=self.store,
            dagster=dagster,
            settings_service=self.settings_service,
            data_dir=settings.data_dir,
            bus=bus,
            pipeline_status=lambda: self.service.pipeline.status(),
            notifier=self.notifier,
        )
        self.service.pipeline.on_camera_state = self.monitoring.report_camera
        self.link = LiveLink(broker, role="detector", node=node, timeout_s=settings.live_timeout_s)
        self.endpoint = LiveEndpoint(self.service, self.link)
        notification_service = NotificationService(self.session_factory, self.settings_service, self.notifier)
        self.mqtt = build_mqtt_bridge(
            settings,
            self.service.bus,
            self.session_factory,
            None,
            pipeline_commands(self.service, lambda: asyncio.run(notification_service.send_test(MQTT_TEST_ALERT, 0.0))),
            version=package_version(),
        )
        if self.mqtt is not None:  # cameras changed through an API worker: Home Assistant hears of it
            self.service.camera_service.subscribe(self.mqtt.cameras_changed)
        self.stopped = threading.Event()

    def start(self) -> None:
        self.notifier.start()
        self.endpoint.start()
        self.service.start_background()
        self.monitoring.start()
        if self.mqtt is not None:
            self.mqtt.start()
        log.info("detector worker up: live link %s", self.link.base)

    def close(self) -> None:
        self.endpoint.close()  # "offline" first: the API stops asking
        self.monitoring.close()
        self.service.close()
        if self.mqtt is not None:
            self.mqtt.close()
        self.notifier.close()
        self.engine.dispose()
        self.stopped.set()
