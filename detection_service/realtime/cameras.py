"""The pipelines of the cameras besides the default one (docs/cameras.md).

Camera 1 (``default``) is ``PipelineService.pipeline``, built from the camera settings as before.
Every other enabled camera of the ``cameras`` table gets its own ``DetectionPipeline`` here (its
own capture, motion gate, tracker, event recorder and journal, events with its camera_id) and its
own MJPEG broadcaster, all on the ONE detector: the holder and ``BatchingDetector`` are the
default pipeline's. ``sync`` reads the table again (at start and after every change through the
cameras API) and starts, re-opens or stops pipelines to match. Resolution, fps, brightness and
contrast a camera does not override follow the camera settings; so do the detection settings and
the pipeline settings (but the detector's backend and imgsz, which all cameras share): a camera's
``overrides`` replace the global values for that camera's pipeline only, live.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus
from detection_service.notifications.queue import QueueConfig
from detection_service.pipeline.batching import BatchingDetector
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from detection_service.realtime.ingest import IngestState
from detection_service.realtime.viewers import FrameBroadcaster
from detection_service.services.cameras import CameraRecord, CameraService
from detection_service.storage import ObjectStore
from schemas.detection import PipelineSettings
from schemas.settings import CameraSettings, DetectionSettings

log = logging.getLogger(__name__)


def effective_camera(record: CameraRecord, base: CameraSettings) -> CameraSettings:
    """The camera settings a camera's capture uses: its source, its overrides, else ``base``."""
    o = record.settings
    return CameraSettings(
        source=record.source or "",
        resolution=o.resolution or base.resolution,
        fps=o.fps or base.fps,
        brightness=base.brightness if o.brightness is None else o.brightness,
        contrast=base.contrast if o.contrast is None else o.contrast,
    )


def effective_detection(record: CameraRecord, base: DetectionSettings) -> DetectionSettings:
    """The detection settings of a camera: its overrides, else the global ones."""
    changes = record.settings.detection_changes()
    return msgspec.structs.replace(base, **changes) if changes else base


def effective_pipeline(record: CameraRecord, base: PipelineSettings) -> PipelineSettings:
    """The pipeline settings of a camera: its overrides, else the global ones (backend and imgsz always)."""
    changes = record.settings.pipeline_changes()
    return msgspec.structs.replace(base, **changes) if changes else base


@dataclass
class CameraRuntime:
    record: CameraRecord
    pipeline: DetectionPipeline
    broadcaster: FrameBroadcaster
    user_stopped: bool = False
    ingest: IngestState = field(default_factory=IngestState)  # its WebSocket ingest (source "push")


class CameraRuntimes:
    def __init__(
        self,
        *,
        cameras: CameraService,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        bus: EventBus,
        holder: DetectorHolder,
        batcher: BatchingDetector,
        alerts: QueueConfig,
        journal_root: Path,
        base_camera: Callable[[], CameraSettings],
        detection: Callable[[], DetectionSettings],
        config: Callable[[], PipelineConfig],
        only: frozenset[int] | None = None,
    ) -> None:
        self.cameras = cameras
        self.only = only  # None: every camera; else the ids this process runs (aidoor detect --cameras)
        self._parts = {"session_factory": session_factory, "store": store, "bus": bus, "holder": holder}
        self.batcher = batcher
        self.alerts = alerts
        self.journal_root = journal_root
        self.base_camera = base_camera
        self.detection = detection
        self.config = config
        self.runtimes: dict[int, CameraRuntime] = {}
        self._lock = threading.RLock()
        self._closed = False
        self.last_error: str | None = None

    # -- the table -> running pipelines -----------------------------------------------------

    def sync(self) -> None:
        """Match the running pipelines to the cameras table (raises if the database is down)."""
        records = {
            r.id: r for r in self.cameras.list() if not r.is_default and (self.only is None or r.id in self.only)
        }
        with self._lock:
            if self._closed:
                return
            for camera_id in list(self.runtimes):
                if camera_id not in records:
                    log.info("camera %d was deleted: stopping its pipeline", camera_id)
                    self._close(self.runtimes.pop(camera_id))
            for camera_id, record in records.items():
                runtime = self.runtimes.get(camera_id)
                if runtime is None:
                    runtime = self.runtimes[camera_id] = self._build(record)
                elif runtime.record != record:
                    runtime.record = record
                    pipeline = runtime.pipeline
                    pipeline.apply_settings("camera", effective_camera(record, self.base_camera()))
                    pipeline.apply_settings("detection", effective_detection(record, self.detection()))
                    pipeline.apply_pipeline_settings(effective_pipeline(record, self.config().pipeline_settings))
                pipeline = runtime.pipeline
                if not record.runs and pipeline.running:
                    log.info("camera %d (%s) disabled: stopping its pipeline", camera_id, record.name)
                    pipeline.stop()
                elif record.runs and not pipeline.running and not runtime.user_stopped:
                    log.info("camera %d (%s): starting its pipeline on %s", camera_id, record.name, record.source)
                    pipeline.start()
        self.last_error = None

    def _build(self, record: CameraRecord) -> CameraRuntime:
        config = self.config().with_changes(
            journal_dir=str(self.journal_root / f"camera-{record.id}"), **record.settings.pipeline_changes()
        )
        pipeline = DetectionPipeline(
            **self._parts,
            camera=effective_camera(record, self.base_camera()),
            detection=effective_detection(record, self.detection()),
            config=config,
            alerts=self.alerts,
            camera_id=record.id,
            batcher=self.batcher,
        )
        return CameraRuntime(record, pipeline, FrameBroadcaster(pipeline))

    # -- settings shared with the default camera ---------------------------------------------

    def apply(self, category: str, value: msgspec.Struct) -> None:
        """A settings change reaches the fields a camera does not override."""
        with self._lock:
            for runtime in self.runtimes.values():
                if category == "camera" and isinstance(value, CameraSettings):
                    runtime.pipeline.apply_settings("camera", effective_camera(runtime.record, value))
                elif category == "detection" and isinstance(value, DetectionSettings):
                    runtime.pipeline.apply_settings("detection", effective_detection(runtime.record, value))
                else:
                    runtime.pipeline.apply_settings(category, value)

    def apply_pipeline_settings(self, pipeline_settings: Any) -> None:
        with self._lock:
            for runtime in self.runtimes.values():
                runtime.pipeline.apply_pipeline_settings(effective_pipeline(runtime.record, pipeline_settings))

    # -- control and lookup ----------------------------------------------------------------

    def get(self, camera_id: int) -> CameraRuntime | None:
        return self.runtimes.get(camera_id)

    def control(self, camera_id: int, action: str) -> None:
        with self._lock:
            runtime = self.runtimes.get(camera_id)
            if runtime is None:
                raise KeyError(camera_id)
            if action == "stop":
                runtime.user_stopped = True
                runtime.pipeline.stop()
                return
            runtime.user_stopped = False
            if action == "start":
                runtime.pipeline.start()
            else:
                runtime.pipeline.restart()

    def close(self, timeout: float = 3.0) -> int:
        """Stop every pipeline and drain its writes; the writes left undone."""
        with self._lock:
            self._closed = True
            runtimes, self.runtimes = list(self.runtimes.values()), {}
        return sum(self._close(r, timeout) for r in runtimes)

    @staticmethod
    def _close(runtime: CameraRuntime, timeout: float = 3.0) -> int:
        runtime.broadcaster.close()
        return runtime.pipeline.close(timeout)
