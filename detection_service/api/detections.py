"""Detection API, manual part (seed: ``POST /api/detections``): run the deployed model on one
uploaded image and, when asked, record it as an event.

Only POST lives here; the GET/PUT endpoints of the Detection API (history, detail, recent, types,
classify) belong to the events issue. ``GET /api/detections`` must be added to THIS controller:
Litestar 2.25 refuses two controllers with a handler on the same path (both generate an OPTIONS
handler: "Handler already registered ... OPTIONS"). Sub-paths (``/recent``, ``/{id}``) may live in
another controller with the same ``path``.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import cv2
import numpy as np
from litestar import Controller, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from detection_service.api.detection import call, pipeline_service
from detection_service.api.responses import ApiError, ok
from schemas.detection import ManualDetection
from schemas.envelope import Envelope

MAX_PIXELS = 40_000_000  # 40 MP: larger images are refused before they are decoded
_TRUE = ("1", "true", "yes", "on")


def decode_image(raw: bytes, filename: str | None, content_type: str | None) -> np.ndarray:
    """BGR pixels of an uploaded image, upright (EXIF orientation applied). Pillow rather than
    cv2.imdecode: OpenCV returns a half-grey picture for a truncated JPEG instead of failing."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    details = {"filename": filename, "content_type": content_type, "bytes": len(raw)}
    try:
        with _pil_open()(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ApiError(413, "IMAGE_TOO_LARGE",
                               f"image is {image.width}x{image.height}; at most {MAX_PIXELS // 1_000_000} megapixels",
                               details)  # fmt: skip
            image.load()  # decodes everything now: truncated or corrupt data raises here
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError, Image.DecompressionBombError) as exc:
        reason = "unknown image format" if isinstance(exc, (UnidentifiedImageError, ImportError)) else str(exc)
        raise ApiError(400, "INVALID_IMAGE", "the file is not a readable image (JPEG, PNG, BMP, WebP ...)",
                       {**details, "reason": reason}) from None  # fmt: skip
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
        summary="Detect objects in one uploaded image with the deployed model (multipart field 'image')",
        description=(
            "Returns each detection's box (pixels), model class, confidence and object type (class-mapping rule in "
            "docs/pipeline.md). With record=true (query or form field) the best detection is stored as one event "
            "(closed at once; the image is capture 1) and published to the notifier like a pipeline event. "
            "Not an image or corrupt: 400; over AIDOOR_MAX_UPLOAD_MB: 413; no model deployed: 503."
        ),
    )
    async def detect(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        record: bool = False,
    ) -> Response[Envelope[ManualDetection]]:
        upload = data.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "MISSING_IMAGE", "send the image as the multipart/form-data file field 'image'",
                           {"fields": sorted(data)})  # fmt: skip
        raw = await upload.read()
        if not raw:
            raise ApiError(400, "INVALID_IMAGE", "the uploaded file is empty", {"filename": upload.filename})
        image = decode_image(raw, upload.filename, upload.content_type)
        record = record or str(data.get("record", "")).strip().lower() in _TRUE
        result: ManualDetection = await call(pipeline_service(request).detect_image, image, record)
        if result.event_id is not None:
            message = f"{result.count} object(s) detected; event {result.event_id} recorded"
        elif record:
            message = "nothing detected; no event recorded"
        else:
            message = f"{result.count} object(s) detected"
        return ok(result, message=message)
