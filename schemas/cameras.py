"""API structs of the cameras resource (issue #15 item 2, docs/cameras.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from schemas.settings import Resolution

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
    status: str  # running | stopped | error | disabled
    camera_status: str  # connected | disconnected
    fps: float
    detection_count: int
    viewer_url: str
    created_by: str | None
    created_at: datetime
    updated_by: str | None
    updated_at: datetime
