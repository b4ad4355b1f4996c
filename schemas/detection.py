"""API structs of the realtime pipeline: Detection Process API, Stream API, manual detection and
the WebSocket camera ingest protocol. No I/O here.

``PipelineSettings`` are the pipeline's tuning settings (motion gate, event confirmation, package
removal, detector backend and input size): the settings category ``pipeline`` (not in the seed),
changed by ``PUT /api/detection/config`` or ``PUT /api/settings/pipeline`` and kept in
``system_settings`` (see docs/pipeline.md, "Service wiring"). This is their one definition:
``detection_service.pipeline.config.PipelineConfig`` extends it with the limits that are not pipeline_settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

MotionModeLiteral = Literal["on", "off"]
BackendLiteral = Literal["auto", "torch", "onnx", "openvino", "int8"]
SensitivityLiteral = Literal["low", "medium", "high"]
PIPELINE_SETTINGS_CATEGORY: Final = "pipeline"


class PipelineSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Motion gate
    motion_mode: Annotated[MotionModeLiteral, msgspec.Meta(description="'off' runs the detector on every frame")] = "on"
    full_check_interval_s: Annotated[
        float, msgspec.Meta(ge=0.2, le=60, description="Run the detector at least this often, motion or not")
    ] = 2.0
    refresh_interval_s: Annotated[
        float, msgspec.Meta(ge=0.05, le=10, description="Detector period while an object is being watched")
    ] = 0.5
    motion_threshold: Annotated[
        int, msgspec.Meta(ge=1, le=255, description="Grey-level change that counts as changed")
    ] = 25
    motion_min_area: Annotated[
        float, msgspec.Meta(ge=0.0001, le=0.5, description="Changed fraction of the frame that counts as motion")
    ] = 0.003
    sensitivity: Annotated[
        SensitivityLiteral,
        msgspec.Meta(description="How far under confidence_threshold a box is still kept, as 'unclassified'"),
    ] = "medium"
    stall_timeout_s: Annotated[
        float, msgspec.Meta(ge=0.5, le=60, description="Seconds without a frame before the camera is 'disconnected'")
    ] = 3.0
    # Events
    confirm_hits: Annotated[int, msgspec.Meta(ge=1, le=50, description="Hits that confirm a track as an event")] = 3
    confirm_window_s: Annotated[float, msgspec.Meta(ge=0.1, le=60, description="... within this many seconds")] = 2.0
    end_after_s: Annotated[
        float, msgspec.Meta(ge=0.5, le=3600, description="A non-package event ends after this long unseen")
    ] = 3.0
    package_removed_after_s: Annotated[
        float, msgspec.Meta(ge=1, le=86400, description="A package is 'removed' after this long unseen")
    ] = 10.0
    # Detector
    backend: Annotated[
        BackendLiteral, msgspec.Meta(description="Inference runtime; 'auto' picks the fastest available")
    ] = "auto"
    # Detector input size (multiple of 32, 64-1280); null = the model's training size.
    imgsz: Annotated[int, msgspec.Meta(ge=64, le=1280, multiple_of=32)] | None = None


DETECTOR_KEYS: Final = ("backend", "imgsz")  # a change swaps the detector (the rest apply to the pipeline)
# Keys of PUT /api/detection/config that are detection settings (stored and validated by the
# settings service, the same values as /api/settings/detection).
DETECTION_SETTING_KEYS: Final = ("confidence_threshold", "capture_interval", "capture_count", "jpeg_quality")


class DetectionConfig(msgspec.Struct, kw_only=True):
    """What ``GET/PUT /api/detection/config`` answer: the detection settings and the pipeline settings."""

    detection: dict[str, Any]
    pipeline: PipelineSettings
    demo_video: str | None = None  # the file played because no camera source is configured


class DetectionStatus(msgspec.Struct, kw_only=True):
    """``GET /api/detection``: the seed's keys first, then what the pipeline knows besides."""

    status: Literal["running", "stopped", "error"]
    camera_status: Literal["connected", "disconnected"]
    model_loaded: bool
    notification_ready: bool
    uptime: int
    fps: float
    detection_count: int
    model_id: str | None = None
    backend: str | None = None
    imgsz: int | None = None
    model_state: Literal["none", "loading", "loaded", "error"] = "none"
    model_error: str | None = None
    source: str | None = None
    demo: bool = False
    source_fps: float = 0.0
    frames_read: int = 0
    frames_capped: int = 0  # skipped on purpose by the camera.fps cap (not in dropped_frames)
    dropped_frames: int = 0
    reconnects: int = 0
    camera_error: str | None = None
    inferences: int = 0
    gated_skips: int = 0
    last_inference_ms: float = 0.0
    frame_age_ms: float = 0.0
    motion_mode: str = "on"
    error: str | None = None
    recorder: dict[str, Any] = msgspec.field(default_factory=dict)
    bus: dict[str, Any] = msgspec.field(default_factory=dict)
    # Several cameras (docs/cameras.md): which camera this is, every camera in brief, and the
    # shared detector's batches (frames per batch, per-camera inferences and dropped frames).
    camera_id: int = 1
    cameras: list[dict[str, Any]] = msgspec.field(default_factory=list)
    batching: dict[str, Any] = msgspec.field(default_factory=dict)


class IngestStatus(msgspec.Struct, kw_only=True):
    connected: bool
    client: str | None = None
    frames_received: int = 0
    frames_invalid: int = 0
    bytes_received: int = 0
    connections: int = 0


class StreamStatus(msgspec.Struct, kw_only=True):
    """``GET /api/stream/status``."""

    status: str
    camera_status: str
    source: str | None
    demo: bool
    source_fps: float
    pipeline_fps: float
    frames_read: int
    dropped_frames: int
    reconnects: int
    camera_error: str | None
    frame_width: int | None
    frame_height: int | None
    viewers: int
    frames_sent: int
    ingest: IngestStatus
    viewer_url: str = "/api/stream/viewer"
    mjpeg_url: str = "/api/stream/mjpeg"
    ingest_url: str = "/api/stream/ingest"
    camera_id: int = 1  # docs/cameras.md: ?camera=N


class BBox(msgspec.Struct, kw_only=True):
    x1: int
    y1: int
    x2: int
    y2: int


class DetectedObject(msgspec.Struct, kw_only=True):
    bbox: BBox
    class_name: str = msgspec.field(name="class")  # the model's class name
    class_id: int
    confidence: float
    type: str  # object type after the class-mapping rule (docs/pipeline.md)


class ManualDetection(msgspec.Struct, kw_only=True):
    """``POST /api/detections``."""

    detections: list[DetectedObject]
    count: int
    width: int
    height: int
    model_id: str
    backend: str
    imgsz: int
    inference_ms: float
    confidence_threshold: float
    min_confidence: float
    event_id: int | None = None
    image_key: str | None = None


# --------------------------------------------------------------------------- camera ingest protocol
# Client -> server: binary message = one JPEG (or PNG) frame; text message = JSON below.
# Server -> client: text messages = JSON below. docs/pipeline.md has the whole exchange.


class IngestHello(msgspec.Struct, tag="hello", kw_only=True):
    camera: str | None = None  # a name for logs and /api/stream/status
    fps: float | None = None


class IngestPing(msgspec.Struct, tag="ping", kw_only=True):
    pass


IngestClientMessage = IngestHello | IngestPing


class IngestReady(msgspec.Struct, tag="ready", kw_only=True):
    max_frame_bytes: int


class IngestPong(msgspec.Struct, tag="pong", kw_only=True):
    frames_received: int
    frames_invalid: int
    camera_status: str


class IngestError(msgspec.Struct, tag="error", kw_only=True):
    code: str
    message: str
    fatal: bool = False  # the server closes the connection after a fatal error


class TrackBox(msgspec.Struct, kw_only=True):
    x1: float
    y1: float
    x2: float
    y2: float


class TrackedObject(msgspec.Struct, kw_only=True):
    """One object the live tracker holds (``GET /api/analytics/tracking``)."""

    track_id: int
    object_type: str  # the type vote's winner (``unclassified`` until a confident hit)
    votes: dict[str, int]  # detector runs per type: how the vote stands
    confidence: float  # best confidence for the voted type
    last_confidence: float
    bbox: TrackBox  # pixels of the last matched detection, in the (resized) frame
    frame_width: int
    frame_height: int
    first_seen: datetime
    last_seen: datetime
    hits: int  # detector runs that matched this track
    lost: bool  # not matched by the latest detector run (ByteTrack still holds it)
    confirmed: bool  # the recorder made (or continued) an event from it
    event_id: int | None  # that event's row id; null if unconfirmed or the row is still being written


class TrackingSnapshot(msgspec.Struct, kw_only=True):
    running: bool  # false: the pipeline is stopped and nothing is tracked
    source: str | None
    updated_at: datetime | None  # the detector run the snapshot comes from
    count: int
    objects: list[TrackedObject]
