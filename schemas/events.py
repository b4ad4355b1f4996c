"""API structs of the Detection and Event APIs (history, detail, images, relabelling, retention)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from schemas.settings import ObjectTypeCodeLiteral

MAX_PAGE_LIMIT = 100


class ObjectTypeInfo(msgspec.Struct, kw_only=True):
    id: int
    code: str
    name: str
    description: str | None
    is_active: bool


class EventImageInfo(msgspec.Struct, kw_only=True):
    id: int
    event_id: int
    sequence_number: int
    # A link a browser can open: presigned S3 URL or the local store's signed route; it expires.
    url: str | None
    url_expires_at: datetime | None
    key: str
    captured_at: datetime
    compression_quality: int
    # Set on the unclassified-images listing, where each image stands without its event.
    object_type: str | None = None
    bbox: dict[str, Any] | None = None


class EventSummary(msgspec.Struct, kw_only=True):
    id: int
    type: str
    type_name: str
    original_type: str | None  # the detector's type before the first relabel
    confidence: float | None
    detected_at: datetime
    ended_at: datetime | None
    duration_s: int | None  # how long the tracker followed the object
    tracking_id: int | None
    status: str
    user_verified: bool
    is_false_positive: bool
    reclassified_at: datetime | None
    model_version: str | None
    image_count: int
    thumbnail_url: str | None  # the main snapshot (capture 1), signed like every image URL
    camera_id: int = 1  # the camera that saw it (docs/cameras.md)


class EventDetail(EventSummary, kw_only=True):
    bbox: dict[str, Any] | None
    fps: int | None
    processing_time_ms: int | None
    notification_sent: bool
    images: list[EventImageInfo]


class ClassifyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Relabel an event. ``verified`` marks the label as checked by a person (it feeds dataset
    auto-collection and retraining); ``false_positive`` says nothing was there."""

    type: ObjectTypeCodeLiteral
    verified: bool = True
    false_positive: bool = False


class CompressRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    quality: Annotated[int, msgspec.Meta(ge=1, le=100, description="JPEG quality of new captures")]


class CompressResult(msgspec.Struct, kw_only=True):
    quality: int
    applies_to: str = "new captures"
