"""Limits checked on an image's bytes before anyone decodes its pixels (docs/security.md).

A small file can claim 60000x60000 pixels (3.6 G pixels, ~10 GB decoded), and a truncated JPEG
decodes in OpenCV as a half-grey picture instead of failing. ``image_problem`` reads only the
header (Pillow opens lazily; no pixel is decoded) and, for JPEG and PNG, looks for the end
marker. Base layer: imports nothing of ours, so the API, the camera ingest, the pipeline's push
source and the dataset reader can all use it; callers turn a problem into their own error.
"""

from __future__ import annotations

import io
import sys
from typing import Any

MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: above any camera frame or dataset photo this service takes

JPEG_START = b"\xff\xd8\xff"
PNG_START = b"\x89PNG\r\n\x1a\n"
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC


class ImageProblem(tuple[str, str]):
    """(code, reason): ``IMAGE_TOO_LARGE`` or ``INVALID_IMAGE``."""

    __slots__ = ()

    @property
    def code(self) -> str:
        return self[0]

    @property
    def reason(self) -> str:
        return self[1]

    @property
    def too_large(self) -> bool:
        return self[0] == "IMAGE_TOO_LARGE"


def image_problem(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageProblem | None:
    """None if ``data`` is an image of at most ``max_pixels`` whose JPEG/PNG stream is complete."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return ImageProblem(("INVALID_IMAGE", "empty file (0 bytes)"))
    try:
        with _pil_open()(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard (> ~179 M pixels) fires in open()
        return ImageProblem(("IMAGE_TOO_LARGE", f"image header claims too many pixels ({exc})"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:
        reason = "unknown image format" if isinstance(exc, (UnidentifiedImageError, ImportError)) else str(exc)
        return ImageProblem(("INVALID_IMAGE", reason))
    if width * height > max_pixels:
        return ImageProblem(
            ("IMAGE_TOO_LARGE", f"image is {width}x{height}; at most {max_pixels // 1_000_000} megapixels")
        )
    tail = data.rstrip(b"\0")[-16:]  # some encoders pad after the end marker
    if data.startswith(JPEG_START) and _JPEG_END not in tail:
        return ImageProblem(("INVALID_IMAGE", "truncated JPEG (no end-of-image marker)"))
    if data.startswith(PNG_START) and not tail.endswith(_PNG_END):
        return ImageProblem(("INVALID_IMAGE", "truncated PNG (no IEND chunk)"))
    return None


def _pil_open() -> Any:
    """Pillow's own ``Image.open``: Ultralytics (once imported) replaces it with a wrapper that, on
    an unknown format, tries to install and import pi-heif (an ImportError offline)."""
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)
