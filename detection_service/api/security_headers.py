"""Security headers on every HTTP response (pages, API answers, errors, 404s, static files).

Added in a ``before_send`` hook, which Litestar runs on each message the app sends, so answers
made by exception handlers and the router's own 404/405 carry them too.

The Content-Security-Policy fits the pages the service serves (docs/security.md):
- scripts from the service itself; ``'unsafe-eval'`` because the vendored Alpine.js (standard
  build) evaluates its ``x-*`` expressions with ``new Function``; the live viewer's one inline
  script by its SHA-256 hash, never ``'unsafe-inline'``;
- inline styles (Alpine's ``:style`` bindings set the style attribute; the viewer has a style
  block), images also from ``data:``/``blob:`` and from the object store's signed links;
- no framing by anyone (``frame-ancestors 'none'``, and ``X-Frame-Options: DENY`` for older
  browsers), no plugins, forms post only to the service.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from detection_service.config import Settings
from detection_service.storage.s3 import parse_endpoint

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def inline_script_hashes(*pages: Path) -> list[str]:
    """CSP source expressions (``'sha256-...'``) of the inline ``<script>`` blocks of ``pages``."""
    hashes = []
    for page in pages:
        for body in _INLINE_SCRIPT.findall(page.read_bytes()):
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            hashes.append(f"'sha256-{digest}'")
    return hashes


def image_origins(settings: Settings) -> list[str]:
    """Where signed image links may point: the S3 server itself (the local store serves through us)."""
    if not settings.s3_endpoint:
        return []
    host, tls = parse_endpoint(settings.s3_endpoint, settings.s3_secure)
    return [f"{'https' if tls else 'http'}://{host}"]


def content_security_policy(script_hashes: list[str], image_origins: list[str]) -> str:
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", "'unsafe-eval'", *script_hashes],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:", *image_origins],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class SecurityHeaders:
    """``before_send`` hook: sets the headers on each ``http.response.start`` (a handler's own
    value of a header wins)."""

    def __init__(self, csp: str) -> None:
        self.headers = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "Content-Security-Policy": csp,
            "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        }

    async def __call__(self, message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        for name, value in self.headers.items():
            if name not in headers:
                headers[name] = value
