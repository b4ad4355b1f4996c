"""DetectionPipeline: capture -> motion gate -> detector -> tracker -> event recorder, one thread.

The capture runs on its own thread (newest frame wins); everything else runs on the pipeline
thread, so the tracker and the recorder need no locks. Database and store writes happen on the
recorder's writer threads. The live view is produced lazily: the pipeline only keeps the last
frame and its boxes; drawing and JPEG encoding happen in the viewer's thread (``latest_jpeg``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import cv2
import msgspec
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from detection_service import metrics
from detection_service.bus import EventBus
from detection_service.ml.training import min_confidence
from detection_service.notifications.queue import QueueConfig
from detection_service.pipeline.batching import BatchingDetector, Superseded
from detection_service.pipeline.capture import Capture, Frame
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import DetectorError, DetectorHolder, classify_detections
from detection_service.pipeline.events import EventRecorder, FrameInfo
from detection_service.pipeline.motion import MotionDetector, MotionGate
from detection_service.pipeline.sources import (
    PUSH_SOURCE_NAMES,
    FrameSource,
    PushSource,
    open_source,
    parse_resolution,
)
from detection_service.pipeline.tracker import ObjectTracker, Track
from detection_service.storage.base import ObjectStore
from schemas.db import DEFAULT_CAMERA_ID
from schemas.detection import PipelineSettings, TrackBox, TrackedObject, TrackingSnapshot
from schemas.settings import CameraSettings, DetectionSettings

log = logging.getLogger(__name__)

ERROR_AFTER = 5  # consecutive failed frames before the status says "error"
_COLOURS = {
    "person": (80, 200, 80),
    "package": (0, 165, 255),
    "delivery_food": (200, 80, 200),
    "mail": (255, 160, 0),
    "unclassified": (160, 160, 160),
}


@dataclass(frozen=True, slots=True)
class _View:
    frame: Frame
    boxes: list[tuple[tuple[float, float, float, float], str, str]]  # xyxy, label, object type
    text: str


SourceFactory = Callable[[CameraSettings], FrameSource | None]


class DetectionPipeline:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        bus: EventBus,
        holder: DetectorHolder,
        camera: CameraSettings | None = None,
        detection: DetectionSettings | None = None,
        config: PipelineConfig | None = None,
        source_factory: SourceFactory | None = None,
        alerts: QueueConfig | None = None,
        camera_id: int = DEFAULT_CAMERA_ID,
        batcher: BatchingDetector | None = None,
    ) -> None:
        """``camera_id``: the cameras row whose events this pipeline records (docs/cameras.md);
        ``batcher``: the detector shared with the other cameras' pipelines (None: call it directly)."""
        self.holder = holder
        self.camera_id = camera_id
        self.batcher = batcher
        self.bus = bus
        self.camera = camera or CameraSettings()
        self.detection = detection or DetectionSettings()
        self.config = config or PipelineConfig()
        self.recorder = EventRecorder(
            session_factory, store, lambda: self.detection, bus, self.config, alerts, camera_id=camera_id
        )
        self.push_source = PushSource()  # one for the process: the WebSocket ingest outlives restarts
        self._source_factory = source_factory or self._default_source
        # GET /api/system/status: the capture reports its camera's state here ("running" / "error", reason).
        self.on_camera_state: Callable[[str, str | None], None] | None = None
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._lingering: threading.Thread | None = None
        self._stop = threading.Event()
        self._capture: Capture | None = None
        self._gate = self._make_gate()
        self._tracker: ObjectTracker | None = None
        self._view: _View | None = None
        self._view_version = 0
        self._view_cond = threading.Condition()
        self._jpeg_cache: tuple[int, bytes] | None = None
        self._reset_counters()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            lingering = self._lingering
            if lingering is not None and lingering.is_alive():
                # The last stop timed out inside a blocking call; two threads must never share
                # the tracker and recorder.
                lingering.join(10.0)
                if lingering.is_alive():
                    raise RuntimeError("the previous pipeline thread is still running; try again")
            self._reset_counters()
            self._stop = threading.Event()
            self._gate = self._make_gate()
            self._tracker = ObjectTracker()
            self._capture = self._open_capture()
            self._started_at = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="detection-pipeline", daemon=True
            )
            self._thread.start()
            log.info("detection pipeline started (source %s)", self._capture.source.name if self._capture else "none")

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop capture and processing; returns within ``timeout``. Non-package events end at their
        last sighting; pending writes continue on the writer threads."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stop.set()
            capture, self._capture = self._capture, None
            thread = self._thread
            stopped = True
            if capture is not None:
                stopped = capture.stop(max(0.1, deadline - time.monotonic() - 0.3))
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                stopped = stopped and not thread.is_alive()
            self._lingering = thread if thread is not None and thread.is_alive() else None
            self._thread = None
            self._started_at = None
        if not stopped:
            log.warning("pipeline stop: a thread is still finishing a blocking call")
        return stopped

    def restart(self) -> None:
        with self._lock:
            self.stop()
            self.start()

    def close(self, timeout: float = 5.0) -> int:
        """Stop and drain the recorder's writes (app shutdown); returns writes left undone."""
        self.stop()
        return self.recorder.close(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    # -- live configuration ---------------------------------------------------------------

    def apply_settings(self, category: str, value: msgspec.Struct) -> None:
        """A SettingsService listener: detection settings apply from the next frame; a camera
        change re-opens only the capture (the tracker and open events carry on)."""
        if category == "detection" and isinstance(value, DetectionSettings):
            self.detection = value
        elif category == "camera" and isinstance(value, CameraSettings):
            old, self.camera = self.camera, value
            capture = self._capture
            if old.source != value.source:
                self._swap_capture()
            elif (old.resolution, old.fps) != (value.resolution, value.fps):
                if capture is not None and getattr(capture.source, "is_device", False):
                    self._swap_capture()  # a device is asked for its mode when it is opened
                elif capture is not None:
                    capture.configure(**_capture_limits(value))  # software: from the next frame

    def configure(self, **changes: Any) -> PipelineConfig:
        """Change PipelineConfig fields live (e.g. ``motion_mode="off"``); ValueError if invalid.
        The motion gate and the event recorder take the new values from their next frame."""
        new = self.config.with_changes(**changes)
        self.config = new
        self.recorder.configure(new)
        gate = self._gate
        gate.mode = new.motion_mode
        gate.full_check_interval_s = new.full_check_interval_s
        gate.refresh_interval_s = new.refresh_interval_s
        gate.detector.width, gate.detector.threshold = new.motion_width, new.motion_threshold
        gate.detector.min_area_ratio = new.motion_min_area
        return new

    def apply_pipeline_settings(self, pipeline_settings: PipelineSettings) -> PipelineConfig:
        """The stored pipeline settings changed: take every one of them (the limits that are not settings stay)."""
        return self.configure(**msgspec.structs.asdict(pipeline_settings))

    def push_jpeg(self, data: bytes) -> bool:
        """Frame from the WebSocket ingest; False (ignored) unless camera.source is "push"."""
        if self.camera.source.strip().lower() not in PUSH_SOURCE_NAMES:
            return False
        self.push_source.push_jpeg(data)
        return True

    # -- status and view ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        capture = self._capture
        detector = self.holder.get()
        running = self.running
        if not running:
            state = "error" if self._crashed else "stopped"
        else:
            state = "error" if self._consecutive_errors >= ERROR_AFTER else "running"
        cap_stats = capture.stats() if capture is not None else {}
        return {
            "camera_id": self.camera_id,
            "status": state,
            "camera_status": "connected" if capture is not None and capture.status == "connected" else "disconnected",
            "model_loaded": detector is not None,
            "uptime": round(time.monotonic() - self._started_at) if self._started_at and running else 0,
            "fps": round(self.pipeline_fps(), 1),
            "detection_count": self.recorder.events_created - self._events_at_start,
            "model_id": detector.model_id if detector else None,
            "backend": detector.backend if detector else None,
            "dropped_frames": cap_stats.get("frames_dropped", 0),
            "frames_capped": cap_stats.get("frames_capped", 0),
            "inferences": self.inferences,
            "gated_skips": self.gated_skips,
            "last_inference_ms": round(self.last_inference_ms, 1),
            "frame_age_ms": round(self.frame_age_ms, 1),
            "source": cap_stats.get("source") or (self.camera.source or None),
            "source_fps": cap_stats.get("source_fps", 0.0),
            "frames_read": cap_stats.get("frames_read", 0),
            "reconnects": cap_stats.get("reconnects", 0),
            "camera_error": cap_stats.get("last_error") if capture else "no camera source configured",
            "motion_mode": self.config.motion_mode,
            "error": self.last_error,
            "recorder": self.recorder.stats(),
        }

    def tracking(self) -> TrackingSnapshot:
        """The objects the tracker holds now. Thread-safe: the pipeline thread publishes a new
        immutable list after each detector run; this reads the latest one. Empty while stopped."""
        objects, updated_at = self._tracked
        running = self.running
        if not running:
            objects, updated_at = [], None
        capture = self._capture
        return TrackingSnapshot(
            running=running,
            source=capture.source.name if capture is not None else (self.camera.source or None),
            updated_at=updated_at,
            count=len(objects),
            objects=list(objects),
        )

    def pipeline_fps(self) -> float:
        times = self._frame_times
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else 0.0

    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the last handled frame; None before the first."""
        view = self._view
        return (view.frame.width, view.frame.height) if view is not None else None

    def latest_jpeg(self, quality: int = 80) -> tuple[int, bytes | None]:
        """(version, annotated JPEG of the latest frame); encoded on demand, shared by viewers."""
        with self._view_cond:
            view, version = self._view, self._view_version
            cached = self._jpeg_cache
        if view is None:
            return version, None
        if cached is not None and cached[0] == version:
            return cached
        jpeg = _encode_view(view, quality)
        with self._view_cond:
            self._jpeg_cache = (version, jpeg)
        return version, jpeg

    def wait_jpeg(self, after_version: int, timeout: float = 2.0, quality: int = 80) -> tuple[int, bytes | None]:
        """Block until a frame newer than ``after_version`` exists (MJPEG loop), then latest_jpeg."""
        with self._view_cond:
            self._view_cond.wait_for(lambda: self._view_version > after_version, timeout)
        return self.latest_jpeg(quality)

    # -- internals ------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self.inferences = 0
        self.gated_skips = 0
        self.last_inference_ms = 0.0
        self.frame_age_ms = 0.0
        self.last_error: str | None = None
        self._consecutive_errors = 0
        self._crashed = False
        self._started_at: float | None = None
        self._events_at_start = self.recorder.events_created
        self._frame_times: deque[float] = deque(maxlen=60)
        self._boxes: list[tuple[tuple[float, float, float, float], str, str]] = []
        self._boxes_at = 0.0
        self._tracked: tuple[list[TrackedObject], datetime | None] = ([], None)

    def _make_gate(self) -> MotionGate:
        cfg = self.config
        detector = MotionDetector(
            width=cfg.motion_width, threshold=cfg.motion_threshold, min_area_ratio=cfg.motion_min_area
        )
        return MotionGate(cfg.motion_mode, cfg.full_check_interval_s, cfg.refresh_interval_s, detector)

    def _default_source(self, camera: CameraSettings) -> FrameSource | None:
        if camera.source.strip().lower() in PUSH_SOURCE_NAMES:
            return self.push_source
        return open_source(camera.source, resolution=camera.resolution, fps=camera.fps)

    def _open_capture(self) -> Capture | None:
        source = self._source_factory(self.camera)
        if source is None:
            return None
        capture = Capture(
            source,
            stall_timeout_s=self.config.stall_timeout_s,
            backoff_max_s=self.config.backoff_max_s,
            fallback_fps=float(self.camera.fps),
            **_capture_limits(self.camera),
            on_state=self.on_camera_state,
        )
        capture.start()
        return capture

    def restart_capture(self) -> bool:
        """Re-open the camera source only: the detector, tracker, open events and writer carry on.
        False (nothing done) while the pipeline is stopped."""
        return self._swap_capture()

    def _swap_capture(self) -> bool:
        with self._lock:
            if not self.running:
                return False
            old, self._capture = self._capture, self._open_capture()
        if old is not None:
            old.stop()
        log.info("capture re-opened (source %s)", self._capture.source.name if self._capture else "none")
        return True

    def _run(self, stop: threading.Event) -> None:
        if self.batcher is not None:
            self.batcher.register(self.camera_id)
        self.recorder.resume()
        last_seq = 0
        capture: Capture | None = None
        try:
            while not stop.is_set():
                if self._capture is not capture:
                    capture, last_seq = self._capture, 0
                if capture is None:
                    stop.wait(0.2)
                    continue
                frame = capture.read(last_seq, timeout=0.5)
                if frame is None:
                    continue
                metrics.observe_frame(frame.seq - last_seq - 1 if last_seq else 0)
                last_seq = frame.seq
                try:
                    self._process(frame)
                    self._consecutive_errors = 0
                except Exception as exc:
                    self._consecutive_errors += 1
                    message = f"{type(exc).__name__}: {exc}"
                    if message != self.last_error:
                        log.exception("pipeline frame failed")
                    self.last_error = message
                    if self._consecutive_errors >= ERROR_AFTER:
                        stop.wait(1.0)  # e.g. a broken model: do not spin; a new deploy heals it
        except BaseException:
            self._crashed = True
            log.exception("detection pipeline crashed")
            raise
        finally:
            if self.batcher is not None:
                self.batcher.unregister(self.camera_id)
            self.recorder.suspend()
            self._tracked = ([], None)

    def _process(self, frame: Frame) -> None:
        camera, detection, cfg = self.camera, self.detection, self.config
        if camera.brightness or camera.contrast:
            image = cv2.convertScaleAbs(frame.image, alpha=1 + camera.contrast / 100, beta=camera.brightness * 1.28)
            frame = replace(frame, image=image)
        now = time.monotonic()
        detector = self.holder.get()
        tracker = self._tracker
        assert tracker is not None
        seen = None
        info = None
        decision_text = "no model"
        if detector is not None:
            decision = self._gate.decide(frame.image, now, self.recorder.watching or tracker.has_candidates)
            decision_text = decision.reason
            if decision.run:
                started = time.perf_counter()
                threshold = detection.confidence_threshold
                floor = min_confidence(threshold, cfg.sensitivity)
                try:
                    if self.batcher is not None:
                        raw = self.batcher.detect(self.camera_id, detector, frame.image, floor)
                    else:
                        raw = detector.detect(frame.image, conf=floor)
                except Superseded:
                    return  # a newer frame of this camera is being detected instead
                except DetectorError:
                    if self.holder.get() is detector:
                        raise
                    return  # swapped for a new model mid-frame: skip this frame, not an error
                detections = classify_detections(raw, threshold, cfg.sensitivity)
                tracker.set_thresholds(floor)
                seen = tracker.update(detections, now, frame.wall_time)
                processing_ms = (time.perf_counter() - started) * 1000
                self.inferences += 1
                self.last_inference_ms = detector.last_inference_ms
                self.frame_age_ms = (time.monotonic() - frame.captured_at) * 1000
                metrics.observe_inference(self.last_inference_ms / 1000, self.frame_age_ms / 1000)
                info = FrameInfo(detector.model_id, self.pipeline_fps(), processing_ms)
                self._boxes = [
                    (det.xyxy, f"{det.object_type} #{track.track_id} {det.confidence:.2f}", det.object_type or "")
                    for track, det in seen
                ]
                self._boxes_at = now
            else:
                self.gated_skips += 1
        self.recorder.on_frame(frame, now, seen, info)
        if seen is not None:
            self._tracked = (self._track_list(tracker, seen, frame), _utc(frame.wall_time))
        self._frame_times.append(now)
        if now - self._boxes_at > 2.0:
            self._boxes = []
        model = f"{detector.backend} {self.last_inference_ms:.0f} ms" if detector else "no model"
        text = f"{self.pipeline_fps():.1f} fps | {model} | {decision_text}"
        with self._view_cond:
            self._view = _View(frame, list(self._boxes), text)
            self._view_version += 1
            self._view_cond.notify_all()

    def _track_list(self, tracker: ObjectTracker, seen: list[tuple[Track, Any]], frame: Frame) -> list[TrackedObject]:
        """What ``tracking()`` serves, built on the pipeline thread right after the recorder ran."""
        matched = {track.track_id for track, _ in seen}
        objects = []
        for track in tracker.tracks.values():
            handle = self.recorder.event_of(track.track_id)
            x1, y1, x2, y2 = (round(float(v), 1) for v in track.last_bbox)
            objects.append(
                TrackedObject(
                    track_id=track.track_id,
                    object_type=track.object_type,
                    votes=dict(track.votes),
                    confidence=round(track.type_confidence, 4),
                    last_confidence=round(track.last_confidence, 4),
                    bbox=TrackBox(x1=x1, y1=y1, x2=x2, y2=y2),
                    frame_width=frame.width,
                    frame_height=frame.height,
                    first_seen=_utc(track.first_wall),
                    last_seen=_utc(track.last_wall),
                    hits=track.hits,
                    lost=track.track_id not in matched,
                    confirmed=handle is not None,
                    event_id=handle.event_id if handle is not None else None,
                )
            )
        objects.sort(key=lambda o: o.track_id)
        return objects


def _utc(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def _capture_limits(camera: CameraSettings) -> dict[str, Any]:
    """The camera settings the capture applies in software, for every source kind."""
    return {"max_fps": float(camera.fps), "max_size": parse_resolution(camera.resolution)}


def _encode_view(view: _View, quality: int) -> bytes:
    image = view.frame.image.copy()
    scale = max(0.4, image.shape[1] / 1280)
    thickness = max(1, round(2 * scale))
    for (x1, y1, x2, y2), label, object_type in view.boxes:
        colour = _COLOURS.get(object_type, (255, 255, 255))
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(image, p1, p2, colour, thickness)
        _label(image, label, (p1[0], max(p1[1], 14)), colour, scale)
    _label(image, view.text, (4, 4 + round(18 * scale)), (40, 40, 40), scale)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else b""


def _label(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale
    (w, h), base = cv2.getTextSize(text, font, size, 1)
    x, y = origin
    cv2.rectangle(image, (x, y - h - base), (x + w + 2, y + 2), colour, -1)
    cv2.putText(image, text, (x + 1, y - base + 1), font, size, (255, 255, 255), 1, cv2.LINE_AA)
