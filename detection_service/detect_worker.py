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
import time
from datetime import timedelta

from detection_service.bus import EventBus
from detection_service.config import ConfigError, Settings
from detection_service.dagster_client import DagsterClient
from detection_service.database import make_engine, make_session_factory
from detection_service.live_link import DEFAULT_WORKER, LiveLink, WorkerInfo
from detection_service.ml.ultralytics_env import configure_offline
from detection_service.mqtt import build_mqtt_bridge, pipeline_commands
from detection_service.notifications.service import NotificationService
from detection_service.notifications.worker import build_notifier, updates_mode
from detection_service.realtime.live_endpoint import LiveEndpoint
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.services.cameras import CameraService
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

    def __init__(
        self,
        settings: Settings,
        *,
        node: str = "default",
        demo_policy: str | None = None,
        cameras: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        """``cameras``: ids or names of the cameras table this worker runs (None: every camera);
        ``name``: how the API workers know it (default: ``default`` for every camera, else
        ``cameras-<ids>``)."""
        broker = settings.live_broker
        if broker is None:
            raise ConfigError("aidoor detect needs AIDOOR_LIVE_BROKER_URL (the broker the API workers use)")
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_offline(settings.data_dir)
        self.engine = make_engine(settings.database_url)
        self.session_factory = make_session_factory(self.engine)
        self.camera_ids = resolve_cameras(CameraService(self.session_factory), cameras)
        default_name = DEFAULT_WORKER if self.camera_ids is None else "cameras-" + "-".join(map(str, self.camera_ids))
        self.name = name or default_name
        # Camera 1's worker (or the one of every camera) runs what must run once per installation.
        self.primary = self.camera_ids is None or 1 in self.camera_ids
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
        # Button presses by polling are this worker's (the primary's); webhooks reach the API.
        updates = "polling" if updates_mode(settings) == "polling" and self.primary else "off"
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
            camera_ids=frozenset(self.camera_ids) if self.camera_ids is not None else None,
        )
        # The periodic writers of shared state run here, once, not in each API worker: component
        # transitions and performance samples (system_status_logs; the API workers keep their
        # states in memory only). With several detector workers, the primary's only.
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
            record=self.primary,
        )
        self.service.pipeline.on_camera_state = self.monitoring.report_camera
        self.node = node
        self.link = LiveLink(
            broker,
            role="detector",
            node=node,
            timeout_s=settings.live_timeout_s,
            worker=self.name,
            cameras=self.camera_ids,
        )
        self.endpoint = LiveEndpoint(self.service, self.link)
        notification_service = NotificationService(self.session_factory, self.settings_service, self.notifier)
        self.mqtt = (
            None
            if not self.primary
            else build_mqtt_bridge(
                settings,
                self.service.bus,
                self.session_factory,
                None,
                pipeline_commands(
                    self.service, lambda: asyncio.run(notification_service.send_test(MQTT_TEST_ALERT, 0.0))
                ),
                version=package_version(),
            )
        )
        if self.mqtt is not None:  # cameras changed through an API worker: Home Assistant hears of it
            self.service.camera_service.subscribe(self.mqtt.cameras_changed)
        self.stopped = threading.Event()

    def start(self) -> None:
        """Refuses (ConfigError) when another online worker runs one of this worker's cameras."""
        self.check_claims()
        self.notifier.start()
        self.endpoint.start()
        self.service.start_background()
        self.monitoring.start()
        if self.mqtt is not None:
            self.mqtt.start()
        log.info("detector worker up: live link %s", self.link.base)

    def check_claims(self, wait_s: float = 1.0) -> None:
        """Read the workers announced on the broker (retained) and refuse to run a camera that an
        online worker runs already: two would both record its events and answer its requests."""
        assert self.settings.live_broker is not None
        probe = LiveLink(self.settings.live_broker, role="api", node=self.node)
        try:
            if not probe.start(wait_s=5.0):
                log.warning("live link broker not reachable: starting without checking the other workers")
                return
            time.sleep(wait_s)  # the retained announcements arrive right after subscribing
            mine = WorkerInfo(name=self.name, cameras=self.camera_ids)
            for other in list(probe.workers.values()):
                if not other.online:
                    continue
                if other.name == self.name:
                    raise ConfigError(
                        f"a detector worker named {other.name!r} is online already (if it was just killed, "
                        "the broker notices within ~25 s); give this one another --name"
                    )
                if mine.cameras is None or other.cameras is None or set(mine.cameras) & set(other.cameras):
                    theirs = "every camera" if other.cameras is None else f"cameras {other.cameras}"
                    ours = "every camera" if mine.cameras is None else f"cameras {mine.cameras}"
                    raise ConfigError(
                        f"detector worker {other.name!r} runs {theirs} already; this one would run {ours}: "
                        "give each worker cameras of its own (aidoor detect --cameras 1,2 / --cameras 3)"
                    )
        finally:
            probe.close()

    def close(self) -> None:
        self.endpoint.close()  # "offline" first: the API stops asking
        self.monitoring.close()
        self.service.close()
        if self.mqtt is not None:
            self.mqtt.close()
        self.notifier.close()
        self.engine.dispose()
        self.stopped.set()


def resolve_cameras(cameras: CameraService, specs: list[str] | None) -> list[int] | None:
    """``--cameras`` as camera ids: each an id or a name of the cameras table; None or
    ``default``: every camera."""
    if not specs or specs == ["default"]:
        return None
    records = cameras.list()
    by_name = {r.name: r.id for r in records}
    ids = {r.id for r in records}
    found: set[int] = set()
    for spec in specs:
        if spec.isdigit() and int(spec) in ids:
            found.add(int(spec))
        elif spec in by_name:
            found.add(by_name[spec])
        else:
            known = ", ".join(f"{r.id} ({r.name})" for r in records)
            raise ConfigError(f"--cameras: no camera {spec!r} in the cameras table (there are: {known})")
    return sorted(found)
