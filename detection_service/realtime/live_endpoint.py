"""The detector worker's side of the live link (``aidoor detect``; docs/deployment.md).

``LiveEndpoint`` answers the API workers' requests with the ``PipelineService`` of this process,
publishes its bus messages, publishes annotated frames while any API worker holds a viewer lease
(at most ``max_fps`` a second), feeds the WebSocket ingest's frames to the pipeline, and reads a
settings category again when an API worker stored it (before that request answers).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec
import numpy as np

from detection_service.errors import Invalid
from detection_service.live_link import MAX_FRAME_BYTES, LiveLink, ViewerLease, decode, encode_bus
from detection_service.realtime.pipeline_service import PipelineService

log = logging.getLogger(__name__)

LEASE_TTL_S = 3.0  # a worker's viewers count until this long after its last lease


class LiveEndpoint:
    def __init__(self, service: PipelineService, link: LiveLink, *, max_fps: float = 15.0) -> None:
        self.service = service
        self.link = link
        self.min_interval_s = 1.0 / max_fps
        self.frames_published = 0
        self._leases: dict[str, tuple[ViewerLease, float]] = {}
        self._lock = threading.Lock()
        self._kick = threading.Event()  # a new viewer: send the latest frame at once
        self._closed = threading.Event()
        self._bus_sub = None
        self._frames = threading.Thread(target=self._publish_frames, name="live-frames", daemon=True)

    def start(self) -> None:
        self.link.serve(self.handle)
        self.link.subscribe("viewers", self._on_lease)
        self.link.subscribe("ingest", self._on_ingest)
        self.link.subscribe("ingest_event", self._on_ingest_event)
        self._bus_sub = self.service.bus.subscribe_callback(
            "live-link", lambda message: self.link.publish("bus", encode_bus(message)), maxsize=500
        )
        self._frames.start()
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
        if op == "stream_status":
            status = service.stream_status()
            viewers, frames_sent = self.remote_viewers()
            return msgspec.structs.replace(
                status, viewers=status.viewers + viewers, frames_sent=status.frames_sent + frames_sent
            )
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
            return service.pipeline.status()
        if op == "running":
            return service.pipeline.running
        if op == "latest_jpeg":
            version, jpeg = service.pipeline.latest_jpeg()
            return [version, jpeg]
        if op == "push_mode":
            return service.push_mode
        if op == "ingest_claim":
            return service.ingest.claim(str(args.get("client")))
        if op == "ingest_release":
            service.ingest.release()
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

    def remote_viewers(self) -> tuple[int, int]:
        """Viewers of the API workers whose lease is current, and every frame they sent."""
        now = time.monotonic()
        with self._lock:
            leases = list(self._leases.values())
        viewers = sum(lease.viewers for lease, seen in leases if now - seen < LEASE_TTL_S)
        return viewers, sum(lease.frames_sent for lease, _ in leases)

    def _on_lease(self, payload: bytes) -> None:
        lease = decode(payload, ViewerLease)
        with self._lock:
            before = self._leases.get(lease.worker)
            self._leases[lease.worker] = (lease, time.monotonic())
        if lease.viewers and (before is None or before[0].viewers < lease.viewers):
            self._kick.set()

    def _publish_frames(self) -> None:
        version = -1
        last = 0.0
        while not self._closed.is_set():
            if self.remote_viewers()[0] == 0:
                self._kick.wait(0.5)
                continue
            if self._kick.is_set():  # someone new: the frame in hand at once, even while stopped
                self._kick.clear()
                new_version, jpeg = self.service.pipeline.latest_jpeg()
            else:
                new_version, jpeg = self.service.pipeline.wait_jpeg(version, timeout=0.5)
                if new_version == version:
                    continue
            if jpeg is None or len(jpeg) > MAX_FRAME_BYTES:
                continue
            version = new_version
            wait = self.min_interval_s - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
            if self.link.publish("frame", jpeg):
                self.frames_published += 1

    # -- settings and ingest --------------------------------------------------------------------

    def _on_ingest(self, jpeg: bytes) -> None:
        state = self.service.ingest
        if self.service.pipeline.push_jpeg(jpeg):
            state.frames_received += 1
            state.bytes_received += len(jpeg)

    def _on_ingest_event(self, payload: bytes) -> None:
        event = decode(payload, dict)
        state = self.service.ingest
        if "client" in event:
            state.client = event["client"]
        if "invalid" in event:
            state.frames_invalid += int(event["invalid"])
