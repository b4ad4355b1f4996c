"""The API's side of a pipeline that runs in an ``aidoor detect`` worker (docs/deployment.md).

``RemotePipelineService`` answers what the handlers ask of ``PipelineService`` (status, config,
control, stream status, tracking, snapshot, the MJPEG broadcaster, the WebSocket ingest, manual
detection, system restarts) over the live link (``detection_service/live_link.py``), so the
handlers are the same in both layouts. The bus messages the worker publishes are put on this
process's own ``EventBus``: the live events stream, the metrics and the notifier hear them as if
the pipeline ran here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus
from detection_service.config import Settings
from detection_service.errors import DomainError
from detection_service.live_link import (
    MAX_FRAME_BYTES,
    DetectorUnavailable,
    LiveLink,
    ViewerLease,
    decode_bus,
    encode,
)
from detection_service.realtime.manual_detection import ManualDetector
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.realtime.viewers import Viewer
from detection_service.services.cameras import CameraService
from schemas.db import DEFAULT_CAMERA_ID
from schemas.detection import DetectionConfig, DetectionStatus, ManualDetection, StreamStatus, TrackingSnapshot

log = logging.getLogger(__name__)

DEFAULT_CAMERA = DEFAULT_CAMERA_ID
LEASE_S = 1.0  # how often a worker with viewers renews its lease (the detector drops it after 3 s)
# Live link calls of the async handlers waiting at once, on threads of their own: a hung detector
# holds these (up to the link's timeout), not the threads of anyio's default limiter that the sync
# handlers use.
LIVE_CALLS = 64


class RemoteBroadcaster:
    """``FrameBroadcaster``'s interface over the link: this worker's MJPEG viewers get the frames
    the detector publishes while any worker holds a viewer lease."""

    def __init__(self, link: LiveLink, worker: str, camera: int = DEFAULT_CAMERA) -> None:
        self.link = link
        self.worker = worker
        self.camera = camera
        self.frames_sent = 0  # the MJPEG handler counts here; reported with the lease
        self._viewers: set[Viewer] = set()
        self._lock = threading.Lock()
        self._latest: bytes | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="live-viewers", daemon=True)
        link.subscribe(f"frame/{camera}", self._on_frame)
        self._thread.start()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def subscribe(self) -> Viewer:
        viewer = Viewer(asyncio.get_running_loop())
        if self._latest:
            viewer.offer(self._latest)
        with self._lock:
            self._viewers.add(viewer)
        self._report()
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        with self._lock:
            self._viewers.discard(viewer)
        self._report()

    def close(self) -> None:
        self._closed.set()

    def _report(self) -> None:
        lease = ViewerLease(
            worker=self.worker, viewers=len(self._viewers), frames_sent=self.frames_sent, camera=self.camera
        )
        self.link.publish("viewers", encode(lease))

    def _renew(self) -> None:
        while not self._closed.wait(LEASE_S):
            if self._viewers:
                self._report()

    def _on_frame(self, jpeg: bytes) -> None:  # paho's thread
        if len(jpeg) > MAX_FRAME_BYTES:
            return
        self._latest = jpeg
        with self._lock:
            viewers = list(self._viewers)
        for viewer in viewers:
            try:
                viewer.loop.call_soon_threadsafe(viewer.offer, jpeg)
            except RuntimeError:  # its event loop is gone
                self.unsubscribe(viewer)


class RemoteIngest:
    """``IngestState`` for the WebSocket ingest handler: one camera at a time across every API
    worker (the detector keeps the claim); the counts the status shows are the detector's."""

    def __init__(self, link: LiveLink, camera: int | None = None) -> None:
        self.link = link
        self.camera = camera  # None: the default camera (docs/cameras.md: an ingest per camera)
        self.frames_received = 0  # this connection's own counts (the handler's pong)
        self.bytes_received = 0
        self._invalid = 0
        self._client: str | None = None

    def claim(self, client: str) -> bool:
        args = {"client": client, "camera": self.camera, "owner": self.link.client_id}  # owner: see api_gone
        if not self.link.request("ingest_claim", args):
            return False  # another camera holds it (on this or another API worker)
        self._client = client
        self.frames_received = self.bytes_received = self._invalid = 0
        return True

    def release(self) -> None:
        try:
            self.link.request("ingest_release", {"camera": self.camera})
        except DomainError as exc:  # the detector frees a claim whose frames stopped anyway
            log.warning("ingest release not confirmed: %s", exc)

    @property
    def client(self) -> str | None:
        return self._client

    @client.setter
    def client(self, name: str | None) -> None:  # the camera's hello names it
        self._client = name
        self.link.publish("ingest_event", encode({"client": name, "camera": self.camera}))

    @property
    def frames_invalid(self) -> int:
        return self._invalid

    @frames_invalid.setter
    def frames_invalid(self, value: int) -> None:
        self.link.publish("ingest_event", encode({"invalid": value - self._invalid, "camera": self.camera}))
        self._invalid = value


class RemotePipeline:
    """The few ``DetectionPipeline`` calls the handlers and the monitoring make, for one camera."""

    def __init__(self, link: LiveLink, camera: int | None = None) -> None:
        self.link = link
        self.camera = camera  # None: the default camera
        self.on_camera_state: Any = None  # the monitoring's hook; the worker reports its camera itself
        self._push_mode: tuple[float, bool] = (0.0, False)

    def _ask(self, op: str, **kwargs: Any) -> Any:
        return self.link.request(op, {"camera": self.camera}, **kwargs)

    def status(self) -> dict[str, Any]:
        return self._ask("pipeline_status")

    @property
    def running(self) -> bool:
        return bool(self._ask("running"))

    def latest_jpeg(self, quality: int = 80) -> tuple[int, bytes | None]:
        version, jpeg = self._ask("latest_jpeg")
        return int(version), jpeg

    def push_jpeg(self, data: bytes) -> bool:
        """Send one ingest frame (this camera's WebSocket ingest); False once the camera source is
        no longer ``push`` (asked again at most once a second)."""
        checked, push = self._push_mode
        if time.monotonic() - checked > 1.0:
            push = bool(self.link.request("push_mode", {"camera": self.camera}))
            self._push_mode = (time.monotonic(), push)
        if not push:
            return False
        return self.link.publish("ingest" if self.camera is None else f"ingest/{self.camera}", data)


class RemoteManualDetector(ManualDetector):
    """``POST /api/detections`` runs on the worker's detector (the model lives there). A subclass
    so the handler's typed parameter accepts it (Litestar validates injected values by type)."""

    def __init__(self, link: LiveLink) -> None:  # noqa: B027 - nothing of the local detector is built
        self.link = link

    def detect(self, image: np.ndarray, record: bool = False) -> ManualDetection:
        args = {"image": image.tobytes(), "shape": list(image.shape), "dtype": str(image.dtype), "record": record}
        return self.link.request("manual_detect", args, ManualDetection, timeout=max(self.link.timeout_s, 30.0))


class RemotePipelineService(PipelineService):
    """What the API uses of ``PipelineService``, answered by a detector worker. A subclass so the
    handlers' typed parameters accept it (Litestar validates injected values by type); nothing of
    the local pipeline is built, and every method the API calls is overridden here."""

    def __init__(  # noqa: B027
        self, settings: Settings, link: LiveLink, bus: EventBus, session_factory: sessionmaker[Session]
    ) -> None:
        self.settings = settings
        self.link = link
        self.bus = bus
        self.worker = uuid.uuid4().hex[:10]
        self.pipeline = RemotePipeline(link)
        self.broadcaster = RemoteBroadcaster(link, self.worker)
        self._pipelines: dict[int, RemotePipeline] = {}
        self._broadcasters: dict[int, RemoteBroadcaster] = {DEFAULT_CAMERA: self.broadcaster}
        # The cameras API changes the table here; the worker re-reads it before the request answers.
        self.camera_service = CameraService(session_factory)
        self.camera_service.subscribe(self._cameras_changed)
        self.ingest = RemoteIngest(link)
        self._ingests: dict[int, RemoteIngest] = {}
        self.manual = RemoteManualDetector(link)
        self.holder = None  # type: ignore[assignment]  # the detector lives in the worker
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at the first call
        link.subscribe("bus", self._on_bus)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """An async handler's call: on a thread, so the event loop serves other requests while the
        detector answers (up to the link's timeout if it hangs; docs/deployment.md)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(LIVE_CALLS)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)

    def _on_bus(self, payload: bytes) -> None:
        self.bus.publish(decode_bus(payload))

    def start_background(self) -> None:
        self.link.start()

    def close(self) -> None:
        for broadcaster in self._broadcasters.values():
            broadcaster.close()
        self.link.close()

    def _cameras_changed(self) -> None:
        try:
            self.link.request("cameras_changed", timeout=max(self.link.timeout_s, 15.0))
        except DomainError as exc:
            log.warning("cameras changed, but the detector worker did not take them yet: %s", exc)

    def settings_changed(self, category: str, _value: Any) -> None:
        """A SettingsService listener: the worker reads the stored category again, before the
        request that changed it answers (as in one process: a new camera source is open by then).
        A worker away reads every category when it starts."""
        try:
            self.link.request("settings_changed", {"category": category}, timeout=max(self.link.timeout_s, 15.0))
        except DomainError as exc:
            log.warning("settings %s stored, but the detector worker did not take them yet: %s", category, exc)

    @property
    def push_mode(self) -> bool:
        return bool(self.link.request("push_mode"))

    def status(self, notification_ready: bool = False) -> DetectionStatus:
        return self.link.request("status", {"notification_ready": notification_ready}, DetectionStatus)

    def stream_status(self) -> StreamStatus:
        return self.link.request("stream_status", kind=StreamStatus)

    def config(self) -> DetectionConfig:
        return self.link.request("config", kind=DetectionConfig)

    def configure(self, changes: Any) -> DetectionConfig:
        config = self.link.request("configure", {"changes": changes}, DetectionConfig)  # camera 1's worker stores
        if sum(info.online for info in self.link.workers.values()) > 1:  # the other workers read them again
            for category in ("detection", "pipeline"):
                self.settings_changed(category, None)
        return config

    def control(self, action: str) -> dict[str, Any]:
        return self.link.request("control", {"action": action}, timeout=max(self.link.timeout_s, 15.0))

    def restart_camera(self) -> dict[str, Any]:
        return self.link.request("restart_camera", timeout=max(self.link.timeout_s, 15.0))

    def restart_detection(self, *, reload_settings: bool = False) -> dict[str, Any]:
        args = {"reload_settings": reload_settings}
        return self.link.request("restart_detection", args, timeout=max(self.link.timeout_s, 60.0))

    def tracking(self) -> TrackingSnapshot:
        return self.link.request("tracking", kind=TrackingSnapshot)

    # -- several cameras (docs/cameras.md): the worker answers for each of its cameras -----------

    def pipeline_of(self, camera_id: int | None) -> Any:
        if camera_id is None or camera_id == DEFAULT_CAMERA:
            return self.pipeline
        self.link.request("check_camera", {"camera": camera_id})  # 404 / 409 as in one process
        return self._pipelines.setdefault(camera_id, RemotePipeline(self.link, camera_id))

    def broadcaster_of(self, camera_id: int | None) -> Any:
        if camera_id is None or camera_id == DEFAULT_CAMERA:
            return self.broadcaster
        self.link.request("check_camera", {"camera": camera_id})
        if camera_id not in self._broadcasters:
            self._broadcasters[camera_id] = RemoteBroadcaster(self.link, self.worker, camera_id)
        return self._broadcasters[camera_id]

    def camera_status(self, camera_id: int | None, notification_ready: bool = False) -> DetectionStatus:
        args = {"camera": camera_id, "notification_ready": notification_ready}
        status = self.link.request("camera_status", args, DetectionStatus)
        if any(info.cameras is not None for info in self.link.workers.values()):
            status.cameras = self.camera_summaries()  # workers with cameras of their own: every one's
        return status

    def camera_summaries(self) -> list[dict[str, Any]]:
        """Every camera of the table in brief, each from the worker that runs it (with its name);
        a camera whose worker is offline, or that no worker runs, is listed as such."""
        found = {
            summary["camera_id"]: summary
            for answers in self.link.gather("camera_summaries").values()
            for summary in answers
        }
        out = []
        for record in self.camera_service.list():
            summary = found.get(record.id)
            if summary is None:
                owner = self.link.worker_of(record.id)
                summary = {
                    "camera_id": record.id,
                    "name": "default" if record.is_default else record.name,
                    # no worker runs it / its worker is away / its worker did not answer in time
                    "status": "unassigned" if owner is None else "unknown" if owner.online else "offline",
                    "camera_status": "disconnected",
                    "fps": 0.0,
                    "inferences": 0,
                    "detection_count": 0,
                    "source": record.source,
                    "worker": owner.name if owner is not None else None,
                }
            out.append(summary)
        return out

    def camera_stream_status(self, camera_id: int | None) -> StreamStatus:
        return self.link.request("camera_stream_status", {"camera": camera_id}, StreamStatus)

    def ingest_target(self, camera_id: int | None) -> tuple[Any, RemoteIngest]:
        """A camera's WebSocket ingest: its frames go to the worker on ``ingest/<camera>``."""
        if camera_id is None or camera_id == DEFAULT_CAMERA:
            return self.pipeline, self.ingest
        pipeline = self.pipeline_of(camera_id)  # 404 / 409 as in one process
        return pipeline, self._ingests.setdefault(camera_id, RemoteIngest(self.link, camera_id))

    def accepts_push(self, camera_id: int | None) -> bool:
        return bool(self.link.request("push_mode", {"camera": camera_id}))

    def control_cameras(self, action: str, camera_id: int | None) -> None:
        args = {"action": action, "camera": camera_id}
        self.link.request("control_cameras", args, timeout=max(self.link.timeout_s, 15.0))

    def camera_info(self, record: Any) -> dict[str, Any]:
        """The camera's live half from the worker that runs it; a camera whose worker is offline,
        or that no worker runs, is listed as such (not left out, not a failed list)."""
        try:
            return self.link.request("camera_info", {"camera": record.id})
        except DetectorUnavailable as exc:
            worker = (exc.details or {}).get("worker") if isinstance(exc.details, dict) else None
            return {
                "status": "offline" if worker else "unassigned",
                "camera_status": "disconnected",
                "fps": 0.0,
                "detection_count": 0,
                "effective_source": record.source,
                "worker": worker,
            }

    def load_model(self, model_id: str, _weights: Any = None) -> None:
        """``ModelService.deploy_hook``: the worker loads the deployed model (from the shared store)
        before the API marks it current, as the in-process loader does."""
        self.link.request("load_model", {"model_id": model_id}, timeout=max(self.link.timeout_s, 300.0))
