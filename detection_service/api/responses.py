"""Envelope helpers and the exception handlers that keep every response in the seed's shape.

``HTTP_STATUS`` is the one table from a domain error's kind (``detection_service/errors.py``) to an
HTTP status; the error code and details come from the exception itself. Handlers and services
raise domain errors; Litestar's own exceptions (validation, 404/405 routing) get stable codes too.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from litestar import Litestar, MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

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
    errors.TimedOut: 504,
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


def undecodable_body_handler(request: Request, exc: UnicodeDecodeError) -> Response[ErrorEnvelope]:
    # Litestar decodes JSON bodies and multipart text fields as UTF-8 before any handler runs.
    return error_response(
        400,
        "MALFORMED_BODY",
        "Request body is not valid UTF-8",
        {"reason": str(exc), "content_type": request.headers.get("content-type")},
    )


def too_deep_handler(request: Request, exc: RecursionError) -> Response[ErrorEnvelope]:
    # msgspec's JSON decoder stops at Python's recursion limit (~1000 levels) with this error,
    # before any handler runs: e.g. 100 000 levels of "[". Any other RecursionError is our bug.
    if "deserializ" not in str(exc):
        return internal_error_handler(request, exc)
    return error_response(
        400,
        "MALFORMED_BODY",
        "Request body is nested too deeply",
        {"reason": str(exc), "content_type": request.headers.get("content-type")},
    )


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
    UnicodeDecodeError: undecodable_body_handler,
    RecursionError: too_deep_handler,
    Exception: internal_error_handler,
}


# -- What the OpenAPI document says about errors and date-times ------------------------------------
# Litestar documents a 400 in its own ``{"status_code", "detail"}`` shape and no other error; the
# service answers every error in the envelope above. ``document_errors`` puts ErrorEnvelope on
# each operation for the statuses it can answer (any route: a bad parameter, no or too few
# rights, a missing row, a busy or absent dependency, our own failure; routes with a body also:
# conflict, too large, wrong media type, unprocessable).
_ANY_ROUTE = {
    400: "Invalid request: a parameter or body value out of range or malformed (error.details says which)",
    401: "No valid session or API token",
    403: "Signed in, but the role may not do this (or a forged or expired link)",
    404: "No such resource",
    429: "Too many attempts; error.details.retry_after_s says when to try again",
    500: "Internal server error (logged with its stack trace; the client gets no trace)",
    503: "A dependency (database, object store, Dagster, model) cannot serve now; try again later",
    504: "A detector worker (live link, docs/deployment.md) did not answer in time",
}
_WITH_BODY = {
    409: "Valid, but the current state forbids it (busy, exists already, nothing to do)",
    413: "Request body or upload over the size limit",
    415: "Unsupported media type",
    422: "Well-formed and valid, but it cannot be carried out",
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def document_errors(app: Litestar) -> None:
    """Declare the error envelope on every operation of ``app`` (before the schema is first built).

    The OpenAPI document is built lazily from each route handler's ``responses``; a status given
    there replaces Litestar's default (the ``detail``-shaped 400)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            statuses = dict(_ANY_ROUTE)
            if handler.http_methods & _BODY_METHODS:
                statuses.update(_WITH_BODY)
            declared = dict(handler.responses or {})
            handler.responses = {
                **{
                    status: ResponseSpec(data_container=ErrorEnvelope, description=text, generate_examples=False)
                    for status, text in statuses.items()
                },
                **declared,  # a route's own ResponseSpec wins
            }


# The database keeps UTC as naive DATETIME columns (MariaDB has no zone), so stored times are
# answered as ISO 8601 without an offset and OpenAPI's ``format: date-time`` (RFC 3339, offset
# required) would call them invalid. The document says what is served: ISO 8601, UTC, offset
# optional (msgspec accepts both forms in requests too).
ISO_DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$"


class UtcDateTimeSchema(OpenAPISchemaPlugin):
    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is datetime

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        return Schema(
            type=OpenAPIType.STRING,
            pattern=ISO_DATETIME_PATTERN,
            description="ISO 8601 date-time in UTC; a value without an offset is UTC",
        )
