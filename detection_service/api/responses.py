"""Envelope helpers and the exception handlers that keep every response in the seed's shape.

``HTTP_STATUS`` is the one table from a domain error's kind (``detection_service/errors.py``) to an
HTTP status; the error code and details come from the exception itself. Handlers and services
raise domain errors; Litestar's own exceptions (validation, 404/405 routing) get stable codes too.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from detection_service import errors
from schemas.envelope import Envelope, ErrorEnvelope, ErrorInfo

log = logging.getLogger(__name__)

# Litestar's exception class -> our stable error code, by status.
_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}


# Domain error kind -> HTTP status. The most specific class in an exception's MRO wins.
HTTP_STATUS: dict[type[errors.DomainError], int] = {
    errors.Invalid: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.GateFailed: 409,
    errors.TooLarge: 413,
    errors.UnsupportedMedia: 415,
    errors.Unprocessable: 422,
    errors.RateLimited: 429,
    errors.Failed: 500,
    errors.Unavailable: 503,
}


def status_of(exc: errors.DomainError) -> int:
    for kind in type(exc).__mro__:
        status = HTTP_STATUS.get(kind)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 400  # a DomainError of no listed kind: the client's request could not be served


def ok(data: Any = None, message: str = "OK", status_code: int = 200) -> Response[Envelope[Any]]:
    return Response(Envelope(data=data, message=message), status_code=status_code)


def error_response(status_code: int, code: str, message: str, details: Any = None) -> Response[ErrorEnvelope]:
    return Response(
        ErrorEnvelope(message=message, error=ErrorInfo(code=code, message=message, details=details)),
        status_code=status_code,
        media_type=MediaType.JSON,
    )


def http_exception_handler(request: Request, exc: HTTPException) -> Response[ErrorEnvelope]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        # Litestar puts msgspec's field errors in ``extra``: [{"message", "key", "source"}].
        return error_response(400, "VALIDATION_ERROR", _first_line(exc.detail) or "Invalid request", exc.extra or None)
    if isinstance(exc.__cause__, SerializationException):
        # The body could not be decoded at all (e.g. broken JSON): say where, not just "bad".
        return error_response(
            400,
            "MALFORMED_BODY",
            "Request body could not be decoded",
            {"reason": str(exc.__cause__), "content_type": request.headers.get("content-type")},
        )
    code = _CODES.get(status, "HTTP_ERROR" if status < 500 else "SERVER_ERROR")
    details = exc.extra or None
    if status == 405:
        details = {"method": request.method, "path": request.url.path}
    elif status == 404:
        details = {"path": request.url.path}
    return error_response(status, code, _first_line(exc.detail), details)


def internal_error_handler(request: Request, exc: Exception) -> Response[ErrorEnvelope]:
    # Logged with the stack trace here; the client never sees it.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "Internal server error")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


def domain_error_handler(request: Request, exc: errors.DomainError) -> Response[ErrorEnvelope]:
    return error_response(status_of(exc), exc.code, exc.message, exc.details)


EXCEPTION_HANDLERS = {
    errors.DomainError: domain_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
