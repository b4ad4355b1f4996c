"""The detector worker's side of the live link (``aidoor detect``; docs/deployment.md).

``LiveEndpoint`` answers the API workers' requests with the ``PipelineService`` of this process,
publishes its bus messages, publishes a camera's annotated frames while any API worker holds a
viewer lease for it (at most ``max_fps`` a second), feeds the WebSocket ingest's frames to the pipeline, and reads a
settings category again when an API worker stored it (before that request answers).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec
import numpy as np

from detection_service.errors import DomainError, Invalid
from detection_service.live_link import MAX_FRAME_BYTES, LiveLink, ViewerLease, decode, encode_bus
from detection_service.realtime.pipeline_service import PipelineService
from schemas.db import DEFAULT_CAMERA_ID

log = logging.getLogger(__name__)

LEASE_TTL_S = 3.0  # a worker's viewers count until this long after its last lease


class LiveEndpoint:
    def __init__(self, service: PipelineService, link: LiveLink, *, max_fps: float = 15.0) -> None:
        self.service = service
        self.link = link
        self.min_interval_s = 1.0 / max_fps
        self.frames_published = 0
        self._leases: dict[tuple[str, int], tuple[ViewerLease, float]] = {}  # (worker, camera) -> lease
        self._lock = threading.Lock()
        self._kicks: dict[int, threading.Event] = {}  # per camera: a new viewer, send a frame at once
        self._publishers: dict[int, threading.Thread] = {}
        self._closed = threading.Event()
        self._bus_sub = None
        self._claims: dict[int, str] = {}  # camera -> the API worker (link client id) holding its ingest

    def start(self) -> None:
        self.link.serve(self.handle)
        self.link.subscribe("viewers", self._on_lease)
        self.link.subscribe("ingest", self._on_ingest)
        self.link.subscribe("ingest_event", self._on_ingest_event)
        self.link.subscribe("api_gone", self._on_api_gone, qos=1)
        self._bus_sub = self.service.bus.subscribe_callback(
            "live-link", lambda message: self.link.publish("bus", encode_bus(message)), maxsize=500
        )
        self.link.start()

    def close(self) -> None:
        self._closed.set()
        if self._bus_sub is not None:
            self._bus_sub.close()
        self.link.close()

    # -- requests -------------------------------------------------------------------------------

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        service = self.service
        if op == "status":
            return service.status(bool(args.get("notification_ready")))
        camera = args.get("camera")
        if op == "stream_status" or op == "camera_stream_status":
            status = service.camera_stream_status(camera)
            viewers, frames_sent = self.remote_viewers(camera or DEFAULT_CAMERA_ID)
            return msgspec.structs.replace(
                status, viewers=status.viewers + viewers, frames_sent=status.frames_sent + frames_sent
            )
        if op == "camera_status":
            return service.camera_status(camera, bool(args.get("notification_ready")))
        if op == "control_cameras":
            service.control_cameras(str(args.get("action")), camera)
            return True
        if op == "check_camera":
            service.pipeline_of(camera)  # NotFound / Conflict as in one process
            return True
        if op == "camera_info":  # with the worker that runs it (GET /api/cameras, several workers)
            return {**service.camera_info(service.camera_service.get(int(camera))), "worker": self.link.me.name}
        if op == "camera_summaries":  # this worker's cameras in brief (GET /api/detection, several workers)
            return [
                {**summary, "worker": self.link.me.name}
                for summary in service.camera_summaries()
                if self.runs(summary["camera_id"])
            ]
        if op == "cameras_changed":
            service.camera_service.changed_elsewhere()
            return True
        if op == "config":
            return service.config()
        if op == "configure":
            return service.configure(args.get("changes"))
        if op == "control":
            return service.control(str(args.get("action")))
        if op == "restart_camera":
            return service.restart_camera()
        if op == "restart_detection":
            return service.restart_detection(reload_settings=bool(args.get("reload_settings")))
        if op == "tracking":
            return service.tracking()
        if op == "pipeline_status":
            return service.pipeline_of(camera).status()
        if op == "running":
            return service.pipeline_of(camera).running
        if op == "latest_jpeg":
            version, jpeg = service.pipeline_of(camera).latest_jpeg()
            return [version, jpeg]
        if op == "push_mode":
            return service.accepts_push(camera)
        if op == "ingest_claim":
            _pipeline, state = service.ingest_target(camera)
            if camera not in (None, DEFAULT_CAMERA_ID):  # that camera's frames: ingest/<camera>
                self.link.subscribe(f"ingest/{camera}", lambda jpeg, c=camera: self._on_ingest(jpeg, c))
            claimed = state.claim(str(args.get("client")))
            if claimed and args.get("owner"):  # freed if that API worker dies (its last will: api_gone)
                with self._lock:
                    self._claims[camera or DEFAULT_CAMERA_ID] = str(args["owner"])
            return claimed
        if op == "ingest_release":
            service.ingest_target(camera)[1].release()
            with self._lock:
                self._claims.pop(camera or DEFAULT_CAMERA_ID, None)
            return True
        if op == "settings_changed":
            self.service.settings_service.changed_elsewhere(str(args.get("category")))
            return True
        if op == "load_model":
            model_id, weights = service.models.model_service.weights_path(str(args.get("model_id")))
            service.models.load(model_id, weights)
            return True
        if op == "manual_detect":
            image = np.frombuffer(args["image"], dtype=np.dtype(args["dtype"])).reshape(args["shape"])
            return service.manual.detect(image, bool(args.get("record")))
        raise Invalid(f"unknown live link request {op!r}", code="UNKNOWN_REQUEST")

    # -- viewers and frames ---------------------------------------------------------------------

    def remote_viewers(self, camera: int) -> tuple[int, int]:
        """A camera's viewers on the API workers whose lease is current, and every frame they sent."""
        now = time.monotonic()
        with self._lock:
            leases = [(lease, seen) for lease, seen in self._leases.values() if lease.camera == camera]
        viewers = sum(lease.viewers for lease, seen in leases if now - seen < LEASE_TTL_S)
        return viewers, sum(lease.frames_sent for lease, _ in leases)

    def runs(self, camera: int | None) -> bool:
        """Whether this worker runs the camera (aidoor detect --cameras; docs/deployment.md)."""
        return self.link.me.runs(camera or DEFAULT_CAMERA_ID)

    def _on_lease(self, payload: bytes) -> None:
        lease = decode(payload, ViewerLease)
        if not self.runs(lease.camera):  # another worker's camera: it sends the frames
            return
        with self._lock:
            before = self._leases.get((lease.worker, lease.camera))
            self._leases[(lease.worker, lease.camera)] = (lease, time.monotonic())
            if not lease.viewers:
                return
            kick = self._kicks.setdefault(lease.camera, threading.Event())
            if before is None or before[0].viewers < lease.viewers:
                kick.set()  # someone new: the frame in hand at once, even while stopped
            thread = self._publishers.get(lease.camera)
            if thread is None or not thread.is_alive():  # checked at every renewal: an idle one may just have ended
                thread = threading.Thread(
                    target=self._publish_frames, args=(lease.camera, kick), name="live-frames", daemon=True
                )
                self._publishers[lease.camera] = thread
                thread.start()

    def _publish_frames(self, camera: int, kick: threading.Event) -> None:
        """One camera's frames while any API worker holds a lease with viewers of it."""
        version = -1
        last = 0.0
        idle_since: float | None = None
        while not self._closed.is_set():
            if self.remote_viewers(camera)[0] == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > LEASE_TTL_S:
                    return  # a new lease starts another
                kick.wait(0.5)
                continue
            idle_since = None
            try:
                pipeline = self.service.pipeline_of(camera)
            except DomainError:  # the camera went away
                return
            if kick.is_set():
                kick.clear()
                new_version, jpeg = pipeline.latest_jpeg()
            else:
                new_version, jpeg = pipeline.wait_jpeg(version, timeout=0.5)
                if new_version == version:
                    continue
            if jpeg is None or len(jpeg) > MAX_FRAME_BYTES:
                continue
            version = new_version
            wait = self.min_interval_s - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
            if self.link.publish(f"frame/{camera}", jpeg):
                self.frames_published += 1

    # -- settings and ingest --------------------------------------------------------------------

    def _on_ingest(self, jpeg: bytes, camera: int | None = None) -> None:
        if not self.runs(camera):  # every worker hears the default camera's ingest topic
            return
        try:
            pipeline, state = self.service.ingest_target(camera)
        except DomainError:  # the camera was deleted or disabled meanwhile
            return
        if pipeline.push_jpeg(jpeg):
            state.frames_received += 1
            state.bytes_received += len(jpeg)

    def _on_api_gone(self, payload: bytes) -> None:
        """An API worker went (its last will, or its close): the ingest claims it held are free
        again, so a camera may connect through another worker (docs/deployment.md)."""
        owner = payload.decode(errors="replace")
        with self._lock:
            cameras = [camera for camera, holder in self._claims.items() if holder == owner]
            for camera in cameras:
                del self._claims[camera]
        for camera in cameras:
            try:
                self.service.ingest_target(camera)[1].release()
            except DomainError:  # the camera went away meanwhile: nothing to free
                continue
            log.warning("live link: API worker %s went away holding camera %s's ingest; released", owner, camera)

    def _on_ingest_event(self, payload: bytes) -> None:
        event = decode(payload, dict)
        if not self.runs(event.get("camera")):
            return
        try:
            state = self.service.ingest_target(event.get("camera"))[1]
        except DomainError:
            return
        if "client" in event:
            state.client = event["client"]
        if "invalid" in event:
            state.frames_invalid += int(event["invalid"])
