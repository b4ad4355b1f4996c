"""Detection API (seed): detect on an uploaded image (``POST``), the detection history with
paging and filters, recent events, object types, one event's detail, and relabelling.

Litestar 2.25 refuses two controllers with a handler on the same path (both generate an OPTIONS
handler), so every ``/api/detections`` handler lives in this one controller.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import cv2
import numpy as np
from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from detection_service.api.auth import current_principal
from detection_service.api.params import OptionalRowId, RowId
from detection_service.api.responses import ok
from detection_service.errors import DomainError, Invalid, TooLarge
from detection_service.images import MAX_IMAGE_PIXELS, image_problem
from detection_service.realtime.manual_detection import ManualDetector
from detection_service.services.event_history import EventFilter, EventService, parse_when
from schemas.detection import ManualDetection
from schemas.envelope import Envelope, Page
from schemas.events import ClassifyRequest, EventDetail, EventSummary, ObjectTypeInfo

MAX_PIXELS = MAX_IMAGE_PIXELS  # larger images are refused before they are decoded
_TRUE = ("1", "true", "yes", "on")


def decode_image(raw: bytes, filename: str | None, content_type: str | None) -> np.ndarray:
    """BGR pixels of an uploaded image, upright (EXIF orientation applied). Pillow rather than
    cv2.imdecode: OpenCV returns a half-grey picture for a truncated JPEG instead of failing."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    details = {"filename": filename, "content_type": content_type, "bytes": len(raw)}
    problem = image_problem(raw, MAX_PIXELS)  # header and end marker only: nothing decoded yet
    if problem is not None and problem.too_large:
        raise TooLarge(problem.reason, details, code=problem.code)
    if problem is not None:
        raise Invalid(
            "the file is not a readable image (JPEG, PNG, BMP, WebP ...)",
            {**details, "reason": problem.reason},
            code=problem.code,
        )
    try:
        with _pil_open()(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise TooLarge(
                    f"image is {image.width}x{image.height}; at most {MAX_PIXELS // 1_000_000} megapixels",
                    details,
                    code="IMAGE_TOO_LARGE",
                )
            image.load()  # decodes everything now: truncated or corrupt data raises here
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except DomainError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError, Image.DecompressionBombError) as exc:
        reason = "unknown image format" if isinstance(exc, (UnidentifiedImageError, ImportError)) else str(exc)
        raise Invalid(
            "the file is not a readable image (JPEG, PNG, BMP, WebP ...)",
            {**details, "reason": reason},
            code="INVALID_IMAGE",
        ) from None
    return cv2.cvtColor(np.asarray(upright), cv2.COLOR_RGB2BGR)


def _pil_open() -> Any:
    """Pillow's own ``Image.open``: Ultralytics replaces it with a wrapper that, on an unknown
    format, tries to install and import pi-heif (an ImportError offline, and pointless here)."""
    from PIL import Image

    try:
        from ultralytics.utils import patches
    except ImportError:
        return Image.open
    return getattr(patches, "_image_open", Image.open)


class DetectionsController(Controller):
    path = "/api/detections"
    tags = ["Detections"]

    @post(
        "/",
        status_code=200,
        sync_to_thread=True,
        summary="Detect objects in one uploaded image with the deployed model (multipart field 'image')",
        description=(
            "Returns each detection's box (pixels), model class, confidence and object type (class-mapping rule in "
            "docs/pipeline.md). With record=true (query or form field) the best detection is stored as one event "
            "(closed at once; the image is capture 1) and published to the notifier like a pipeline event. "
            "Not an image or corrupt: 400; over AIDOOR_MAX_UPLOAD_MB: 413; no model deployed: 503."
        ),
    )
    def detect(
        self,
        manual_detection: ManualDetector,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        record: bool = False,
    ) -> Response[Envelope[ManualDetection]]:
        upload = data.get("image")
        if not isinstance(upload, UploadFile):
            raise Invalid(
                "send the image as the multipart/form-data file field 'image'",
                {"fields": sorted(data)},
                code="MISSING_IMAGE",
            )
        raw = upload.file.read()
        if not raw:
            raise Invalid("the uploaded file is empty", {"filename": upload.filename}, code="INVALID_IMAGE")
        image = decode_image(raw, upload.filename, upload.content_type)
        record = record or str(data.get("record", "")).strip().lower() in _TRUE
        result: ManualDetection = manual_detection.detect(image, record)
        if result.event_id is not None:
            message = f"{result.count} object(s) detected; event {result.event_id} recorded"
        elif record:
            message = "nothing detected; no event recorded"
        else:
            message = f"{result.count} object(s) detected"
        return ok(result, message=message)

    @get(
        "/",
        sync_to_thread=True,
        summary="Detection history, newest first (page, limit <= 100, type, start_date, end_date, status, camera_id)",
        description="start_date / end_date: ISO 8601 date or date-time, UTC unless an offset is given; a bare "
        "end date includes that whole day. `data.total` counts every matching event.",
    )
    def history(
        self,
        event_service: EventService,
        page: int = 1,
        limit: int = 20,
        type: str | None = None,
        start_date: str | None = None,
        end_date: str | None = None,
        status: str | None = None,
        camera_id: OptionalRowId = None,
    ) -> Response[Envelope[Page[EventSummary]]]:
        flt = EventFilter(
            type=type or None,
            status=status or None,
            camera_id=camera_id,
            start=parse_when(start_date, "start_date") if start_date else None,
            end=parse_when(end_date, "end_date", end_of_day=True) if end_date else None,
        )
        result = event_service.list_events(flt, page, limit)
        return ok(result, message=f"{len(result.items)} of {result.total} event(s)")

    @get("/recent", sync_to_thread=True, summary="The newest events (limit, default 10, at most 100)")
    def recent(self, event_service: EventService, limit: int = 10) -> Response[Envelope[list[EventSummary]]]:
        return ok(event_service.recent(limit))

    @get("/types", sync_to_thread=True, summary="Object types the system knows (object_types)")
    def types(self, event_service: EventService) -> Response[Envelope[list[ObjectTypeInfo]]]:
        return ok(event_service.types())

    @get(
        "/{event_id:int}",
        sync_to_thread=True,
        summary="One event with its captures (signed image URLs), box, track and duration",
    )
    def detail(self, event_service: EventService, event_id: RowId) -> Response[Envelope[EventDetail]]:
        return ok(event_service.get(event_id))

    @put(
        "/{event_id:int}/classify",
        sync_to_thread=True,
        summary="Relabel an event: {type, verified (default true), false_positive (default false)}",
        description="Keeps the detector's type as original_type (first relabel only), sets reclassified_at, and "
        "writes a YOLO label file beside each capture (events/.../<id>/<seq>.txt; empty for a false positive) "
        "for dataset auto-collection. Unknown type: 400; unknown event: 404; the same call twice changes nothing.",
    )
    def classify(
        self, request: Request[Any, Any, Any], event_service: EventService, event_id: RowId, data: ClassifyRequest
    ) -> Response[Envelope[EventDetail]]:
        who = current_principal(request)  # the audit columns name the real user (docs/security.md)
        detail = event_service.classify(
            event_id, data.type, data.verified, data.false_positive, by_user_id=who.user_id, by_name=who.name
        )
        return ok(detail, message=f"event {event_id} is {detail.type}")
