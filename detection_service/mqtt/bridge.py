"""The MQTT bridge: the bus, presence states, captures, counters and component status out to an
MQTT broker, Home Assistant discovery, and commands (start / stop / restart / detection on-off /
test alert) back in. Topics and payloads: docs/mqtt.md.

Client: paho-mqtt 2.x with its network thread (``loop_start``). It reconnects by itself with
its own exponential delay (``reconnect_delay_set``), and every (re)connect republishes the
availability, the discovery configs and every retained state, so a broker that restarted
without persistence is whole again. Nothing here blocks the pipeline or the API: bus messages
reach the bridge through its own bounded bus subscription (oldest dropped and counted by the
bus), anything published while the broker is away is dropped and counted (states are
republished on reconnect), and paho's own queue is bounded. Commands run on the bridge's worker
thread, never on paho's network thread (a stop may take seconds).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import BusMessage, EventBus, EventCreated, EventUpdated, PackageRemoved, Subscription
from detection_service.config import MqttBroker
from detection_service.services.component_status import ComponentStatusRegistry
from schemas.db import DetectionEvent, ObjectType
from schemas.enums import EventStatus, ObjectTypeCode

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
COMMANDS = ("start", "stop", "restart", "test_alert")
PRESENCE_TYPES = ("person", "package")  # binary sensors
OBJECT_TYPES = tuple(t.value for t in ObjectTypeCode)
DEFAULT_CAMERA = "default"


@dataclass
class MqttCommands:
    """What the commands call: the same services as the API (wired in app.py)."""

    control: Callable[[str], Any] | None = None  # PipelineService.control("start" | "stop" | "restart")
    test_alert: Callable[[], Any] | None = None  # the notification service's send_test
    detection_running: Callable[[], bool] | None = None  # for the detection switch's state


@dataclass
class MqttStats:
    published: int = 0
    dropped: int = 0  # not published: broker away or paho's queue full
    commands: int = 0
    connects: int = 0
    last_error: str | None = None


@dataclass
class MqttConfig:
    broker: MqttBroker
    discovery_prefix: str | None = "homeassistant"  # None: no discovery
    client_id: str | None = None
    camera: str = DEFAULT_CAMERA
    timezone: str = "Asia/Seoul"  # "today" of the events-today counters
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    max_queued: int = 1000  # paho's outgoing queue (messages), beyond it a publish is dropped
    bus_queue: int = 200
    tick_s: float = 2.0  # component status / detection state / counters refresh
    version: str = ""


class MqttBridge:
    def __init__(
        self,
        config: MqttConfig,
        bus: EventBus | None = None,
        session_factory: sessionmaker[Session] | None = None,
        registry: ComponentStatusRegistry | None = None,
        commands: MqttCommands | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.session_factory = session_factory
        self.registry = registry
        self.commands = commands or MqttCommands()
        self.stats = MqttStats()
        self.prefix = config.broker.topic_prefix
        self.camera = config.camera
        self.node_id = f"{self.prefix.replace('/', '_')}_{self.camera}"
        self._lock = threading.Lock()
        self._open_events: dict[int, str] = {}  # event id -> object type, until ended / removed
        self._snapshots: dict[str, bytes] = {}  # object type -> latest capture (JPEG)
        self._counts: dict[str, int] = {}
        self._status: dict[str, str] = {}  # component -> last JSON published
        self._detection_state: str | None = None
        self._counts_dirty = True
        self._counts_day: str | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._work: queue.Queue[str] = queue.Queue(maxsize=32)  # commands from the broker
        self._tick = threading.Event()  # refresh states now
        self._worker: threading.Thread | None = None
        self._subscription: Subscription | None = None
        self.client = self._make_client()

    # -- topics ---------------------------------------------------------------------------------

    @property
    def availability_topic(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}/events"

    def topic(self, *parts: str) -> str:
        """``<prefix>/<camera>/<parts...>``."""
        return "/".join((self.prefix, self.camera, *parts))

    def status_topic(self, component: str) -> str:
        return f"{self.prefix}/status/{component}"

    @property
    def command_topic(self) -> str:
        return self.topic("command")

    @property
    def detection_set_topic(self) -> str:
        return self.topic("detection", "set")

    # -- life cycle -----------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        broker = self.config.broker
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id or f"aidoor-{self.node_id}",
            protocol=mqtt.MQTTv311,
        )
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set()
        # The broker publishes this for us when the connection is lost without a goodbye.
        client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(self.config.reconnect_min_s, self.config.reconnect_max_s)
        client.max_queued_messages_set(self.config.max_queued)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background (never waits for the broker)."""
        if self.registry is not None:
            self.registry.enable("mqtt")
            self._report("stopped", f"connecting to {self._where()}")
        if self.bus is not None:
            self._subscription = self.bus.subscribe_callback("mqtt", self._on_bus, maxsize=self.config.bus_queue)
        self._worker = threading.Thread(target=self._work_loop, name="mqtt-bridge", daemon=True)
        self._worker.start()
        self.client.connect_async(self.config.broker.host, self.config.broker.port, self.config.keepalive_s)
        self.client.loop_start()  # paho's thread: connects, and reconnects with its own backoff

    def close(self, timeout: float = 3.0) -> None:
        """Say ``offline`` (retained) and disconnect cleanly; the LWT covers a crash."""
        self._stopping.set()
        if self._subscription is not None:
            self._subscription.close()
        if self._connected.is_set():
            info = self.client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt: offline not confirmed: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        if self._worker is not None:
            self._worker.join(timeout)
        self._report("stopped", "closed")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _where(self) -> str:
        return f"{'mqtts' if self.config.broker.tls else 'mqtt'}://{self.config.broker.host}:{self.config.broker.port}"

    def _report(self, status: str, reason: str) -> None:
        if self.registry is not None:
            self.registry.report("mqtt", status, reason)  # type: ignore[arg-type]

    # -- paho callbacks (paho's network thread) -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            error = f"connect refused: {reason}"
            if error != self.stats.last_error:  # once, not at every retry
                log.warning("mqtt: %s refused the connection: %s", self._where(), reason)
            self.stats.last_error = error
            self._report("error", f"{self._where()} refused the connection: {reason}")
            return
        self._connected.set()
        self.stats.connects += 1
        self._report("running", f"{self._where()} as {self.node_id}")
        client.subscribe([(self.command_topic, 1), (self.detection_set_topic, 1)])
        self.publish(self.availability_topic, ONLINE, retain=True, qos=1)
        self.publish_discovery()
        self.publish_states()
        log.info("mqtt: connected to %s (connect #%d)", self._where(), self.stats.connects)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        """No TCP connection (broker down, wrong host); paho tries again after its delay."""
        if self.stats.last_error != "unreachable":
            log.warning("mqtt: %s unreachable; paho keeps trying", self._where())
        self.stats.last_error = "unreachable"
        self._report("error", f"{self._where()} unreachable; reconnecting")

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stopping.is_set() or not was_connected:  # a refused connect was reported already
            return
        self.stats.last_error = f"disconnected: {reason}"
        self._report("error", f"{self._where()} unreachable ({reason}); reconnecting")
        log.warning("mqtt: lost %s (%s); paho reconnects", self._where(), reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = message.payload.decode("utf-8", "replace").strip()
        if message.topic == self.detection_set_topic:
            command = {"ON": "start", "OFF": "stop"}.get(payload.upper(), f"invalid:{payload[:40]}")
        else:
            command = payload.lower()
        try:
            self._work.put_nowait(command)
        except queue.Full:
            self.stats.dropped += 1
            log.warning("mqtt: command %r dropped: too many waiting", command)

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 0) -> bool:
        """Publish if connected; else drop and count (retained states go out again on reconnect)."""
        if not self._connected.is_set():
            self.stats.dropped += 1
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.dropped += 1
            return False
        self.stats.published += 1
        return True

    def _device(self) -> dict[str, Any]:
        return {
            "identifiers": [self.node_id],
            "name": f"AI door camera ({self.camera})",
            "manufacturer": "ai-door-system",
            "model": "door camera",
            "sw_version": self.config.version or None,
        }

    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant discovery: config topic -> payload (one device per camera)."""
        if not self.config.discovery_prefix:
            return {}
        base = {"availability_topic": self.availability_topic, "device": self._device()}
        entities: list[tuple[str, str, dict[str, Any]]] = []
        for kind in PRESENCE_TYPES:
            entities.append(
                (
                    "binary_sensor",
                    kind,
                    {
                        "name": f"{kind.capitalize()} present",
                        "state_topic": self.topic(kind, "state"),
                        "payload_on": ON,
                        "payload_off": OFF,
                        "device_class": "occupancy" if kind == "person" else "presence",
                    },
                )
            )
        for kind in OBJECT_TYPES:
            entities.append(
                (
                    "sensor",
                    f"{kind}_events_today",
                    {
                        "name": f"{kind.replace('_', ' ').capitalize()} events today",
                        "state_topic": self.topic(kind, "events_today"),
                        "state_class": "total_increasing",
                        "unit_of_measurement": "events",
                        "icon": "mdi:counter",
                    },
                )
            )
            entities.append(
                (
                    "image",
                    f"{kind}_snapshot",
                    {
                        "name": f"Latest {kind.replace('_', ' ')}",
                        "image_topic": self.topic(kind, "snapshot"),
                        "content_type": "image/jpeg",
                    },
                )
            )
        for action, label in (
            ("test_alert", "Test alert"),
            ("start", "Start detection"),
            ("stop", "Stop detection"),
            ("restart", "Restart detection"),
        ):
            entities.append(
                ("button", action, {"name": label, "command_topic": self.command_topic, "payload_press": action})
            )
        entities.append(
            (
                "switch",
                "detection",
                {
                    "name": "Detection",
                    "command_topic": self.detection_set_topic,
                    "state_topic": self.topic("detection", "state"),
                    "payload_on": ON,
                    "payload_off": OFF,
                    "icon": "mdi:cctv",
                },
            )
        )
        components = self.registry.snapshot() if self.registry is not None else {}
        for component in components:
            entities.append(
                (
                    "sensor",
                    f"status_{component}",
                    {
                        "name": f"{component.capitalize()} status",
                        "state_topic": self.status_topic(component),
                        "value_template": "{{ value_json.status }}",
                        "json_attributes_topic": self.status_topic(component),
                        "entity_category": "diagnostic",
                    },
                )
            )
        return {
            f"{self.config.discovery_prefix}/{component}/{self.node_id}/{object_id}/config": {
                **base,
                "unique_id": f"{self.node_id}_{object_id}",
                "object_id": f"{self.node_id}_{object_id}",
                **payload,
            }
            for component, object_id, payload in entities
        }

    def publish_discovery(self) -> None:
        for topic, payload in self.discovery().items():
            self.publish(topic, json.dumps(payload), retain=True, qos=1)

    def publish_states(self) -> None:
        """Every retained state as known now (after a (re)connect)."""
        with self._lock:
            open_types = set(self._open_events.values())
            snapshots = dict(self._snapshots)
        for kind in PRESENCE_TYPES:
            self.publish(self.topic(kind, "state"), ON if kind in open_types else OFF, retain=True, qos=1)
        for kind, jpeg in snapshots.items():
            self.publish(self.topic(kind, "snapshot"), jpeg, retain=True)
        self._status.clear()
        self._detection_state = None
        self._counts_dirty = True
        self._wake()

    # -- bus (the bus's delivery thread) -------------------------------------------------------

    def _on_bus(self, message: BusMessage) -> None:
        changed: set[str] = set()
        with self._lock:
            before = set(self._open_events.values())
            if isinstance(message, EventCreated):
                self._open_events[message.event_id] = message.object_type
                self._snapshots[message.object_type] = message.snapshot_jpeg
                self._counts_dirty = True
            elif isinstance(message, EventUpdated):
                if message.change == "ended":
                    self._open_events.pop(message.event_id, None)
                elif message.change == "type":
                    self._counts_dirty = True
                    if message.event_id in self._open_events:
                        self._open_events[message.event_id] = message.object_type
            elif isinstance(message, PackageRemoved):
                self._open_events.pop(message.event_id, None)
            after = set(self._open_events.values())
            changed = {kind for kind in PRESENCE_TYPES if (kind in before) != (kind in after)}
        self.publish(self.events_topic, json.dumps(self._event_payload(message)))
        if isinstance(message, EventCreated):
            self.publish(self.topic(message.object_type, "snapshot"), message.snapshot_jpeg, retain=True)
        for kind in changed:
            self.publish(self.topic(kind, "state"), ON if kind in after else OFF, retain=True, qos=1)
        if self._counts_dirty:
            self._wake()

    def _event_payload(self, message: BusMessage) -> dict[str, Any]:
        data = {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in ((k, getattr(message, k)) for k in message.__struct_fields__)
            if key != "snapshot_jpeg"
        }
        kind = {EventCreated: "new", EventUpdated: "update", PackageRemoved: "package_removed"}[type(message)]
        return {"type": kind, "camera": self.camera, **data}

    # -- worker: commands and periodic states ---------------------------------------------------

    def _wake(self) -> None:
        self._tick.set()

    def _load_open_packages(self) -> None:
        """Packages not yet removed when this process starts (the pipeline re-adopts them and
        says PackageRemoved when they go), so a restart does not report the door empty."""
        if self.session_factory is None:
            return
        e = DetectionEvent
        try:
            with self.session_factory() as session:
                ids = session.scalars(
                    sa.select(e.id)
                    .join(ObjectType, ObjectType.id == e.object_type_id)
                    .where(ObjectType.code == "package", e.ended_at.is_(None), e.status == EventStatus.ACTIVE.value)
                    .limit(200)
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("mqtt: open packages unknown (database): %s", exc)
            return
        with self._lock:
            for event_id in ids:
                self._open_events.setdefault(event_id, "package")
        if ids and self.connected:  # else the connect publishes it
            self.publish(self.topic("package", "state"), ON, retain=True, qos=1)

    def _work_loop(self) -> None:
        self._load_open_packages()
        last_refresh = 0.0
        while not self._stopping.is_set():
            try:
                command: str | None = self._work.get(timeout=0.25)
            except queue.Empty:
                command = None
            try:
                if command is not None:
                    self.run_command(command)
                if self._tick.is_set() or time.monotonic() - last_refresh >= self.config.tick_s:
                    self._tick.clear()
                    last_refresh = time.monotonic()
                    self._refresh()
            except Exception:
                log.exception("mqtt: worker step failed")

    def run_command(self, command: str) -> dict[str, Any]:
        """start / stop / restart / test_alert through the same services as the API; the result
        goes to ``<prefix>/<camera>/command/result``."""
        self.stats.commands += 1
        result: dict[str, Any] = {"command": command, "ok": False}
        try:
            if command in ("start", "stop", "restart"):
                if self.commands.control is None:
                    raise RuntimeError("detection control is not available")
                self.commands.control(command)
                result.update(ok=True, message=f"detection {command} done")
            elif command == "test_alert":
                if self.commands.test_alert is None:
                    raise RuntimeError("alerts are not available")
                self.commands.test_alert()
                result.update(ok=True, message="test alert queued")
            else:
                result["message"] = (
                    f"unknown command {command!r}; use one of {', '.join(COMMANDS)} (or ON/OFF on .../set)"
                )
        except Exception as exc:  # a domain error (no source, no recipients) is the answer, not a crash
            result["message"] = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            result["code"] = getattr(exc, "code", None)
        log.info("mqtt command %s: %s", command, result.get("message"))
        self.publish(self.topic("command", "result"), json.dumps(result))
        self._detection_state = None  # publish the switch's state now
        self._wake()
        return result

    def _refresh(self) -> None:
        if not self._connected.is_set():
            return
        if self.commands.detection_running is not None:
            try:
                state = ON if self.commands.detection_running() else OFF
            except Exception as exc:
                log.debug("mqtt: detection state unknown: %s", exc)
            else:
                if state != self._detection_state and self.publish(
                    self.topic("detection", "state"), state, retain=True, qos=1
                ):
                    self._detection_state = state
        if self.registry is not None:
            for name, component in self.registry.snapshot().items():
                payload = json.dumps(
                    {"status": component.status, "reason": component.reason, "since": component.since.isoformat()}
                )
                if self._status.get(name) != payload and self.publish(
                    self.status_topic(name), payload, retain=True, qos=1
                ):
                    self._status[name] = payload
        zone = ZoneInfo(self.config.timezone)
        today = datetime.now(zone).date().isoformat()
        if self.session_factory is not None and (self._counts_dirty or today != self._counts_day):
            self._counts_dirty = False
            try:
                counts = self.events_today()
            except sa.exc.SQLAlchemyError as exc:  # the database is down: the counters wait
                self._counts_dirty = True
                log.debug("mqtt: events today unknown: %s", exc)
                return
            self._counts_day = today
            for kind in OBJECT_TYPES:
                self.publish(self.topic(kind, "events_today"), str(counts.get(kind, 0)), retain=True, qos=1)
            self._counts = counts

    def events_today(self) -> dict[str, int]:
        """Events per type since local midnight (false positives left out)."""
        assert self.session_factory is not None
        zone = ZoneInfo(self.config.timezone)
        midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        since = midnight.astimezone(UTC).replace(tzinfo=None)
        e = DetectionEvent
        with self.session_factory() as session:
            rows = session.execute(
                sa.select(ObjectType.code, sa.func.count(e.id))
                .join(ObjectType, ObjectType.id == e.object_type_id)
                .where(e.detected_at >= since, e.is_false_positive.is_(False))
                .group_by(ObjectType.code)
            ).all()
        return {code: int(count) for code, count in rows}

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "broker": self._where(),
            "published": self.stats.published,
            "dropped": self.stats.dropped,
            "commands": self.stats.commands,
            "connects": self.stats.connects,
            "last_error": self.stats.last_error,
        }


def build_mqtt_bridge(
    settings: Any,
    bus: EventBus | None,
    session_factory: sessionmaker[Session] | None,
    registry: ComponentStatusRegistry | None,
    commands: MqttCommands,
    version: str = "",
) -> MqttBridge | None:
    """The bridge for the process settings (detection_service.config.Settings), or None when
    AIDOOR_MQTT_URL is unset."""
    broker = settings.mqtt
    if broker is None:
        return None
    discovery = settings.mqtt_discovery_prefix.strip().strip("/")
    config = MqttConfig(
        broker=broker,
        discovery_prefix=None if discovery.lower() in ("", "off", "none") else discovery,
        client_id=settings.mqtt_client_id,
        timezone=settings.alert_timezone,
        version=version,
    )
    return MqttBridge(config, bus=bus, session_factory=session_factory, registry=registry, commands=commands)
