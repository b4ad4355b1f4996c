"""The realtime pipeline inside the service: wiring, control, live config, model loading, viewers.

One ``PipelineService`` per app (``app.state.pipeline_service``; its ``pipeline``, ``bus`` and
``holder`` are also put on ``app.state`` as ``pipeline``, ``bus`` and ``detector_holder``). It

- builds the EventBus, DetectorHolder and DetectionPipeline from the stored camera/detection
  settings and the stored pipeline knobs (``system_settings`` category ``pipeline``),
- makes ``ModelService.deploy_hook`` load models into the holder and, on a background thread,
  loads the model marked current at start and every ``SYNC_INTERVAL_S`` (Dagster deploys from
  another process),
- starts the pipeline when a camera source is configured, or plays the demo video when none is
  (``Settings.demo_video``, ``AIDOOR_DEMO_VIDEO``; docs/pipeline.md "Service wiring"),
- serves start/stop/restart, ``PUT /api/detection/config``, the MJPEG viewers (one encoder
  thread however many viewers) and the WebSocket ingest bookkeeping.

Nothing here blocks the app's start-up: model loading and building the demo video happen on
background threads; the service answers at once with ``model_loaded: false``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service import demo_video
from detection_service.config import Settings
from detection_service.ml.training import min_confidence
from detection_service.notifications.queue import enqueue_alerts
from detection_service.pipeline.bus import EventBus, EventCreated
from detection_service.pipeline.detector import Detection, DetectorError, DetectorHolder, classify_detections
from detection_service.pipeline.events import RecorderConfig, bbox_json, image_key
from detection_service.pipeline.runner import DetectionPipeline, PipelineConfig
from detection_service.pipeline.sources import PUSH_SOURCE_NAMES
from detection_service.errors import Conflict, Failed, Invalid, Unavailable, Unprocessable
from detection_service.services.models import ModelService
from detection_service.services.settings import InvalidSettings, SettingsService
from detection_service.storage import ObjectStore
from schemas.db import DetectionEvent, EventImage, ObjectType
from schemas.detection import (
    DETECTION_SETTING_KEYS,
    DETECTOR_KEYS,
    PIPELINE_CONFIG_KEYS,
    PIPELINE_SETTINGS_CATEGORY,
    RECORDER_CONFIG_KEYS,
    BBox,
    DetectedObject,
    DetectionConfig,
    DetectionStatus,
    IngestStatus,
    ManualDetection,
    PipelineKnobs,
    StreamStatus,
)
from schemas.settings import CameraSettings, DetectionSettings

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 5.0  # how often the model marked current in the database is checked
LOAD_RETRY_S = 60.0  # a model that failed to load is not retried sooner (exports are expensive)
SHUTDOWN_DRAIN_S = 3.0


# --------------------------------------------------------------------------- viewers


class Viewer:
    """One MJPEG client: a one-slot queue on its event loop (a slow client skips frames)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self.sent = 0

    def offer(self, jpeg: bytes) -> None:  # runs on self.loop
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(jpeg)


class FrameBroadcaster:
    """One thread waits for new annotated frames (``pipeline.wait_jpeg``) while anyone watches
    and hands each JPEG to every viewer: encoding happens once per frame, and no viewer holds a
    thread of the event loop's executor."""

    def __init__(self, pipeline: DetectionPipeline) -> None:
        self.pipeline = pipeline
        self.frames_sent = 0
        self._viewers: set[Viewer] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def subscribe(self) -> Viewer:
        viewer = Viewer(asyncio.get_running_loop())
        _, jpeg = self.pipeline.latest_jpeg()
        if jpeg:
            viewer.offer(jpeg)  # the last frame at once, even while the pipeline is stopped
        with self._lock:
            self._viewers.add(viewer)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="mjpeg-broadcast", daemon=True)
                self._thread.start()
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        with self._lock:
            self._viewers.discard(viewer)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _run(self) -> None:
        version, _ = self.pipeline.latest_jpeg()
        while True:
            with self._lock:
                if not self._viewers or self._closed:
                    self._thread = None
                    return
                viewers = list(self._viewers)
            new_version, jpeg = self.pipeline.wait_jpeg(version, timeout=1.0)
            if jpeg is None or new_version == version:
                continue
            version = new_version
            for viewer in viewers:
                try:
                    viewer.loop.call_soon_threadsafe(viewer.offer, jpeg)
                except RuntimeError:  # its event loop is gone
                    self.unsubscribe(viewer)


# --------------------------------------------------------------------------- ingest


@dataclass
class IngestState:
    """The one WebSocket camera client allowed at a time (two would interleave frames)."""

    client: str | None = None
    connected: bool = False
    frames_received: int = 0
    frames_invalid: int = 0
    bytes_received: int = 0
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def claim(self, client: str) -> bool:
        with self._lock:
            if self.connected:
                return False
            self.connected, self.client = True, client
            self.connections += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.connected = False

    def snapshot(self) -> IngestStatus:
        return IngestStatus(connected=self.connected, client=self.client, frames_received=self.frames_received,
                            frames_invalid=self.frames_invalid, bytes_received=self.bytes_received,
                            connections=self.connections)  # fmt: skip


def looks_like_image(data: bytes) -> bool:
    """Cheap check before a pushed frame is queued (decoding happens later, only if used)."""
    return data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the service


class PipelineService:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        settings_service: SettingsService,
        model_service: ModelService,
        demo_policy: str | None = None,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.store = store
        self.settings_service = settings_service
        self.model_service = model_service
        self.sync_interval_s = sync_interval_s
        self.demo_policy = settings.demo_video if demo_policy is None else demo_policy
        self.demo_path: Path | None = self._existing_demo()
        self.knobs = self._load_knobs()
        self._knobs_in_flight: PipelineKnobs | None = None
        self.bus = EventBus()
        self.holder = DetectorHolder()
        self._settings_stale = False
        try:
            camera: CameraSettings = settings_service.get("camera")  # type: ignore[assignment]
            detection: DetectionSettings = settings_service.get("detection")  # type: ignore[assignment]
        except Exception as exc:
            # Database down at start-up: come up anyway; the sync thread re-reads them later.
            log.error("could not read camera/detection settings (%s); using defaults until the database answers", exc)
            camera, detection, self._settings_stale = CameraSettings(), DetectionSettings(), True
        self.camera = camera  # as stored; the pipeline gets the effective one (demo substituted)
        self.pipeline = DetectionPipeline(
            session_factory=session_factory,
            store=store,
            bus=self.bus,
            holder=self.holder,
            camera=self._effective(camera),
            detection=detection,
            config=PipelineConfig(**{k: getattr(self.knobs, k) for k in PIPELINE_CONFIG_KEYS}),
            recorder_config=RecorderConfig(**{k: getattr(self.knobs, k) for k in RECORDER_CONFIG_KEYS}),
        )
        self.broadcaster = FrameBroadcaster(self.pipeline)
        self.ingest = IngestState()
        self.user_stopped = False  # an explicit stop: settings changes must not start it again
        self.model_state = "none"
        self.model_error: str | None = None
        self._loaded: tuple[str, Path] | None = None  # (model_id, weights) in the holder
        self._control_lock = threading.RLock()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        settings_service.subscribe(self._on_settings)
        model_service.deploy_hook = self.load_model

    # -- lifecycle ------------------------------------------------------------------------

    def start_background(self) -> None:
        """Called once from the app's lifespan: model sync, demo video, pipeline start."""
        self._spawn("model-sync", self._sync_loop)
        if self._wants_demo_build():
            self._spawn("demo-video", self._build_demo)
        if self.pipeline.camera.source.strip():
            self.pipeline.start()

    def close(self) -> None:
        """App shutdown: stop the pipeline, drain its writes for a few seconds."""
        self._closing.set()
        self.broadcaster.close()
        with self._control_lock:
            left = self.pipeline.close(SHUTDOWN_DRAIN_S)
        if left:
            log.warning("pipeline closed with %d writes undone", left)
        for thread in self._threads:
            thread.join(0.5)  # daemon threads: a model export in progress is not waited for

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- camera source and the demo video ------------------------------------------------

    def _existing_demo(self) -> Path | None:
        policy = self.demo_policy.lower()
        if policy in ("off", "0", "false", "no", "none"):
            return None
        if policy in ("", "auto", "on", "1", "true", "yes"):
            path = demo_video.default_path(self.settings.data_dir)
        else:
            path = Path(self.demo_policy).expanduser()
        return path if path.is_file() else None

    def _wants_demo_build(self) -> bool:
        return (self.demo_path is None and not self.camera.source.strip()
                and self.demo_policy.lower() in ("auto", "on", "1", "true", "yes"))  # fmt: skip

    def _build_demo(self) -> None:
        try:
            path = demo_video.ensure(self.settings.data_dir)
        except Exception:
            log.exception("building the demo video failed")
            return
        if path is None or self._closing.is_set():
            return
        with self._control_lock:
            self.demo_path = path
            if not self.camera.source.strip():
                log.info("no camera source configured: playing the demo video %s", path)
                self.pipeline.apply_settings("camera", self._effective(self.camera))
                if not self.user_stopped and not self.pipeline.running:
                    self.pipeline.start()

    def _effective(self, camera: CameraSettings) -> CameraSettings:
        if not camera.source.strip() and self.demo_path is not None:
            return msgspec.structs.replace(camera, source=str(self.demo_path))
        return camera

    @property
    def demo_active(self) -> bool:
        return self.demo_path is not None and not self.camera.source.strip()

    @property
    def push_mode(self) -> bool:
        return self.camera.source.strip().lower() in PUSH_SOURCE_NAMES

    def _on_settings(self, category: str, value: msgspec.Struct) -> None:
        if category == "camera" and isinstance(value, CameraSettings):
            with self._control_lock:
                self.camera = value
                effective = self._effective(value)
                self.pipeline.apply_settings("camera", effective)
                # A source configured while nothing runs (e.g. first set-up): start, unless a
                # user stopped the pipeline on purpose.
                if effective.source.strip() and not self.pipeline.running and not self.user_stopped:
                    self.pipeline.start()
        elif category == PIPELINE_SETTINGS_CATEGORY:
            self._on_pipeline_settings(value)
        else:
            self.pipeline.apply_settings(category, value)

    # -- control --------------------------------------------------------------------------

    def control(self, action: str) -> dict[str, Any]:
        """start / stop / restart (blocking up to a few seconds: call off the event loop)."""
        with self._control_lock:
            if action in ("start", "restart") and not self.pipeline.camera.source.strip():
                raise Conflict(
                    "no camera source is configured: set one with PUT /api/settings/camera "
                    '{"source": "rtsp://... | /path/video.mp4 | 0 | push"} (or build the demo video: aidoor demo-video)', code="NO_CAMERA_SOURCE")  # fmt: skip
            try:
                if action == "start":
                    self.user_stopped = False
                    self.pipeline.start()
                elif action == "stop":
                    self.user_stopped = True
                    if not self.pipeline.stop():
                        log.warning("pipeline stop: a source read is still finishing")
                elif action == "restart":
                    self.user_stopped = False
                    self.pipeline.restart()
                else:
                    raise Invalid(f"unknown action {action!r}", {"allowed": ["start", "stop", "restart"]}, code="INVALID_ACTION")  # fmt: skip
            except RuntimeError as exc:  # the previous thread is still inside a blocking read
                raise Conflict(str(exc), code="BUSY") from None
        return self.pipeline.status()

    # -- models ---------------------------------------------------------------------------

    def load_model(self, model_id: str, weights: Path) -> None:
        """ModelService.deploy_hook: build the detector (export cached) and swap it in."""
        self.model_state = "loading" if self.holder.get() is None else self.model_state
        try:
            self.holder.load(Path(weights), self.knobs.backend, self.knobs.imgsz, model_id=model_id)
        except Exception as exc:
            self.model_error = f"{model_id}: {exc}"
            self.model_state = "loaded" if self.holder.get() is not None else "error"
            raise Unprocessable(f"model {model_id} could not be loaded: {exc}", code="MODEL_LOAD_FAILED") from exc
        self._loaded = (model_id, Path(weights))
        self.model_state, self.model_error = "loaded", None

    def _sync_loop(self) -> None:
        failed: dict[str, float] = {}
        last_error: str | None = None
        while not self._closing.is_set():
            try:
                if self._settings_stale:
                    for category in ("detection", "camera"):
                        self._on_settings(category, self.settings_service.get(category))
                    self._settings_stale = False
                current = self.model_service.current()
                if current is not None and current.model_id != self.model_service.loaded_model_id:
                    if time.monotonic() >= failed.get(current.model_id, 0.0):
                        try:
                            self.model_service.sync_with_database()
                        except Exception as exc:
                            failed[current.model_id] = time.monotonic() + LOAD_RETRY_S
                            log.warning("could not load model %s (retry in %.0f s): %s",
                                        current.model_id, LOAD_RETRY_S, exc)  # fmt: skip
                last_error = None
            except Exception as exc:  # database or store unreachable: keep trying quietly
                if str(exc) != last_error:
                    log.warning("model sync failed: %s", exc)
                last_error = str(exc)
            self._closing.wait(self.sync_interval_s)

    # -- live configuration ---------------------------------------------------------------

    def _load_knobs(self) -> PipelineKnobs:
        try:
            return self.settings_service.get(PIPELINE_SETTINGS_CATEGORY)  # type: ignore[return-value]
        except Exception as exc:  # database unreachable at start-up: run on defaults
            log.error("could not read the pipeline knobs (%s); using defaults", exc)
            return PipelineKnobs()

    def _on_pipeline_settings(self, value: msgspec.Struct) -> None:
        """Knobs changed through ``PUT /api/settings/pipeline`` apply live too."""
        if value == self._knobs_in_flight:
            return  # configure() below applies its own change
        assert isinstance(value, PipelineKnobs)
        with self._control_lock:
            old, self.knobs = self.knobs, value
            if self._loaded is not None and any(getattr(value, k) != getattr(old, k) for k in DETECTOR_KEYS):
                model_id, weights = self._loaded
                try:
                    self.holder.load(weights, value.backend, value.imgsz, model_id=model_id)
                except Exception as exc:
                    log.error("pipeline settings: %s cannot run with backend=%s imgsz=%s: %s",
                              model_id, value.backend, value.imgsz, exc)
            self._apply_knobs(value)

    def config(self) -> DetectionConfig:
        return DetectionConfig(
            detection=msgspec.to_builtins(self.pipeline.detection),
            pipeline=self.knobs,
            demo_video=str(self.demo_path) if self.demo_active else None,
        )

    def configure(self, changes: Any) -> DetectionConfig:
        """``PUT /api/detection/config``: validate every key first (all problems listed, nothing
        applied on any), then swap the detector if backend/imgsz changed, then store and apply."""
        if not isinstance(changes, dict) or not changes:
            raise Invalid("the body must be a non-empty JSON object", [], code="INVALID_CONFIG")
        knob_fields = set(PipelineKnobs.__struct_fields__)
        problems: list[dict[str, Any]] = [
            {"key": key, "message": "unknown key"}
            for key in sorted(set(changes) - knob_fields - set(DETECTION_SETTING_KEYS), key=str)
        ]
        detection_changes = {k: v for k, v in changes.items() if k in DETECTION_SETTING_KEYS}
        knob_changes = {k: v for k, v in changes.items() if k in knob_fields}
        current_detection = msgspec.to_builtins(self.settings_service.get("detection"))
        current_knobs = msgspec.to_builtins(self.knobs)
        for key, value in detection_changes.items():
            problems += _problem(key, {**current_detection, key: value}, DetectionSettings)
        for key, value in knob_changes.items():
            problems += _problem(key, {**current_knobs, key: value}, PipelineKnobs)
        if problems:
            keys = ", ".join(str(p["key"]) for p in problems)
            raise Invalid(f"invalid detection config ({keys}); nothing was changed", problems, code="INVALID_CONFIG")
        new_knobs = msgspec.convert({**current_knobs, **knob_changes}, PipelineKnobs)
        with self._control_lock:
            old = self.knobs
            detector_changed = any(getattr(new_knobs, k) != getattr(old, k) for k in DETECTOR_KEYS)
            if detector_changed and self._loaded is not None:
                model_id, weights = self._loaded
                try:
                    self.holder.load(weights, new_knobs.backend, new_knobs.imgsz, model_id=model_id)
                except Exception as exc:
                    raise Unprocessable(
                        f"{model_id} cannot run with backend={new_knobs.backend} imgsz={new_knobs.imgsz}: {exc}; "
                        "nothing was changed", {"backend": new_knobs.backend, "imgsz": new_knobs.imgsz}, code="BACKEND_UNAVAILABLE") from None  # fmt: skip
            if detection_changes:
                try:
                    self.settings_service.update("detection", detection_changes)  # stores + notifies the pipeline
                except InvalidSettings as exc:  # raced with another change
                    raise Invalid(str(exc), exc.details, code="INVALID_CONFIG") from None
            if knob_changes:
                self._knobs_in_flight = new_knobs
                try:
                    self.settings_service.update(PIPELINE_SETTINGS_CATEGORY, knob_changes)
                except InvalidSettings as exc:  # raced with another change
                    raise Invalid(str(exc), exc.details, code="INVALID_CONFIG") from None
                finally:
                    self._knobs_in_flight = None
            self.knobs = new_knobs
            self._apply_knobs(new_knobs)
        return self.config()

    def _apply_knobs(self, knobs: PipelineKnobs) -> None:
        self.pipeline.configure(**{k: getattr(knobs, k) for k in PIPELINE_CONFIG_KEYS})
        recorder_config = self.pipeline.recorder.config  # shared with its writer: change in place
        for key in RECORDER_CONFIG_KEYS:
            setattr(recorder_config, key, getattr(knobs, key))

    # -- status ---------------------------------------------------------------------------

    def status(self, notification_ready: bool = False) -> DetectionStatus:
        raw = self.pipeline.status()
        detector = self.holder.get()
        state = self.model_state
        if detector is not None:
            state = "loaded"
        elif state == "loaded":
            state = "none"
        values = {
            **raw,
            "notification_ready": notification_ready,
            "imgsz": detector.imgsz if detector else None,
            "model_state": state,
            "model_error": self.model_error or self.holder.load_error,
            "demo": self.demo_active,
            "bus": self.bus.stats(),
        }
        return msgspec.convert(values, DetectionStatus)

    def stream_status(self) -> StreamStatus:
        raw = self.pipeline.status()
        view_size = self.frame_size()
        return StreamStatus(
            status=raw["status"],
            camera_status=raw["camera_status"],
            source=raw["source"],
            demo=self.demo_active,
            source_fps=raw["source_fps"],
            pipeline_fps=raw["fps"],
            frames_read=raw["frames_read"],
            dropped_frames=raw["dropped_frames"],
            reconnects=raw["reconnects"],
            camera_error=raw["camera_error"],
            frame_width=view_size[0] if view_size else None,
            frame_height=view_size[1] if view_size else None,
            viewers=self.broadcaster.viewers,
            frames_sent=self.broadcaster.frames_sent,
            ingest=self.ingest.snapshot(),
        )

    def frame_size(self) -> tuple[int, int] | None:
        view = self.pipeline._view  # the last handled frame (read-only use)
        return (view.frame.width, view.frame.height) if view is not None else None

    # -- manual detection -----------------------------------------------------------------

    def detect_image(self, image: np.ndarray, record: bool = False) -> ManualDetection:
        """``POST /api/detections``: the deployed model on one image; optionally one event."""
        detector = self.holder.get()
        if detector is None:
            reason = self.model_error or self.holder.load_error
            if self.model_state == "loading":
                raise Unavailable("the model is being loaded; try again in a few seconds", code="MODEL_LOADING")
            raise Unavailable(
                "no model is deployed: train and deploy one (POST /api/models/train, then "
                "POST /api/models/{id}/deploy) or run `aidoor bootstrap-model`"
                + (f"; last load error: {reason}" if reason else ""), code="NO_MODEL")  # fmt: skip
        detection: DetectionSettings = self.pipeline.detection
        threshold = detection.confidence_threshold
        sensitivity = self.knobs.sensitivity
        floor = min_confidence(threshold, sensitivity)
        try:
            raw = detector.detect(image, conf=floor)
        except DetectorError:
            detector = self.holder.get()  # swapped for a new model during the call: use that one
            if detector is None:
                raise Unavailable("the model was unloaded", code="NO_MODEL") from None
            raw = detector.detect(image, conf=floor)
        found = classify_detections(raw, threshold, sensitivity)
        height, width = image.shape[:2]
        result = ManualDetection(
            detections=[_detected(d) for d in found],
            count=len(found),
            width=width,
            height=height,
            model_id=detector.model_id,
            backend=detector.backend,
            imgsz=detector.imgsz,
            inference_ms=round(detector.last_inference_ms, 2),
            confidence_threshold=threshold,
            min_confidence=floor,
        )
        if record and found:
            result.event_id, result.image_key = self._record(image, found, detector.model_id,
                                                             detector.last_inference_ms, detection)  # fmt: skip
        return result

    def _record(
        self, image: np.ndarray, found: list[Detection], model_id: str, inference_ms: float, detection: DetectionSettings
    ) -> tuple[int, str]:
        """One closed event for an uploaded image: its best detection, the image as capture 1.
        The object is stored inside the row's transaction, so a failed upload leaves no row."""
        best = max(found, key=lambda d: (d.object_type != "unclassified", d.confidence))
        height, width = image.shape[:2]
        box = bbox_json(best.xyxy, width, height)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, detection.jpeg_quality])
        if not ok:
            raise Failed("could not encode the image as JPEG", code="ENCODE_FAILED")
        jpeg = buf.tobytes()
        now = datetime.now(UTC)
        with self.session_factory.begin() as session:
            type_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == best.object_type))
            row = DetectionEvent(
                object_type_id=type_id,
                confidence_score=round(best.confidence, 4),
                bbox_coordinates=json.dumps(box, separators=(",", ":")),
                model_version=model_id,
                processing_time=round(inference_ms),
                detected_at=now,
                # A single upload is over at once; an open package would count as "present".
                ended_at=now,
                tracking_duration=0,
                created_by="api",
            )
            session.add(row)
            session.flush()
            event_id = row.id
            key = image_key(event_id, now, 1)
            self.store.put_bytes(key, jpeg, "image/jpeg")
            row.image_path = key
            session.add(EventImage(event_id=event_id, image_path=key, sequence_number=1,
                                   compression_quality=detection.jpeg_quality, captured_at=now))  # fmt: skip
            enqueue_alerts(session, event_id)  # pending Telegram alerts commit with the event
        self.bus.publish(
            EventCreated(event_id=event_id, object_type=best.object_type or "unclassified",
                         confidence=round(best.confidence, 4), bbox=box, tracking_id=0, model_version=model_id,
                         detected_at=now, image_key=key, snapshot_jpeg=jpeg)  # fmt: skip
        )
        return event_id, key


def _problem(key: str, candidate: dict[str, Any], struct_type: type[msgspec.Struct]) -> list[dict[str, Any]]:
    try:
        msgspec.convert(candidate, struct_type)
    except msgspec.ValidationError as exc:
        return [{"key": key, "message": str(exc).split(" - at ")[0], "value": candidate[key]}]
    return []


def _detected(d: Detection) -> DetectedObject:
    return DetectedObject(
        bbox=BBox(x1=round(d.x1), y1=round(d.y1), x2=round(d.x2), y2=round(d.y2)),
        class_name=d.class_name,
        class_id=d.class_id,
        confidence=round(d.confidence, 4),
        type=d.object_type or "unclassified",
    )
