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
from collections import OrderedDict
from collections.abc import Callable, Iterable
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
from schemas.db import DEFAULT_CAMERA_ID, DetectionEvent, ObjectType
from schemas.enums import EventStatus, ObjectTypeCode

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
COMMANDS = ("start", "stop", "restart", "test_alert")
PRESENCE_TYPES = ("person", "package")  # binary sensors
OBJECT_TYPES = tuple(t.value for t in ObjectTypeCode)
DEFAULT_CAMERA = "default"
EVENT_CAMERAS_KEPT = 2000  # event id -> camera, for the updates of recent events


@dataclass
class MqttCommands:
    """What the commands call: the same services as the API (wired in app.py), per camera id."""

    # PipelineService.control_cameras(action, camera_id): "start" | "stop" | "restart" of one camera
    control: Callable[[str, int], Any] | None = None
    test_alert: Callable[[], Any] | None = None  # the notification service's send_test
    detection_running: Callable[[int], bool] | None = None  # for each camera's detection switch
    # The cameras as (id, name), read again after every change through /api/cameras; None: camera 1 only.
    cameras: Callable[[], Iterable[tuple[int, str]]] | None = None


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
        self.camera = config.camera  # camera 1's topic level (today's topics stay camera 1's)
        self.node_id = self.node_of(DEFAULT_CAMERA_ID)
        self._lock = threading.Lock()
        self._cameras: dict[int, str] = {DEFAULT_CAMERA_ID: DEFAULT_CAMERA}  # id -> name, as announced
        self._cameras_dirty = threading.Event()  # read the cameras again (a change through /api/cameras)
        self._open_events: dict[int, tuple[int, str]] = {}  # event id -> (camera, type), until ended / removed
        self._event_cameras: OrderedDict[int, int] = OrderedDict()  # recent event id -> camera
        self._snapshots: dict[tuple[int, str], bytes] = {}  # (camera, type) -> latest capture (JPEG)
        self._counts: dict[int, dict[str, int]] = {}
        self._status: dict[str, str] = {}  # component -> last JSON published
        self._detection_state: dict[int, str] = {}
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

    def camera_level(self, camera_id: int) -> str:
        """A camera's topic level: ``default`` for camera 1 (the topics before several cameras),
        ``camera_<id>`` for the others (by id, so a rename changes no topic and no entity id)."""
        return self.camera if camera_id == DEFAULT_CAMERA_ID else f"camera_{camera_id}"

    def camera_of_level(self, level: str) -> int | None:
        if level == self.camera:
            return DEFAULT_CAMERA_ID
        if level.startswith("camera_") and level[7:].isdigit():
            return int(level[7:])
        return None

    def node_of(self, camera_id: int) -> str:
        return f"{self.prefix.replace('/', '_')}_{self.camera_level(camera_id)}"

    def topic(self, *parts: str, camera_id: int = DEFAULT_CAMERA_ID) -> str:
        """``<prefix>/<camera>/<parts...>``."""
        return "/".join((self.prefix, self.camera_level(camera_id), *parts))

    def status_topic(self, component: str) -> str:
        return f"{self.prefix}/status/{component}"

    def command_topic_of(self, camera_id: int) -> str:
        return self.topic("command", camera_id=camera_id)

    def detection_set_topic_of(self, camera_id: int) -> str:
        return self.topic("detection", "set", camera_id=camera_id)

    @property
    def command_topic(self) -> str:
        return self.command_topic_of(DEFAULT_CAMERA_ID)

    @property
    def detection_set_topic(self) -> str:
        return self.detection_set_topic_of(DEFAULT_CAMERA_ID)

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
        # Every camera's commands, also of cameras added later (their level says which camera).
        client.subscribe([(f"{self.prefix}/+/command", 1), (f"{self.prefix}/+/detection/set", 1)])
        self.publish(self.availability_topic, ONLINE, retain=True, qos=1)
        self.publish_discovery()
        self.publish_states()
        self.cameras_changed()  # read the cameras again: one added while the broker was away
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
        level, _, rest = message.topic[len(self.prefix) + 1 :].partition("/")
        camera_id = self.camera_of_level(level)
        if camera_id is None:
            return  # not a camera's topic (e.g. <prefix>/live/...)
        if rest == "detection/set":
            command = {"ON": "start", "OFF": "stop"}.get(payload.upper(), f"invalid:{payload[:40]}")
        elif rest == "command":
            command = payload.lower()
        else:
            return
        try:
            self._work.put_nowait(f"{camera_id}:{command}")
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

    def _device(self, camera_id: int = DEFAULT_CAMERA_ID, name: str = DEFAULT_CAMERA) -> dict[str, Any]:
        return {
            "identifiers": [self.node_of(camera_id)],
            "name": f"AI door camera ({name})",
            "manufacturer": "ai-door-system",
            "model": "door camera",
            "sw_version": self.config.version or None,
        }

    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant discovery of every camera: config topic -> payload (a device per camera)."""
        with self._lock:
            cameras = dict(self._cameras)
        out: dict[str, dict[str, Any]] = {}
        for camera_id, name in sorted(cameras.items()):
            out.update(self.camera_discovery(camera_id, name))
        return out

    def camera_discovery(self, camera_id: int, name: str) -> dict[str, dict[str, Any]]:
        """One camera's device: config topic -> payload."""
        if not self.config.discovery_prefix:
            return {}
        node_id = self.node_of(camera_id)
        command_topic = self.command_topic_of(camera_id)
        base = {"availability_topic": self.availability_topic, "device": self._device(camera_id, name)}
        entities: list[tuple[str, str, dict[str, Any]]] = []
        for kind in PRESENCE_TYPES:
            entities.append(
                (
                    "binary_sensor",
                    kind,
                    {
                        "name": f"{kind.capitalize()} present",
                        "state_topic": self.topic(kind, "state", camera_id=camera_id),
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
                        "state_topic": self.topic(kind, "events_today", camera_id=camera_id),
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
                        "image_topic": self.topic(kind, "snapshot", camera_id=camera_id),
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
                ("button", action, {"name": label, "command_topic": command_topic, "payload_press": action})
            )
        entities.append(
            (
                "switch",
                "detection",
                {
                    "name": "Detection",
                    "command_topic": self.detection_set_topic_of(camera_id),
                    "state_topic": self.topic("detection", "state", camera_id=camera_id),
                    "payload_on": ON,
                    "payload_off": OFF,
                    "icon": "mdi:cctv",
                },
            )
        )
        # The process's components are one set: on camera 1's device only.
        components = self.registry.snapshot() if self.registry is not None and camera_id == DEFAULT_CAMERA_ID else {}
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
            f"{self.config.discovery_prefix}/{component}/{node_id}/{object_id}/config": {
                **base,
                "unique_id": f"{node_id}_{object_id}",
                "object_id": f"{node_id}_{object_id}",
                **payload,
            }
            for component, object_id, payload in entities
        }

    def publish_discovery(self) -> None:
        for topic, payload in self.discovery().items():
            self.publish(topic, json.dumps(payload), retain=True, qos=1)

    def publish_states(self, only: int | None = None) -> None:
        """Every retained state as known now (after a (re)connect), of every camera or of ``only``."""
        with self._lock:
            cameras = [c for c in self._cameras if only is None or c == only]
            open_pairs = set(self._open_events.values())
            snapshots = dict(self._snapshots)
        for camera_id in cameras:
            for kind in PRESENCE_TYPES:
                present = (camera_id, kind) in open_pairs
                self.publish(self.topic(kind, "state", camera_id=camera_id), ON if present else OFF, retain=True, qos=1)
        for (camera_id, kind), jpeg in snapshots.items():
            if camera_id in cameras:
                self.publish(self.topic(kind, "snapshot", camera_id=camera_id), jpeg, retain=True)
        if only is None:
            self._status.clear()
            self._detection_state.clear()
        else:
            self._detection_state.pop(only, None)
        self._counts_dirty = True
        self._wake()

    # -- the cameras (docs/mqtt.md "Several cameras") ------------------------------------------

    def cameras_changed(self) -> None:
        """A CameraService listener: the cameras changed (added, renamed, removed); the worker
        announces them again. Cheap: called on the request's thread."""
        self._cameras_dirty.set()
        self._wake()

    def sync_cameras(self) -> None:
        """Read the cameras and announce the difference: a new or renamed camera's discovery and
        states; a removed camera's configs and retained states emptied (Home Assistant's way of
        removing an entity: an empty retained config)."""
        if self.commands.cameras is None:
            return
        if not self._connected.is_set():
            self._cameras_dirty.set()  # the connect announces them (and this then removes the gone ones)
            return
        try:
            current = {int(i): str(n) for i, n in self.commands.cameras()}
        except Exception as exc:  # the database is down: try again at the next change or connect
            self._cameras_dirty.set()
            log.debug("mqtt: cameras unknown: %s", exc)
            return
        current.setdefault(DEFAULT_CAMERA_ID, DEFAULT_CAMERA)
        with self._lock:
            before = dict(self._cameras)
            self._cameras = current
        for camera_id in sorted(set(before) - set(current)):
            for topic in self.camera_discovery(camera_id, before[camera_id]):
                self.publish(topic, b"", retain=True, qos=1)
            for topic in self.camera_state_topics(camera_id):
                self.publish(topic, b"", retain=True, qos=1)
            with self._lock:
                self._snapshots = {k: v for k, v in self._snapshots.items() if k[0] != camera_id}
                self._counts.pop(camera_id, None)
            self._detection_state.pop(camera_id, None)
            log.info("mqtt: camera %d removed from Home Assistant", camera_id)
        for camera_id, name in sorted(current.items()):
            if before.get(camera_id) != name:
                for topic, payload in self.camera_discovery(camera_id, name).items():
                    self.publish(topic, json.dumps(payload), retain=True, qos=1)
                if camera_id not in before:
                    self.publish_states(only=camera_id)

    def camera_state_topics(self, camera_id: int) -> list[str]:
        """Every retained state topic of a camera (emptied when it is removed)."""
        topics = [self.topic(kind, "state", camera_id=camera_id) for kind in PRESENCE_TYPES]
        for kind in OBJECT_TYPES:
            topics += [
                self.topic(kind, "snapshot", camera_id=camera_id),
                self.topic(kind, "events_today", camera_id=camera_id),
            ]
        return [*topics, self.topic("detection", "state", camera_id=camera_id)]

    # -- bus (the bus's delivery thread) -------------------------------------------------------

    def _on_bus(self, message: BusMessage) -> None:
        with self._lock:
            before = set(self._open_events.values())
            if isinstance(message, EventCreated):
                camera_id = message.camera_id
                self._event_cameras[message.event_id] = camera_id
                while len(self._event_cameras) > EVENT_CAMERAS_KEPT:
                    self._event_cameras.popitem(last=False)
                self._open_events[message.event_id] = (camera_id, message.object_type)
                self._snapshots[(camera_id, message.object_type)] = message.snapshot_jpeg
                self._counts_dirty = True
            else:  # updates and removals name only the event: its camera is the one that created it
                camera_id = self._event_cameras.get(message.event_id, DEFAULT_CAMERA_ID)
                if isinstance(message, EventUpdated):
                    if message.change == "ended":
                        self._open_events.pop(message.event_id, None)
                    elif message.change == "type":
                        self._counts_dirty = True
                        if message.event_id in self._open_events:
                            self._open_events[message.event_id] = (camera_id, message.object_type)
                elif isinstance(message, PackageRemoved):
                    self._open_events.pop(message.event_id, None)
            after = set(self._open_events.values())
            changed = {pair for pair in before ^ after if pair[1] in PRESENCE_TYPES}
        self.publish(self.events_topic, json.dumps(self._event_payload(message, camera_id)))
        if isinstance(message, EventCreated):
            self.publish(
                self.topic(message.object_type, "snapshot", camera_id=camera_id), message.snapshot_jpeg, retain=True
            )
        for pair in changed:
            self.publish(
                self.topic(pair[1], "state", camera_id=pair[0]), ON if pair in after else OFF, retain=True, qos=1
            )
        if self._counts_dirty:
            self._wake()

    def _event_payload(self, message: BusMessage, camera_id: int) -> dict[str, Any]:
        data = {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in ((k, getattr(message, k)) for k in message.__struct_fields__)
            if key != "snapshot_jpeg"
        }
        kind = {EventCreated: "new", EventUpdated: "update", PackageRemoved: "package_removed"}[type(message)]
        return {"type": kind, "camera": self.camera_level(camera_id), **data, "camera_id": camera_id}

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
                rows = session.execute(
                    sa.select(e.id, e.camera_id)
                    .join(ObjectType, ObjectType.id == e.object_type_id)
                    .where(ObjectType.code == "package", e.ended_at.is_(None), e.status == EventStatus.ACTIVE.value)
                    .limit(200)
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("mqtt: open packages unknown (database): %s", exc)
            return
        with self._lock:
            for event_id, camera_id in rows:
                self._open_events.setdefault(event_id, (camera_id, "package"))
                self._event_cameras[event_id] = camera_id
        if rows and self.connected:  # else the connect publishes it
            for camera_id in {camera_id for _, camera_id in rows}:
                self.publish(self.topic("package", "state", camera_id=camera_id), ON, retain=True, qos=1)

    def _work_loop(self) -> None:
        self.sync_cameras()
        self._load_open_packages()
        last_refresh = 0.0
        while not self._stopping.is_set():
            try:
                command: str | None = self._work.get(timeout=0.25)
            except queue.Empty:
                command = None
            try:
                if self._cameras_dirty.is_set():
                    self._cameras_dirty.clear()
                    self.sync_cameras()
                if command is not None:
                    camera, _, action = command.partition(":")
                    self.run_command(action, int(camera))
                if self._tick.is_set() or time.monotonic() - last_refresh >= self.config.tick_s:
                    self._tick.clear()
                    last_refresh = time.monotonic()
                    self._refresh()
            except Exception:
                log.exception("mqtt: worker step failed")

    def run_command(self, command: str, camera_id: int = DEFAULT_CAMERA_ID) -> dict[str, Any]:
        """start / stop / restart (of that camera) / test_alert through the same services as the
        API; the result goes to ``<prefix>/<camera>/command/result``."""
        self.stats.commands += 1
        result: dict[str, Any] = {"command": command, "ok": False}
        try:
            if camera_id not in self._cameras:
                result["code"] = "CAMERA_NOT_FOUND"
                raise RuntimeError(f"no camera {camera_id}")
            if command in ("start", "stop", "restart"):
                if self.commands.control is None:
                    raise RuntimeError("detection control is not available")
                self.commands.control(command, camera_id)
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
            result["code"] = getattr(exc, "code", None) or result.get("code")
        log.info("mqtt command %s (camera %d): %s", command, camera_id, result.get("message"))
        self.publish(self.topic("command", "result", camera_id=camera_id), json.dumps(result))
        self._detection_state.pop(camera_id, None)  # publish the switch's state now
        self._wake()
        return result

    def _refresh(self) -> None:
        if not self._connected.is_set():
            return
        with self._lock:
            cameras = sorted(self._cameras)
        for camera_id in cameras if self.commands.detection_running is not None else ():
            try:
                state = ON if self.commands.detection_running(camera_id) else OFF  # type: ignore[misc]
            except Exception as exc:  # e.g. a camera whose pipeline is not built yet
                log.debug("mqtt: detection state of camera %d unknown: %s", camera_id, exc)
                continue
            if state != self._detection_state.get(camera_id) and self.publish(
                self.topic("detection", "state", camera_id=camera_id), state, retain=True, qos=1
            ):
                self._detection_state[camera_id] = state
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
            for camera_id in cameras:
                per_type = counts.get(camera_id, {})
                for kind in OBJECT_TYPES:
                    self.publish(
                        self.topic(kind, "events_today", camera_id=camera_id),
                        str(per_type.get(kind, 0)),
                        retain=True,
                        qos=1,
                    )
            self._counts = counts

    def events_today(self) -> dict[int, dict[str, int]]:
        """Events per camera and type since local midnight (false positives left out)."""
        assert self.session_factory is not None
        zone = ZoneInfo(self.config.timezone)
        midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        since = midnight.astimezone(UTC).replace(tzinfo=None)
        e = DetectionEvent
        with self.session_factory() as session:
            rows = session.execute(
                sa.select(e.camera_id, ObjectType.code, sa.func.count(e.id))
                .join(ObjectType, ObjectType.id == e.object_type_id)
                .where(e.detected_at >= since, e.is_false_positive.is_(False))
                .group_by(e.camera_id, ObjectType.code)
            ).all()
        out: dict[int, dict[str, int]] = {}
        for camera_id, code, count in rows:
            out.setdefault(int(camera_id), {})[code] = int(count)
        return out

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


def pipeline_commands(service: Any, test_alert: Callable[[], Any]) -> MqttCommands:
    """The commands of a process that runs the pipelines (``PipelineService``: the single process
    or ``aidoor detect``): per camera, exactly what ``POST /api/detection/{action}?camera=N`` calls."""
    return MqttCommands(
        control=lambda action, camera_id: service.control_cameras(action, camera_id),
        test_alert=test_alert,
        detection_running=lambda camera_id: service.pipeline_of(camera_id).running,
        cameras=lambda: [(record.id, record.name) for record in service.camera_service.list()],
    )
