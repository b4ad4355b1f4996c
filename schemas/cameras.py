"""API structs of the cameras resource (issue #15 item 2, docs/cameras.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, get_type_hints

import msgspec

from schemas.detection import PipelineSettings
from schemas.settings import DetectionSettings, Resolution

# The per-camera overrides of detection and pipeline settings take the global settings' own types,
# so a camera is validated with exactly their ranges (400 in the envelope otherwise).
_DETECTION = get_type_hints(DetectionSettings, include_extras=True)
_PIPELINE = get_type_hints(PipelineSettings, include_extras=True)
ConfidenceThreshold = _DETECTION["confidence_threshold"]
CaptureInterval = _DETECTION["capture_interval"]
CaptureCount = _DETECTION["capture_count"]
JpegQuality = _DETECTION["jpeg_quality"]
MotionMode = _PIPELINE["motion_mode"]
FullCheckInterval = _PIPELINE["full_check_interval_s"]
RefreshInterval = _PIPELINE["refresh_interval_s"]
MotionThreshold = _PIPELINE["motion_threshold"]
MotionMinArea = _PIPELINE["motion_min_area"]
Sensitivity = _PIPELINE["sensitivity"]
StallTimeout = _PIPELINE["stall_timeout_s"]
ConfirmHits = _PIPELINE["confirm_hits"]
ConfirmWindow = _PIPELINE["confirm_window_s"]
EndAfter = _PIPELINE["end_after_s"]
PackageRemovedAfter = _PIPELINE["package_removed_after_s"]
DETECTION_OVERRIDES: Final = ("confidence_threshold", "capture_interval", "capture_count", "jpeg_quality")
# Every pipeline setting but the detector's own (backend, imgsz): one detector serves all cameras.
PIPELINE_OVERRIDES: Final = tuple(k for k in PipelineSettings.__struct_fields__ if k not in ("backend", "imgsz"))

CameraName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$", description="Unique name")
]
CameraSource = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f]+$",
        description="RTSP/HTTP URL, video file path or device index",
    ),
]


class CameraOverrides(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Per-camera settings; a field left out follows the camera settings (PUT /api/settings/camera)."""

    resolution: Resolution | None = None
    fps: Annotated[int, msgspec.Meta(ge=10, le=60)] | None = None
    brightness: Annotated[int, msgspec.Meta(ge=-100, le=100)] | None = None
    contrast: Annotated[int, msgspec.Meta(ge=-100, le=100)] | None = None
    detection_enabled: bool = True  # false: the camera is not captured or detected (kept in the list)
    # Detection settings (PUT /api/settings/detection) for this camera only; left out: the global value.
    confidence_threshold: ConfidenceThreshold | None = None
    capture_interval: CaptureInterval | None = None
    capture_count: CaptureCount | None = None
    jpeg_quality: JpegQuality | None = None
    # Pipeline settings (PUT /api/detection/config) for this camera only, but backend and imgsz.
    motion_mode: MotionMode | None = None
    full_check_interval_s: FullCheckInterval | None = None
    refresh_interval_s: RefreshInterval | None = None
    motion_threshold: MotionThreshold | None = None
    motion_min_area: MotionMinArea | None = None
    sensitivity: Sensitivity | None = None
    stall_timeout_s: StallTimeout | None = None
    confirm_hits: ConfirmHits | None = None
    confirm_window_s: ConfirmWindow | None = None
    end_after_s: EndAfter | None = None
    package_removed_after_s: PackageRemovedAfter | None = None

    def detection_changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in DETECTION_OVERRIDES if getattr(self, k) is not None}

    def pipeline_changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PIPELINE_OVERRIDES if getattr(self, k) is not None}


class CameraCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: CameraName
    source: CameraSource
    enabled: bool = True
    # Not "settings": Litestar would take a validation error under that key for one of the app's
    # dependency named so, and answer 500 instead of 400.
    overrides: CameraOverrides = msgspec.field(default_factory=CameraOverrides)


class CameraUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the fields sent change. The default camera (id 1) takes its source from the camera
    settings: a source sent for it is refused."""

    name: CameraName | None = None
    source: CameraSource | None = None
    enabled: bool | None = None
    overrides: CameraOverrides | None = None  # replaces all overrides


class CameraInfo(msgspec.Struct, kw_only=True):
    id: int
    name: str
    source: str | None  # the default camera: null (the camera settings' source is in effective_source)
    effective_source: str | None  # what is captured (the demo video while no source is set)
    enabled: bool
    is_default: bool
    overrides: dict[str, Any]  # stored in cameras.settings
    status: str  # running | stopped | error | disabled; split layout: offline | unassigned
    camera_status: str  # connected | disconnected
    fps: float
    detection_count: int
    viewer_url: str
    created_by: str | None
    created_at: datetime
    updated_by: str | None
    updated_at: datetime
    # The detector worker that runs it (aidoor detect apart; docs/deployment.md); null in one process
    # and for a camera no worker runs (status unassigned). status offline: its worker is away.
    worker: str | None = None
