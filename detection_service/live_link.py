"""The live link: what the API processes and the ``aidoor detect`` workers exchange over an MQTT
broker when they run apart (``AIDOOR_LIVE_BROKER_URL``; docs/deployment.md).

One paho-mqtt client per process, with its own network thread. Topics, under
``<prefix>/live/<node>/``; payloads are msgpack (``msgspec.msgpack``):

| topic | from -> to | what |
|---|---|---|
| ``workers/<name>`` | detector -> API | a worker's cameras, online or not (retained; last will: offline) |
| ``bus`` | detector -> API | the bus messages (``detection_service.bus``), without snapshot bytes |
| ``frame/<camera id>`` | detector -> API | annotated JPEGs of a camera, only while some API worker has viewers |
| ``viewers`` | API -> detector | each API worker's viewer count and frames sent (a lease, renewed every second) |
| ``cmd/<name>``, ``reply/<id>`` | API <-> detector | requests to the camera's worker; its answer or domain error |
| ``ingest`` | API -> detector | JPEG frames of the WebSocket camera ingest |
| ``api_gone`` | API -> detector | an API worker's client id when it goes (its last will, or its close) |

Several workers may each run some of the cameras (``aidoor detect --cameras 2,3``): a request about a
camera goes to the worker that runs it (camera-less requests are camera 1's), the few that concern
every worker (``BROADCAST``, and control of every camera) go to all of them.

Requests (``request``) wait at most ``timeout`` seconds: no detector online or no broker is a
503 ``DETECTOR_UNAVAILABLE``, no answer in time a 504 ``DETECTOR_TIMEOUT``; a domain error the
detector raised comes back as the same kind, code, message and details. Everything published
is QoS 0 (live data: the newest wins) except the commands and replies (QoS 1).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from detection_service import errors
from detection_service.bus import BusMessage, EventCreated
from detection_service.config import MqttBroker

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a frame larger than this is not sent over the link


class Request(msgspec.Struct, kw_only=True):
    id: str
    op: str
    reply_to: str
    args: dict[str, Any] = {}


class RemoteError(msgspec.Struct, kw_only=True):
    kind: str  # the DomainError class (errors.Conflict ...), so the status stays the same
    code: str
    message: str
    details: Any = None


class Reply(msgspec.Struct, kw_only=True):
    id: str
    data: bytes = b""  # msgpack of the answer
    error: RemoteError | None = None


class WorkerInfo(msgspec.Struct, kw_only=True):
    """What a detector worker announces (retained on ``workers/<name>``)."""

    name: str
    cameras: list[int] | None = None  # None: every camera of the cameras table
    online: bool = True

    def runs(self, camera: int) -> bool:
        return self.cameras is None or camera in self.cameras


# Requests every online worker answers (each keeps its own copy of what they change).
# System restarts too: each worker restarts the cameras it runs (camera 1's worker answers).
BROADCAST = frozenset({"settings_changed", "cameras_changed", "load_model", "restart_camera", "restart_detection"})
DEFAULT_WORKER = "default"  # the name of a worker that runs every camera


class ViewerLease(msgspec.Struct, kw_only=True):
    worker: str
    viewers: int
    frames_sent: int
    camera: int = 1  # the cameras table's id (1: the default camera)


class DetectorUnavailable(errors.Unavailable):
    code = "DETECTOR_UNAVAILABLE"


_ENCODER = msgspec.msgpack.Encoder()
_BUS_DECODER = msgspec.msgpack.Decoder(BusMessage)  # type: ignore[arg-type]


def encode(value: Any) -> bytes:
    return _ENCODER.encode(value)


def decode(data: bytes, kind: Any = Any) -> Any:
    return msgspec.msgpack.decode(data, type=kind)


def encode_bus(message: BusMessage) -> bytes:
    if isinstance(message, EventCreated):  # captures travel through the object store, not the link
        message = msgspec.structs.replace(message, snapshot_jpeg=b"")
    return _ENCODER.encode(message)


def decode_bus(data: bytes) -> BusMessage:
    return _BUS_DECODER.decode(data)


def _remote_error(exc: errors.DomainError) -> RemoteError:
    kind = next(
        (
            k.__name__
            for k in type(exc).__mro__
            if k.__module__ == errors.__name__ and issubclass(k, errors.DomainError)
        ),
        "DomainError",
    )
    details = exc.details
    try:
        encode(details)
    except (TypeError, msgspec.EncodeError):
        details = str(details)
    return RemoteError(kind=kind, code=exc.code, message=exc.message, details=details)


def _domain_error(error: RemoteError) -> errors.DomainError:
    kind = getattr(errors, error.kind, None)
    if not (isinstance(kind, type) and issubclass(kind, errors.DomainError)):
        kind = errors.Failed
    return kind(error.message, error.details, code=error.code)


class LiveLink:
    """The MQTT connection of one process. ``role`` "detector" serves requests and says
    ``online`` (with an ``offline`` last will); "api" sends requests and listens."""

    def __init__(
        self,
        broker: MqttBroker,
        *,
        role: str,
        node: str = "default",
        timeout_s: float = 5.0,
        workers: int = 4,
        worker: str = DEFAULT_WORKER,
        cameras: list[int] | None = None,
    ) -> None:
        self.broker = broker
        self.role = role
        self.timeout_s = timeout_s
        self.base = f"{broker.topic_prefix}/live/{node}"
        self.client_id = f"aidoor-{role}-{uuid.uuid4().hex[:10]}"
        self.reply_topic = self.topic(f"reply/{self.client_id}")
        # detector: who this worker is; api: every worker announced (online or not), by name
        self.me = WorkerInfo(name=worker, cameras=sorted(cameras) if cameras is not None else None)
        self.workers: dict[str, WorkerInfo] = {}
        self._closing = False
        self._connected = threading.Event()
        self._handlers: dict[str, tuple[Callable[[bytes], None], int]] = {}
        self._pending: dict[str, tuple[threading.Event, list[Reply]]] = {}
        self._lock = threading.Lock()
        self._serve: Callable[[str, dict[str, Any]], Any] | None = None
        # Requests run here, never on paho's network thread (a stop takes seconds).
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"live-{role}")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311)
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set()
        if role == "detector":
            offline = encode(msgspec.structs.replace(self.me, online=False))
            client.will_set(self.topic(f"workers/{worker}"), offline, qos=1, retain=True)
        else:  # an API worker that dies: the detector frees what it held (the ingest claim)
            client.will_set(self.topic("api_gone"), self.client_id.encode(), qos=1)
        client.reconnect_delay_set(1, 10)
        client.max_queued_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        if role == "api":
            self.subscribe("workers/+", self._on_worker, qos=1)
        self.subscribe(self.reply_topic[len(self.base) + 1 :], self._on_reply, qos=1)

    def topic(self, name: str) -> str:
        return f"{self.base}/{name}"

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background; with ``wait_s`` wait that long for the first connection."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=15)
        self.client.loop_start()
        return self._connected.wait(wait_s) if wait_s else self._connected.is_set()

    def close(self) -> None:
        self._closing = True
        if self._connected.is_set():
            if self.role == "detector":
                offline = encode(msgspec.structs.replace(self.me, online=False))
                info = self.client.publish(self.topic(f"workers/{self.me.name}"), offline, qos=1, retain=True)
            else:
                info = self.client.publish(self.topic("api_gone"), self.client_id.encode(), qos=1)
            with contextlib.suppress(RuntimeError, ValueError):  # not confirmed: the last will covers it
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("live link: %s:%s refused the connection: %s", self.broker.host, self.broker.port, reason)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small request / reply packets: without this, Nagle + delayed ACKs add ~40 ms a hop.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            subscriptions = [(topic, qos) for topic, (_, qos) in self._handlers.items()]
        if subscriptions:
            client.subscribe(subscriptions)
        if self.role == "detector":
            client.publish(self.topic(f"workers/{self.me.name}"), encode(self.me), qos=1, retain=True)
        self._connected.set()
        log.info("live link: connected to %s:%s as %s (%s)", self.broker.host, self.broker.port, self.role, self.base)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("live link: lost the broker (%s); paho reconnects", reason)
        self._connected.clear()
        self.workers = {}  # learnt again from the (retained) announcements after reconnecting

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        entry = self._handlers.get(message.topic)
        if entry is None:  # a wildcard subscription (workers/+): its handler gets the topic's last level
            parent, _, last = message.topic.rpartition("/")
            wildcard = self._handlers.get(f"{parent}/+")
            if wildcard is None:
                return
            entry = (lambda payload, w=wildcard[0], name=last: w(name, payload), wildcard[1])
        try:
            entry[0](message.payload)
        except Exception:
            log.exception("live link: handler of %s failed", message.topic)

    # -- publish / subscribe --------------------------------------------------------------------

    def subscribe(self, name: str, handler: Callable[..., None], qos: int = 0) -> None:
        """``handler(payload)`` runs on paho's thread: keep it short (queue the work). A name
        ending in ``/+`` subscribes to each topic one level below: ``handler(last_level, payload)``."""
        topic = self.topic(name)
        with self._lock:
            self._handlers[topic] = (handler, qos)
        if self._connected.is_set():
            self.client.subscribe(topic, qos)

    def publish(self, name: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        if not self._connected.is_set():
            return False
        return self.client.publish(self.topic(name), payload, qos=qos, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    # -- requests (API side) --------------------------------------------------------------------

    @property
    def detector_online(self) -> bool:
        return any(info.online for info in self.workers.values())

    def _on_worker(self, name: str, payload: bytes) -> None:
        if not payload:  # a retained announcement cleared
            self.workers.pop(name, None)
            return
        try:
            self.workers[name] = decode(payload, WorkerInfo)
        except msgspec.DecodeError as exc:
            log.warning("live link: undecodable announcement of worker %s: %s", name, exc)

    def worker_of(self, camera: int) -> WorkerInfo | None:
        """The worker that runs ``camera``: an online one that lists it, else one that runs every
        camera, else an offline one that lists it (so its requests say which worker is away)."""
        workers = list(self.workers.values())
        for rank in (
            lambda w: w.online and w.cameras is not None and camera in w.cameras,
            lambda w: w.online and w.cameras is None,
            lambda w: w.cameras is not None and camera in w.cameras,
            lambda w: w.cameras is None,
        ):
            found = next((w for w in workers if rank(w)), None)
            if found is not None:
                return found
        return None

    def _targets(self, op: str, args: dict[str, Any]) -> list[str]:
        online = sorted(name for name, info in self.workers.items() if info.online)
        if not online:
            raise DetectorUnavailable(
                "no detector worker is online: start one with `aidoor detect`", {"op": op, "topic": self.base}
            )
        if op in BROADCAST or (op == "control_cameras" and args.get("camera") is None):
            return online
        camera = int(args.get("camera") or 1)  # camera-less requests are the default camera's
        owner = self.worker_of(camera)
        if owner is None:
            raise DetectorUnavailable(
                f"no detector worker runs camera {camera}: start one with `aidoor detect --cameras {camera}`",
                {"op": op, "camera": camera, "worker": None},
            )
        if not owner.online:
            raise DetectorUnavailable(
                f"camera {camera}'s detector worker {owner.name!r} is offline",
                {"op": op, "camera": camera, "worker": owner.name},
            )
        return [owner.name]

    def request(
        self, op: str, args: dict[str, Any] | None = None, kind: Any = Any, timeout: float | None = None
    ) -> Any:
        """Ask the detector worker that runs the camera of ``args`` (camera 1 without one; every
        worker for a broadcast: the default camera's answer); its answer decoded as ``kind``, or
        its domain error raised here."""
        if not self._connected.is_set():
            raise DetectorUnavailable(
                f"the live link broker {self.broker.host}:{self.broker.port} is not reachable",
                {"op": op},
            )
        args = args or {}
        targets = self._targets(op, args)
        if len(targets) == 1:
            return self._ask(targets[0], op, args, kind, timeout)
        primary = self.worker_of(1)
        answers, failures = self._ask_all(targets, op, args, kind, timeout)
        if failures:
            raise next(iter(failures.values()))
        return answers.get(primary.name if primary is not None else "", answers[targets[0]])

    def gather(self, op: str, args: dict[str, Any] | None = None, kind: Any = Any) -> dict[str, Any]:
        """Every online worker's answer, by worker name (one that fails is left out and logged)."""
        online = sorted(name for name, info in self.workers.items() if info.online)
        answers, failures = self._ask_all(online, op, args or {}, kind, None)
        for name, exc in failures.items():
            log.warning("live link: worker %s did not answer %s: %s", name, op, exc)
        return answers

    def _ask_all(
        self, targets: list[str], op: str, args: dict[str, Any], kind: Any, timeout: float | None
    ) -> tuple[dict[str, Any], dict[str, errors.DomainError]]:
        """The same request to several workers at once (fan-out); their answers and errors."""
        answers: dict[str, Any] = {}
        failures: dict[str, errors.DomainError] = {}

        def one(name: str) -> None:
            try:
                answers[name] = self._ask(name, op, args, kind, timeout)
            except errors.DomainError as exc:
                failures[name] = exc

        threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return answers, failures

    def _ask(self, worker: str, op: str, args: dict[str, Any], kind: Any, timeout: float | None) -> Any:
        request_id = uuid.uuid4().hex
        done = threading.Event()
        box: list[Reply] = []
        with self._lock:
            self._pending[request_id] = (done, box)
        try:
            payload = encode(Request(id=request_id, op=op, reply_to=self.reply_topic, args=args))
            self.client.publish(self.topic(f"cmd/{worker}"), payload, qos=1)
            wait = self.timeout_s if timeout is None else timeout
            if not done.wait(wait):
                raise errors.TimedOut(
                    f"the detector worker {worker!r} did not answer {op!r} within {wait:g} s",
                    {"op": op, "worker": worker},
                    code="DETECTOR_TIMEOUT",
                )
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        reply = box[0]
        if reply.error is not None:
            raise _domain_error(reply.error)
        return decode(reply.data, kind)

    def _on_reply(self, payload: bytes) -> None:
        reply = decode(payload, Reply)
        with self._lock:
            pending = self._pending.get(reply.id)
        if pending is not None:
            pending[1].append(reply)
            pending[0].set()

    # -- serving (detector side) ----------------------------------------------------------------

    def serve(self, handler: Callable[[str, dict[str, Any]], Any]) -> None:
        """Answer requests: ``handler(op, args)`` returns the answer or raises a DomainError."""
        self._serve = handler
        self.subscribe(f"cmd/{self.me.name}", self._on_request, qos=1)

    def _on_request(self, payload: bytes) -> None:
        try:
            request = decode(payload, Request)
        except msgspec.DecodeError as exc:
            log.warning("live link: undecodable request dropped: %s", exc)
            return
        self._pool.submit(self._answer, request)

    def _answer(self, request: Request) -> None:
        started = time.monotonic()
        assert self._serve is not None
        try:
            reply = Reply(id=request.id, data=encode(self._serve(request.op, request.args)))
        except errors.DomainError as exc:
            reply = Reply(id=request.id, error=_remote_error(exc))
        except Exception as exc:  # our own failure: the API answers 500 with its message
            log.exception("live link: request %s failed", request.op)
            reply = Reply(id=request.id, error=RemoteError(kind="Failed", code="INTERNAL_ERROR", message=str(exc)))
        self.client.publish(request.reply_to, encode(reply), qos=1)
        log.debug("live link: %s answered in %.1f ms", request.op, (time.monotonic() - started) * 1000)
