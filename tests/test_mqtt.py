"""MQTT / Home Assistant (docs/mqtt.md) against a real Mosquitto: a private broker each test
starts on 127.0.0.1:<free port> with passwords and the ACL of docs/mqtt.md (so restarting it is
safe), the service with scripted events, and an observer that subscribes like Home Assistant."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detection_service.bus import EventBus, EventCreated, PackageRemoved
from detection_service.config import ConfigError, Settings, parse_mqtt_url
from detection_service.mqtt.bridge import MqttBridge, MqttCommands, MqttConfig
from detection_service.services.component_status import ComponentStatusRegistry
from tests import live_layouts
from tests.conftest import AuthedTestClient, free_port
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
pytestmark = pytest.mark.skipif(
    not (Path(MOSQUITTO).exists() and shutil.which("mosquitto_passwd")), reason="mosquitto is not installed"
)

USERS = {"aidoor": "service-secret", "homeassistant": "ha-secret", "viewer": "viewer-secret"}
# The ACL of docs/mqtt.md: the service owns its topics; Home Assistant reads them and may publish
# only to the command topics; any other account reads at most.
ACL = """\
user aidoor
topic readwrite aidoor/#
topic readwrite homeassistant/#

user homeassistant
topic read aidoor/#
topic read homeassistant/#
topic write aidoor/+/command
topic write aidoor/+/detection/set

user viewer
topic read aidoor/#
"""


class Broker:
    """A private mosquitto: ``start()`` / ``stop()`` (kill: no goodbye) on a fixed port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        passwords = directory / "passwd"
        passwords.touch()
        for user, password in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
        (directory / "acl").write_text(ACL)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {directory / 'acl'}\n"
            "persistence false\n"  # a restart forgets every retained message: the service must republish
            "log_dest stderr\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.directory / "mosquitto.log", "ab")  # noqa: SIM115 - the broker's lifetime
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        assert wait_until(self._accepts, 10), (self.directory / "mosquitto.log").read_text()

    def _accepts(self) -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def url(self, user: str = "aidoor") -> str:
        return f"mqtt://{user}:{USERS[user]}@127.0.0.1:{self.port}/aidoor"


class Observer:
    """A subscriber like Home Assistant: every payload per topic, in order."""

    def __init__(self, broker: Broker, user: str = "homeassistant") -> None:
        self.messages: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"observer-{user}")
        self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe([("aidoor/#", 1), ("homeassistant/#", 1)])
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.setdefault(message.topic, []).append(bytes(message.payload))

    def last(self, topic: str) -> bytes | None:
        with self._lock:
            values = self.messages.get(topic)
            return values[-1] if values else None

    def all(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.messages.get(topic, []))

    def forget(self) -> None:
        with self._lock:
            self.messages.clear()

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    server = Broker(directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    watcher = Observer(broker)
    yield watcher
    watcher.close()


def detection_status(client) -> dict:
    response = client.get("/api/detection")
    assert response.status_code == 200, response.text
    return response.json()["data"]


# --------------------------------------------------------------------------- configuration


def test_mqtt_url_is_parsed_and_checked() -> None:
    broker = parse_mqtt_url("mqtts://ha%40home:p%2Fw@broker.lan/door/front")
    assert (broker.host, broker.port, broker.tls) == ("broker.lan", 8883, True)
    assert (broker.username, broker.password, broker.topic_prefix) == ("ha@home", "p/w", "door/front")
    assert parse_mqtt_url("mqtt://127.0.0.1").topic_prefix == "aidoor"
    assert parse_mqtt_url("mqtt://127.0.0.1:1884/x", "other").topic_prefix == "other"
    for bad in ("http://127.0.0.1", "mqtt://", "mqtt://h:notaport", "mqtt://h/a/#", "mqtt://h/a/+"):
        with pytest.raises(ConfigError):
            Settings.from_env(environ={"AIDOOR_MQTT_URL": bad})
    settings = Settings.from_env(environ={"AIDOOR_MQTT_URL": "mqtt://u:pw-x9q7@127.0.0.1/aidoor"})
    assert "pw-x9q7" not in repr(settings) and "pw-x9q7" not in repr(settings.mqtt)
    assert Settings.from_env(environ={}).mqtt is None


# --------------------------------------------------------------------------- the service


def test_service_publishes_discovery_states_and_obeys_commands(settings, broker: Broker, observer: Observer, tmp_path):
    """The whole service: discovery, the package present state ON then OFF, an event, the
    counters and the capture; commands from Home Assistant's account work like the API, a
    read-only account's are refused by the broker; availability goes offline when it stops."""
    from detection_service.app import create_app

    video = write_video(tmp_path / "door.avi", frames=450, fps=15, size=(160, 120))
    app = create_app(msgspec.structs.replace(settings, mqtt_url=broker.url()))
    with AuthedTestClient(app, raise_server_exceptions=False) as client:
        assert wait_until(lambda: observer.last("aidoor/availability") == b"online", 10)
        discovery = observer.last("homeassistant/binary_sensor/aidoor_default/package/config")
        assert discovery is not None
        config = json.loads(discovery)
        assert config["state_topic"] == "aidoor/default/package/state"
        assert config["availability_topic"] == "aidoor/availability"
        assert config["device"]["identifiers"] == ["aidoor_default"]
        for topic in (
            "homeassistant/binary_sensor/aidoor_default/person/config",
            "homeassistant/sensor/aidoor_default/package_events_today/config",
            "homeassistant/image/aidoor_default/package_snapshot/config",
            "homeassistant/button/aidoor_default/test_alert/config",
            "homeassistant/switch/aidoor_default/detection/config",
        ):
            assert observer.last(topic) is not None, topic
        assert wait_until(lambda: observer.last("aidoor/default/package/state") == b"OFF", 5)
        assert wait_until(lambda: b'"running"' in (observer.last("aidoor/status/mqtt") or b""), 5)
        assert json.loads(observer.last("aidoor/status/mqtt"))["reason"].startswith("mqtt://127.0.0.1:")
        components = client.get("/api/system/status").json()["data"]["components"]
        assert components["mqtt"]["status"] == "running"

        # A parcel seen for 2 s, then gone: present ON, then OFF once it counts as removed.
        client.app.state.detector_holder.swap(
            ScriptedDetector(lambda i, t: [det(90, 60, 140, 110, "package", 0.9)] if t < 2.0 else [])
        )
        response = client.put("/api/detection/config", json={"motion_mode": "off", "package_removed_after_s": 1})
        assert response.status_code == 200, response.text
        assert client.put("/api/settings/camera", json={"source": str(video)}).status_code == 200
        assert wait_until(lambda: observer.last("aidoor/default/package/state") == b"ON", 15)
        assert wait_until(lambda: observer.last("aidoor/default/package/state") == b"OFF", 15)
        kinds = [json.loads(m)["type"] for m in observer.all("aidoor/events")]
        assert "new" in kinds and "package_removed" in kinds, kinds
        new = next(json.loads(m) for m in observer.all("aidoor/events") if json.loads(m)["type"] == "new")
        assert new["object_type"] == "package" and new["camera"] == "default" and new["event_id"] >= 1
        assert observer.last("aidoor/default/package/snapshot")[:2] == b"\xff\xd8"  # a JPEG
        assert wait_until(lambda: observer.last("aidoor/default/package/events_today") == b"1", 5)
        assert wait_until(lambda: observer.last("aidoor/default/detection/state") == b"ON", 5)

        # A read-only account's command never reaches the service (the broker's ACL drops it).
        viewer = Observer(broker, "viewer")
        viewer.publish("aidoor/default/command", "stop")
        viewer.close()
        time.sleep(1.0)
        assert observer.all("aidoor/default/command/result") == []
        assert detection_status(client)["status"] == "running"

        # Home Assistant's switch: OFF stops detection like POST /api/detection/stop.
        observer.publish("aidoor/default/detection/set", "OFF")
        assert wait_until(lambda: detection_status(client)["status"] == "stopped", 10)
        assert wait_until(lambda: observer.last("aidoor/default/detection/state") == b"OFF", 5)
        assert json.loads(observer.last("aidoor/default/command/result")) == {
            "command": "stop",
            "ok": True,
            "message": "detection stop done",
        }
        observer.publish("aidoor/default/command", "start")
        assert wait_until(lambda: detection_status(client)["status"] == "running", 10)
        assert wait_until(lambda: observer.last("aidoor/default/detection/state") == b"ON", 5)
        # The test alert goes through the notification service: no recipients is its answer.
        observer.publish("aidoor/default/command", "test_alert")
        assert wait_until(lambda: b"test_alert" in (observer.last("aidoor/default/command/result") or b""), 10)
        result = json.loads(observer.last("aidoor/default/command/result"))
        assert result["ok"] is False and result["code"] == "NO_RECIPIENTS", result
        observer.publish("aidoor/default/command", "selfdestruct")
        assert wait_until(lambda: b"selfdestruct" in (observer.last("aidoor/default/command/result") or b""), 10)
        assert json.loads(observer.last("aidoor/default/command/result"))["ok"] is False
    assert wait_until(lambda: observer.last("aidoor/availability") == b"offline", 10)


def test_service_without_mqtt_lists_no_mqtt_component(client) -> None:
    assert client.app.state.mqtt is None
    assert "mqtt" not in client.get("/api/system/status").json()["data"]["components"]


# --------------------------------------------------------------------------- the bridge


def package_created(event_id: int) -> EventCreated:
    return EventCreated(
        event_id=event_id,
        object_type="package",
        confidence=0.9,
        bbox={"x1": 1, "y1": 2, "x2": 3, "y2": 4},
        tracking_id=event_id,
        model_version=None,
        detected_at=datetime.now(UTC),
        image_key=f"k{event_id}",
        snapshot_jpeg=b"\xff\xd8fake-jpeg",
    )


def test_broker_restart_degrades_then_republishes_everything(broker: Broker) -> None:
    """Broker killed: the mqtt component turns error, publishing drops and counts and never
    blocks; broker back (with no retained messages left): the bridge reconnects by itself and
    republishes availability, discovery and the current states."""
    bus = EventBus()
    registry = ComponentStatusRegistry(None)
    bridge = MqttBridge(
        MqttConfig(broker=parse_mqtt_url(broker.url()), reconnect_max_s=1, tick_s=0.2),
        bus=bus,
        registry=registry,
        commands=MqttCommands(detection_running=lambda _camera: True),
    )
    bridge.start()
    observer = Observer(broker)
    try:
        assert bridge.wait_connected(10)
        assert registry.get("mqtt").status == "running"
        bus.publish(package_created(1))
        assert wait_until(lambda: observer.last("aidoor/default/package/state") == b"ON", 5)

        observer.close()
        broker.stop()
        assert wait_until(lambda: registry.get("mqtt").status == "error", 10)
        dropped = bridge.stats.dropped
        started = time.monotonic()
        for event_id in range(2, 50):  # the bus and the bridge never wait for the broker
            bus.publish(package_created(event_id))
        assert time.monotonic() - started < 0.5
        assert wait_until(lambda: bridge.stats.dropped > dropped, 5)

        broker.start()
        observer = Observer(broker)
        assert wait_until(lambda: registry.get("mqtt").status == "running", 15)
        assert wait_until(lambda: observer.last("aidoor/availability") == b"online", 5)
        assert wait_until(lambda: observer.last("aidoor/default/package/state") == b"ON", 5)
        assert observer.last("homeassistant/binary_sensor/aidoor_default/package/config") is not None
        assert wait_until(lambda: observer.last("aidoor/default/detection/state") == b"ON", 5)
        assert observer.last("aidoor/default/package/snapshot") == b"\xff\xd8fake-jpeg"
        assert bridge.stats.connects == 2

        bus.publish(
            PackageRemoved(
                event_id=1, tracking_id=1, detected_at=datetime.now(UTC), removed_at=datetime.now(UTC), present_s=5
            )
        )
        time.sleep(0.3)
        assert observer.last("aidoor/default/package/state") == b"ON"  # packages 2..49 are still there
    finally:
        bridge.close()
        observer.close()


def test_last_will_says_offline_when_the_service_dies(broker: Broker, observer: Observer) -> None:
    """A process that dies without a goodbye: the broker publishes the retained ``offline``."""
    bridge = MqttBridge(MqttConfig(broker=parse_mqtt_url(broker.url()), keepalive_s=1))
    bridge.start()
    assert bridge.wait_connected(10)
    assert wait_until(lambda: observer.last("aidoor/availability") == b"online", 5)
    # Cut the socket without DISCONNECT (what a crash looks like to the broker).
    bridge._stopping.set()
    bridge.client.loop_stop()
    bridge.client.socket().close()
    assert wait_until(lambda: observer.last("aidoor/availability") == b"offline", 10)


def test_wrong_password_is_an_error_not_a_hang(broker: Broker) -> None:
    registry = ComponentStatusRegistry(None)
    url = f"mqtt://aidoor:wrong@127.0.0.1:{broker.port}/aidoor"
    bridge = MqttBridge(MqttConfig(broker=parse_mqtt_url(url)), registry=registry)
    started = time.monotonic()
    bridge.start()
    assert time.monotonic() - started < 1.0
    try:
        assert wait_until(lambda: "refused" in (bridge.stats.last_error or ""), 10), bridge.stats
        assert registry.get("mqtt").status == "error"
        assert not bridge.connected
    finally:
        bridge.close()


def test_no_broker_at_start_is_an_error_and_blocks_nothing() -> None:
    registry = ComponentStatusRegistry(None)
    bus = EventBus()
    bridge = MqttBridge(
        MqttConfig(broker=parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}/aidoor")), bus=bus, registry=registry
    )
    started = time.monotonic()
    bridge.start()
    bus.publish(package_created(1))
    assert time.monotonic() - started < 1.0
    try:
        assert wait_until(lambda: registry.get("mqtt").status == "error", 10)
        assert "unreachable" in (registry.get("mqtt").reason or "")
        assert wait_until(lambda: bridge.stats.dropped >= 1, 5)  # the event, counted
    finally:
        bridge.close()


def test_open_packages_and_todays_counts_come_from_the_database(migrated_database_url: str, broker: Broker) -> None:
    """After a restart the door is not reported empty while a package event is still open, and
    the counters count today's events per type, false positives left out."""
    import sqlalchemy as sa

    from detection_service.database import make_engine, make_session_factory
    from schemas.db import DetectionEvent, ObjectType

    engine = make_engine(migrated_database_url)
    session_factory = make_session_factory(engine)
    with session_factory.begin() as session:
        type_ids = dict(session.execute(sa.select(ObjectType.code, ObjectType.id)).all())
        session.add_all(
            [
                DetectionEvent(object_type_id=type_ids["package"]),  # still at the door
                DetectionEvent(object_type_id=type_ids["mail"], ended_at=datetime.now(UTC)),
                DetectionEvent(object_type_id=type_ids["mail"], ended_at=datetime.now(UTC)),
                DetectionEvent(object_type_id=type_ids["person"], is_false_positive=True),
            ]
        )
    observer = Observer(broker)
    bridge = MqttBridge(MqttConfig(broker=parse_mqtt_url(broker.url()), tick_s=0.2), session_factory=session_factory)
    bridge.start()
    try:
        assert bridge.wait_connected(10)
        assert wait_until(lambda: observer.last("aidoor/default/package/state") == b"ON", 5)
        assert wait_until(lambda: observer.last("aidoor/default/mail/events_today") == b"2", 5)
        assert observer.last("aidoor/default/package/events_today") == b"1"
        assert observer.last("aidoor/default/person/events_today") == b"0"
        assert observer.last("aidoor/default/person/state") == b"OFF"
    finally:
        bridge.close()
        observer.close()
        engine.dispose()


# --------------------------------------------------------------------------- several cameras


def test_a_device_per_camera_with_its_own_states_and_commands(broker: Broker, observer: Observer) -> None:
    """Each camera is its own Home Assistant device (camera 1 keeps the ``default`` topics): its
    events drive its own presence, capture and command topics; a camera added, renamed or
    removed is announced, renamed or removed (empty retained configs) when the cameras change."""
    cameras = {1: "default", 2: "back door"}
    calls: list[tuple[str, int]] = []
    running = {1: True, 2: True}

    def control(action: str, camera_id: int) -> None:
        calls.append((action, camera_id))
        running[camera_id] = action != "stop"

    bus = EventBus()
    bridge = MqttBridge(
        MqttConfig(broker=parse_mqtt_url(broker.url()), tick_s=0.2),
        bus=bus,
        commands=MqttCommands(
            control=control, detection_running=lambda camera_id: running[camera_id], cameras=lambda: cameras.items()
        ),
    )
    bridge.start()
    try:
        assert bridge.wait_connected(10)
        config_2 = "homeassistant/binary_sensor/aidoor_camera_2/package/config"
        assert wait_until(lambda: observer.last(config_2), 5)
        config = json.loads(observer.last(config_2))
        assert config["state_topic"] == "aidoor/camera_2/package/state"
        assert config["device"] == {**config["device"], "identifiers": ["aidoor_camera_2"]}
        assert config["device"]["name"] == "AI door camera (back door)"
        for topic in (
            "homeassistant/binary_sensor/aidoor_camera_2/person/config",
            "homeassistant/sensor/aidoor_camera_2/mail_events_today/config",
            "homeassistant/image/aidoor_camera_2/package_snapshot/config",
            "homeassistant/button/aidoor_camera_2/test_alert/config",
            "homeassistant/switch/aidoor_camera_2/detection/config",
        ):
            assert json.loads(observer.last(topic))["device"]["identifiers"] == ["aidoor_camera_2"], topic
        button = json.loads(observer.last("homeassistant/button/aidoor_camera_2/stop/config"))
        assert button["command_topic"] == "aidoor/camera_2/command"
        # The process's component sensors belong to camera 1's device only.
        assert observer.last("homeassistant/binary_sensor/aidoor_default/package/config") is not None
        assert wait_until(lambda: observer.last("aidoor/camera_2/detection/state") == b"ON", 5)

        # Camera 2 sees a parcel: only camera 2's presence and capture change.
        bus.publish(msgspec.structs.replace(package_created(7), camera_id=2, snapshot_jpeg=b"\xff\xd8cam2"))
        assert wait_until(lambda: observer.last("aidoor/camera_2/package/state") == b"ON", 5)
        assert observer.last("aidoor/default/package/state") == b"OFF"
        assert observer.last("aidoor/camera_2/package/snapshot") == b"\xff\xd8cam2"
        assert observer.last("aidoor/default/package/snapshot") is None
        new = json.loads(observer.all("aidoor/events")[-1])
        assert (new["camera"], new["camera_id"]) == ("camera_2", 2)
        # The removal names only the event: it is camera 2's.
        now = datetime.now(UTC)
        bus.publish(PackageRemoved(event_id=7, tracking_id=7, detected_at=now, removed_at=now, present_s=3))
        assert wait_until(lambda: observer.last("aidoor/camera_2/package/state") == b"OFF", 5)
        assert json.loads(observer.all("aidoor/events")[-1])["camera"] == "camera_2"

        # Commands on camera 2's topics drive camera 2 only.
        observer.publish("aidoor/camera_2/detection/set", "OFF")
        assert wait_until(lambda: observer.last("aidoor/camera_2/detection/state") == b"OFF", 5)
        assert calls == [("stop", 2)] and running[1] is True
        assert json.loads(observer.last("aidoor/camera_2/command/result"))["ok"] is True
        observer.publish("aidoor/camera_9/command", "start")  # no such camera
        assert wait_until(lambda: observer.last("aidoor/camera_9/command/result"), 5)
        assert json.loads(observer.last("aidoor/camera_9/command/result"))["code"] == "CAMERA_NOT_FOUND"
        assert calls == [("stop", 2)]

        # Added, renamed, removed.
        cameras[3] = "garage"
        cameras[2] = "back gate"
        del cameras[1]  # the bridge keeps camera 1 whatever the list says (it cannot be deleted)
        bridge.cameras_changed()
        assert wait_until(lambda: observer.last("homeassistant/switch/aidoor_camera_3/detection/config"), 5)
        assert wait_until(lambda: observer.last("aidoor/camera_3/package/state") == b"OFF", 5)
        renamed = json.loads(observer.last(config_2))
        assert renamed["device"]["name"] == "AI door camera (back gate)"
        assert renamed["unique_id"] == "aidoor_camera_2_package"  # same entity in Home Assistant
        del cameras[2]
        bridge.cameras_changed()
        assert wait_until(lambda: observer.last(config_2) == b"", 5)
        assert wait_until(lambda: observer.last("homeassistant/switch/aidoor_camera_2/detection/config") == b"", 5)
        # its retained capture is gone too
        assert wait_until(lambda: observer.last("aidoor/camera_2/package/snapshot") == b"", 5)
        assert observer.last("homeassistant/binary_sensor/aidoor_default/package/config") != b""
    finally:
        bridge.close()

    # A fresh subscriber (Home Assistant restarting) finds no retained config of camera 2.
    late = Observer(broker)
    try:
        assert wait_until(lambda: late.last("homeassistant/switch/aidoor_camera_3/detection/config"), 5)
        assert late.last(config_2) is None
    finally:
        late.close()


@contextmanager
def _service(layout: str, settings, directory: Path) -> Iterator[Any]:
    """The service in one process, or split (the bridge then runs in the detector worker and hears
    of camera changes from the API workers over the live link: tests/live_layouts.py)."""
    from detection_service.app import create_app

    if layout == "split":
        with live_layouts.split_layout(settings, directory) as split:
            yield split
        return
    with AuthedTestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("layout", live_layouts.LAYOUTS)
def test_cameras_api_changes_reach_home_assistant(
    settings, broker: Broker, observer: Observer, tmp_path: Path, layout: str
) -> None:
    """The service: a camera added through /api/cameras becomes a device; its switch stops that
    camera's pipeline like POST /api/detection/stop?camera=N; deleting it removes the device."""
    video = write_video(tmp_path / "back.avi", frames=300, fps=15, size=(160, 120))
    with _service(layout, msgspec.structs.replace(settings, mqtt_url=broker.url()), tmp_path / "split") as client:
        assert wait_until(lambda: observer.last("aidoor/availability") == b"online", 10)
        response = client.post("/api/cameras", json={"name": "back door", "source": str(video)})
        assert response.status_code == 201, response.text
        camera_id = response.json()["data"]["id"]
        config = f"homeassistant/switch/aidoor_camera_{camera_id}/detection/config"
        assert wait_until(lambda: observer.last(config), 10)
        assert json.loads(observer.last(config))["device"]["name"] == "AI door camera (back door)"
        state = f"aidoor/camera_{camera_id}/detection/state"
        assert wait_until(lambda: observer.last(state) == b"ON", 10)

        camera_1 = detection_status(client)["status"]
        observer.publish(f"aidoor/camera_{camera_id}/detection/set", "OFF")
        assert wait_until(
            lambda: client.get(f"/api/detection?camera={camera_id}").json()["data"]["status"] == "stopped", 10
        )
        assert wait_until(lambda: observer.last(state) == b"OFF", 5)
        assert detection_status(client)["status"] == camera_1  # camera 1 untouched by camera 2's switch

        assert client.put(f"/api/cameras/{camera_id}", json={"name": "back gate"}).status_code == 200
        assert wait_until(lambda: b"back gate" in (observer.last(config) or b""), 10)
        assert client.delete(f"/api/cameras/{camera_id}").status_code == 200
        assert wait_until(lambda: observer.last(config) == b"", 10)
