"""The realtime pipeline inside the service: assembly, start/stop, camera source, status.

One ``PipelineService`` per app (``app.state.pipeline_service``; its ``pipeline``, ``bus``,
``holder`` and ``manual`` are also put on ``app.state`` as ``pipeline``, ``bus``,
``detector_holder`` and ``manual_detection``). It builds the DetectionPipeline from the stored
camera/detection settings and pipeline_settings, and composes the parts that each have one job:

- ``DemoSource`` (realtime/demo_source.py): the demo video played while no camera source is set,
- ``ModelLoader`` (realtime/model_loader.py): the detector in the holder (deploys, the model
  marked current in the database, checked every ``SYNC_INTERVAL_S``),
- ``LiveConfig`` (realtime/live_config.py): the pipeline_settings, ``PUT /api/detection/config``,
- ``ManualDetector`` (realtime/manual_detection.py): ``POST /api/detections``,
- ``FrameBroadcaster`` (realtime/viewers.py) and ``IngestState`` (realtime/ingest.py): the MJPEG
  viewers and the WebSocket ingest.

What stays here: start/stop/restart, following camera settings, the background threads and the
status answers. Everything goes through the pipeline's public methods. Nothing here blocks the
app's start-up: model loading and building the demo video happen on background threads; the
service answers at once with ``model_loaded: false``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus
from detection_service.config import Settings
from detection_service.errors import Conflict, Invalid
from detection_service.notifications.queue import QueueConfig
from detection_service.pipeline.batching import BatchingDetector
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from detection_service.pipeline.sources import PUSH_SOURCE_NAMES
from detection_service.realtime.cameras import CameraRuntime, CameraRuntimes
from detection_service.realtime.demo_source import DemoSource
from detection_service.realtime.ingest import IngestState
from detection_service.realtime.live_config import LiveConfig, load_pipeline_settings
from detection_service.realtime.manual_detection import ManualDetector
from detection_service.realtime.model_loader import ModelLoader
from detection_service.realtime.viewers import FrameBroadcaster
from detection_service.services.cameras import CameraRecord, CameraService
from detection_service.services.models import ModelService
from detection_service.services.settings import SettingsService
from detection_service.storage import ObjectStore
from schemas.db import DEFAULT_CAMERA_ID
from schemas.detection import (
    PIPELINE_SETTINGS_CATEGORY,
    DetectionConfig,
    DetectionStatus,
    StreamStatus,
    TrackingSnapshot,
)
from schemas.settings import CameraSettings, DetectionSettings

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 5.0  # how often the model marked current in the database is checked
SHUTDOWN_DRAIN_S = 3.0


class PipelineService:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        settings_service: SettingsService,
        model_service: ModelService,
        bus: EventBus | None = None,
        alerts: QueueConfig | None = None,
        demo_policy: str | None = None,
        sync_interval_s: float = SYNC_INTERVAL_S,
        camera_ids: frozenset[int] | None = None,
    ) -> None:
        """``alerts``: the notifier's queue configuration (``Notifier.queue_config``), with which
        the pipeline and manual detection queue the alerts of their events."""
        self.settings = settings
        self.settings_service = settings_service
        self.sync_interval_s = sync_interval_s
        # The cameras this process runs (None: all). A detector worker started with --cameras
        # runs only those (docs/deployment.md); without camera 1 its default pipeline never starts.
        self.camera_ids = camera_ids
        self.runs_default = camera_ids is None or DEFAULT_CAMERA_ID in camera_ids
        self.demo = DemoSource(settings.data_dir, settings.demo_video if demo_policy is None else demo_policy)
        self.bus = bus or EventBus()
        self.holder = DetectorHolder()
        # One detector for every camera: their pipelines' frames meet in one batch (docs/cameras.md).
        self.batcher = BatchingDetector()
        self._control_lock = threading.RLock()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._settings_stale = False
        pipeline_settings = load_pipeline_settings(settings_service)
        try:
            camera: CameraSettings = settings_service.get("camera")  # type: ignore[assignment]
            detection: DetectionSettings = settings_service.get("detection")  # type: ignore[assignment]
        except Exception as exc:
            # Database down at start-up: come up anyway; the sync thread re-reads them later.
            log.error("could not read camera/detection settings (%s); using defaults until the database answers", exc)
            camera, detection, self._settings_stale = CameraSettings(), DetectionSettings(), True
        self.camera = camera  # as stored; the pipeline gets the effective one (demo substituted)
        alerts = alerts or QueueConfig()
        self.pipeline = DetectionPipeline(
            session_factory=session_factory,
            store=store,
            bus=self.bus,
            holder=self.holder,
            camera=self.demo.effective(camera),
            detection=detection,
            config=PipelineConfig(
                journal_dir=str(settings.data_dir / "journal"), journal_max_bytes=settings.journal_max_mb * 1024 * 1024
            ).with_pipeline_settings(pipeline_settings),
            alerts=alerts,
            camera_id=DEFAULT_CAMERA_ID,
            batcher=self.batcher,
        )
        self.camera_service = CameraService(session_factory)
        self.cameras = CameraRuntimes(
            cameras=self.camera_service,
            session_factory=session_factory,
            store=store,
            bus=self.bus,
            holder=self.holder,
            batcher=self.batcher,
            alerts=alerts,
            journal_root=settings.data_dir / "journal",
            base_camera=lambda: self.camera,
            detection=lambda: self.pipeline.detection,
            config=lambda: self.pipeline.config,
            only=camera_ids,
        )
        self.camera_service.subscribe(self._sync_cameras)
        self.models = ModelLoader(self.holder, model_service, lambda: self.live.pipeline_settings)
        self.live = LiveConfig(pipeline_settings, settings_service, self.pipeline, self.models, self._control_lock)
        self.manual = ManualDetector(
            holder=self.holder,
            models=self.models,
            detection=lambda: self.pipeline.detection,
            sensitivity=lambda: self.live.pipeline_settings.sensitivity,
            session_factory=session_factory,
            store=store,
            bus=self.bus,
            alerts=alerts,
        )
        self.broadcaster = FrameBroadcaster(self.pipeline)
        self.ingest = IngestState()
        self.user_stopped = False  # an explicit stop: settings changes must not start it again
        settings_service.subscribe(self._on_settings)

    # -- lifecycle ------------------------------------------------------------------------

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """An async handler's call of this service. Here, at once: the pipeline is in memory.
        ``RemotePipelineService`` runs it on a thread (a live link round trip may wait seconds)."""
        return fn(*args)

    def start_background(self) -> None:
        """Called once from the app's lifespan: model sync, demo video, pipeline start."""
        self._spawn("model-sync", self._sync_loop)
        if self.settings.truth_detector is not None:
            # Benchmarks/tests: the demo video's ground truth instead of a model (no model loads).
            self._spawn("truth-detector", self._load_truth_detector)
        if self.demo.wants_build(self.camera):
            self._spawn("demo-video", self._build_demo)
        if self.runs_default and self.pipeline.camera.source.strip():
            self.pipeline.start()
        self._spawn("cameras", self._sync_cameras)

    def _sync_cameras(self) -> None:
        """The other cameras' pipelines after the cameras table (start, or a cameras API change)."""
        try:
            self.cameras.sync()
        except Exception as exc:  # database down at start: the sync loop tries again
            self.cameras.last_error = str(exc)
            log.warning("cameras could not be read: %s", exc)

    def close(self) -> None:
        """App shutdown: stop the pipeline, drain its writes for a few seconds."""
        self._closing.set()
        self.broadcaster.close()
        with self._control_lock:
            left = self.pipeline.close(SHUTDOWN_DRAIN_S) + self.cameras.close(SHUTDOWN_DRAIN_S)
        self.batcher.close()
        if left:
            log.warning("pipeline closed with %d writes undone", left)
        for thread in self._threads:
            thread.join(0.5)  # daemon threads: a model export in progress is not waited for

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _load_truth_detector(self) -> None:
        from detection_service.pipeline.truth_detector import TruthDetector

        try:
            self.holder.swap(TruthDetector(self.settings.truth_detector))  # type: ignore[arg-type]
        except Exception as exc:
            self.holder.load_error = f"truth detector: {exc}"
            log.error("truth detector could not be built: %s", exc)

    def _sync_loop(self) -> None:
        """Settings a database outage kept from being read at start, and the current model."""
        last_error: str | None = None
        while not self._closing.is_set():
            try:
                if self._settings_stale:
                    for category in ("detection", "camera"):
                        self._on_settings(category, self.settings_service.get(category))
                    self._settings_stale = False
                if self.cameras.last_error is not None:
                    self._sync_cameras()
                if self.settings.truth_detector is None:
                    self.models.sync()
                last_error = None
            except Exception as exc:  # database or store unreachable: keep trying quietly
                if str(exc) != last_error:
                    log.warning("model sync failed: %s", exc)
                last_error = str(exc)
            self._closing.wait(self.sync_interval_s)

    # -- camera source and the demo video ------------------------------------------------

    def _build_demo(self) -> None:
        path = self.demo.build()
        if path is None or self._closing.is_set():
            return
        with self._control_lock:
            self.demo.path = path
            if not self.camera.source.strip():
                log.info("no camera source configured: playing the demo video %s", path)
                self.pipeline.apply_settings("camera", self.demo.effective(self.camera))
                if not self.user_stopped and not self.pipeline.running:
                    self.pipeline.start()

    @property
    def demo_active(self) -> bool:
        return self.demo.active(self.camera)

    @property
    def push_mode(self) -> bool:
        return self.camera.source.strip().lower() in PUSH_SOURCE_NAMES

    def _on_settings(self, category: str, value: msgspec.Struct) -> None:
        if category == "camera" and isinstance(value, CameraSettings):
            with self._control_lock:
                self.camera = value
                effective = self.demo.effective(value)
                self.pipeline.apply_settings("camera", effective)
                # A source configured while nothing runs (e.g. first set-up): start, unless a
                # user stopped the pipeline on purpose.
                if (
                    self.runs_default
                    and effective.source.strip()
                    and not self.pipeline.running
                    and not self.user_stopped
                ):
                    self.pipeline.start()
                self.cameras.apply(category, value)
        elif category == PIPELINE_SETTINGS_CATEGORY:
            self.live.on_stored(value)
            self.cameras.apply_pipeline_settings(value)
        else:
            self.pipeline.apply_settings(category, value)
            self.cameras.apply(category, value)

    # -- control --------------------------------------------------------------------------

    def control(self, action: str) -> dict[str, Any]:
        """start / stop / restart (blocking up to a few seconds: call off the event loop)."""
        with self._control_lock:
            if action in ("start", "restart") and not self.pipeline.camera.source.strip():
                raise Conflict(
                    "no camera source is configured: set one with PUT /api/settings/camera "
                    '{"source": "rtsp://... | /path/video.mp4 | 0 | push"} '
                    "(or build the demo video: aidoor demo-video)",
                    code="NO_CAMERA_SOURCE",
                )
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
                    raise Invalid(
                        f"unknown action {action!r}", {"allowed": ["start", "stop", "restart"]}, code="INVALID_ACTION"
                    )
            except RuntimeError as exc:  # the previous thread is still inside a blocking read
                raise Conflict(str(exc), code="BUSY") from None
        return self.pipeline.status()

    def restart_camera(self) -> dict[str, Any]:
        """``POST /api/system/restart {"service": "camera"}``: re-open the camera source only (the
        detector, tracker, open events and writer carry on). Conflict while the pipeline is stopped."""
        with self._control_lock:
            for runtime in self._other_runtimes():  # the other cameras' captures too (docs/cameras.md)
                runtime.pipeline.restart_capture()
            # A detector worker without camera 1 restarts its own cameras only (docs/deployment.md).
            if self.runs_default and not self.pipeline.restart_capture():
                raise Conflict(
                    "the detection pipeline is stopped, so no camera is being captured: start it with "
                    "POST /api/detection/start (or restart service 'detection')",
                    code="PIPELINE_STOPPED",
                )
        return self.pipeline.status()

    def restart_detection(self, *, reload_settings: bool = False) -> dict[str, Any]:
        """``POST /api/system/restart {"service": "detection"}``: a fresh detector for the loaded
        model, then the pipeline restarted (new tracker and motion gate; the recorder ends what
        was open except packages, which are re-adopted, so no event is duplicated). With
        ``reload_settings`` the camera, detection and pipeline settings are read again first
        (``all``). Without a camera source the pipeline stays stopped (``status`` says so)."""
        with self._control_lock:
            if reload_settings:
                try:
                    for category in ("detection", PIPELINE_SETTINGS_CATEGORY, "camera"):
                        self._on_settings(category, self.settings_service.get(category))
                except Exception as exc:  # database down: restart with the settings in hand
                    log.warning("restart: settings could not be read again (%s); keeping the current ones", exc)
            pipeline_settings = self.live.pipeline_settings
            try:
                self.models.reload(pipeline_settings.backend, pipeline_settings.imgsz)
            except Exception as exc:  # the old detector keeps serving
                log.error("restart: the detector could not be rebuilt, the old one keeps serving: %s", exc)
            for runtime in self._other_runtimes():
                if runtime.pipeline.running:
                    runtime.pipeline.restart()
            if self.runs_default and self.pipeline.camera.source.strip():
                self.control("restart")
        return self.pipeline.status()

    def tracking(self) -> TrackingSnapshot:
        """``GET /api/analytics/tracking``: what the live tracker holds (empty while stopped)."""
        return self.pipeline.tracking()

    # -- configuration --------------------------------------------------------------------

    def config(self) -> DetectionConfig:
        return DetectionConfig(
            detection=msgspec.to_builtins(self.pipeline.detection),
            pipeline=self.live.pipeline_settings,
            demo_video=str(self.demo.path) if self.demo_active else None,
        )

    def configure(self, changes: Any) -> DetectionConfig:
        """``PUT /api/detection/config`` (LiveConfig.configure); the new configuration."""
        self.live.configure(changes)
        self.cameras.apply_pipeline_settings(self.live.pipeline_settings)
        return self.config()

    # -- status ---------------------------------------------------------------------------

    def status(self, notification_ready: bool = False) -> DetectionStatus:
        raw = self.pipeline.status()
        detector = self.holder.get()
        values = {
            **raw,
            "notification_ready": notification_ready,
            "imgsz": detector.imgsz if detector else None,
            "model_state": self.models.state,
            "model_error": self.models.last_error,
            "demo": self.demo_active,
            "bus": self.bus.stats(),
        }
        return msgspec.convert(values, DetectionStatus)

    def stream_status(self) -> StreamStatus:
        return _stream_status(self.pipeline, self.broadcaster, self.ingest, demo=self.demo_active)

    # -- several cameras (docs/cameras.md) ------------------------------------------------

    def _runtimes(self) -> CameraRuntimes | None:
        # None in a subclass that serves a pipeline of another process (realtime/remote.py).
        return getattr(self, "cameras", None)

    def _other_runtimes(self) -> list[CameraRuntime]:
        runtimes = self._runtimes()
        return list(runtimes.runtimes.values()) if runtimes is not None else []

    def _runtime(self, camera_id: int) -> CameraRuntime:
        """A camera besides the default one: 404 if there is none, 409 if it has no pipeline here
        (e.g. an API process whose pipeline runs in ``aidoor detect``: only the default camera there)."""
        runtimes = self._runtimes()
        runtime = runtimes.get(camera_id) if runtimes is not None else None
        if runtime is None:
            record = self.camera_service.get(camera_id)  # NotFound if the camera does not exist
            raise Conflict(
                f"camera {camera_id} ({record.name}) has no pipeline in this process yet",
                {"camera_id": camera_id, "error": runtimes.last_error if runtimes is not None else None},
                code="CAMERA_NOT_LOADED",
            )
        return runtime

    def pipeline_of(self, camera_id: int | None) -> DetectionPipeline:
        """The pipeline of a camera (the default one for None or 1)."""
        if camera_id is None or camera_id == DEFAULT_CAMERA_ID:
            return self.pipeline
        return self._runtime(camera_id).pipeline

    def broadcaster_of(self, camera_id: int | None) -> FrameBroadcaster:
        if camera_id is None or camera_id == DEFAULT_CAMERA_ID:
            return self.broadcaster
        return self._runtime(camera_id).broadcaster

    def ingest_target(self, camera_id: int | None) -> tuple[DetectionPipeline, IngestState]:
        """The pipeline and the ingest bookkeeping of a camera's WebSocket ingest (404 / 409 as
        ``pipeline_of``); each camera has its own, one client at a time each."""
        if camera_id is None or camera_id == DEFAULT_CAMERA_ID:
            return self.pipeline, self.ingest
        runtime = self._runtime(camera_id)
        return runtime.pipeline, runtime.ingest

    def accepts_push(self, camera_id: int | None) -> bool:
        """Whether that camera's source is ``push`` (its ingest takes frames)."""
        if camera_id is None or camera_id == DEFAULT_CAMERA_ID:
            return self.push_mode
        return self._runtime(camera_id).pipeline.camera.source.strip().lower() in PUSH_SOURCE_NAMES

    def control_cameras(self, action: str, camera_id: int | None) -> None:
        """``POST /api/detection/{action}[?camera=N]``: one camera, or every camera when None
        (the other cameras first, then the default one, which answers as before)."""
        if camera_id is None or camera_id == DEFAULT_CAMERA_ID:
            runtimes = self._runtimes()
            if camera_id is None and runtimes is not None:
                for other in sorted(runtimes.runtimes):
                    if action == "stop" or runtimes.runtimes[other].record.runs:
                        self._control_other(other, action)
            if self.runs_default:  # a detector worker without camera 1 leaves it to camera 1's worker
                self.control(action)
            return
        runtime = self._runtime(camera_id)
        if action != "stop" and not runtime.record.runs:
            raise Conflict(
                f"camera {camera_id} is disabled: enable it with PUT /api/cameras/{camera_id}",
                {"camera_id": camera_id},
                code="CAMERA_DISABLED",
            )
        self._control_other(camera_id, action)

    def _control_other(self, camera_id: int, action: str) -> None:
        if action not in ("start", "stop", "restart"):
            raise Invalid(
                f"unknown action {action!r}", {"allowed": ["start", "stop", "restart"]}, code="INVALID_ACTION"
            )
        try:
            self.cameras.control(camera_id, action)
        except RuntimeError as exc:  # the previous thread is still inside a blocking read
            raise Conflict(str(exc), code="BUSY") from None

    def camera_status(self, camera_id: int | None, notification_ready: bool = False) -> DetectionStatus:
        """``GET /api/detection[?camera=N]``: one camera's state; every camera's in brief under
        ``cameras`` and the shared detector's batching figures under ``batching``."""
        pipeline = self.pipeline_of(camera_id)
        base = self.status(notification_ready)
        if pipeline is self.pipeline:
            status = base
        else:
            values = {**msgspec.to_builtins(base), **pipeline.status(), "demo": False}
            status = msgspec.convert(values, DetectionStatus)
        status.cameras = self.camera_summaries()
        batcher = getattr(self, "batcher", None)
        status.batching = batcher.stats() if batcher is not None else {}
        return status

    def camera_stream_status(self, camera_id: int | None) -> StreamStatus:
        if camera_id is None or camera_id == DEFAULT_CAMERA_ID:
            return self.stream_status()
        runtime = self._runtime(camera_id)
        query = f"?camera={camera_id}"
        return _stream_status(
            runtime.pipeline,
            runtime.broadcaster,
            runtime.ingest,
            demo=False,
            camera_id=camera_id,
            viewer_url=f"/api/stream/viewer{query}",
            mjpeg_url=f"/api/stream/mjpeg{query}",
        )

    def camera_summaries(self) -> list[dict[str, Any]]:
        """Each camera's state in brief: the default one, then the others in id order."""
        out = [self._summary(DEFAULT_CAMERA_ID, "default", self.pipeline, True)]
        runtimes = self._runtimes()
        for camera_id, runtime in sorted(runtimes.runtimes.items() if runtimes is not None else []):
            out.append(self._summary(camera_id, runtime.record.name, runtime.pipeline, runtime.record.runs))
        return out

    @staticmethod
    def _summary(camera_id: int, name: str, pipeline: DetectionPipeline, runs: bool) -> dict[str, Any]:
        raw = pipeline.status()
        return {
            "camera_id": camera_id,
            "name": name,
            "status": raw.get("status", "stopped") if runs or raw.get("status") != "stopped" else "disabled",
            "camera_status": raw.get("camera_status", "disconnected"),
            "fps": raw.get("fps", 0.0),
            "inferences": raw.get("inferences", 0),
            "detection_count": raw.get("detection_count", 0),
            "source": raw.get("source"),
        }

    def camera_info(self, record: CameraRecord) -> dict[str, Any]:
        """The runtime half of ``GET /api/cameras`` for one camera."""
        if record.is_default:
            pipeline, runs = self.pipeline, True
        else:
            runtimes = self._runtimes()
            runtime = runtimes.get(record.id) if runtimes is not None else None
            if runtime is None:
                return {
                    "status": "disabled" if not record.runs else "stopped",
                    "camera_status": "disconnected",
                    "fps": 0.0,
                    "detection_count": 0,
                    "effective_source": record.source,
                }
            pipeline, runs = runtime.pipeline, runtime.record.runs
        summary = self._summary(record.id, record.name, pipeline, runs)
        return {
            "status": summary["status"],
            "camera_status": summary["camera_status"],
            "fps": summary["fps"],
            "detection_count": summary["detection_count"],
            "effective_source": pipeline.camera.source or None,
        }


def _stream_status(pipeline: Any, broadcaster: Any, ingest: Any, *, demo: bool, **extra: Any) -> StreamStatus:
    """``GET /api/stream/status`` of one camera's pipeline, viewer broadcaster and ingest."""
    raw = pipeline.status()
    view_size = pipeline.frame_size()
    return StreamStatus(
        status=raw["status"],
        camera_status=raw["camera_status"],
        source=raw["source"],
        demo=demo,
        source_fps=raw["source_fps"],
        pipeline_fps=raw["fps"],
        frames_read=raw["frames_read"],
        dropped_frames=raw["dropped_frames"],
        reconnects=raw["reconnects"],
        camera_error=raw["camera_error"],
        frame_width=view_size[0] if view_size else None,
        frame_height=view_size[1] if view_size else None,
        viewers=broadcaster.viewers,
        frames_sent=broadcaster.frames_sent,
        ingest=ingest.snapshot(),
        **extra,
    )
