"""Domain errors: what went wrong, in the service's words, knowing nothing of HTTP.

Services, the dataset tools and the stores raise these (or subclasses that mix them in, e.g.
``datasets.importer.DatasetNotFound(DatasetError, NotFound)``). Each carries a stable error
``code`` (the envelope's ``error.code``), a ``message`` and JSON-able ``details``. The API layer
has the one table that turns a kind into an HTTP status (``HTTP_STATUS`` in ``detection_service/api/responses.py``);
the CLI prints ``message``.

    raise NotFound(f"no event {event_id}", {"id": event_id}, code="EVENT_NOT_FOUND")
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a client (API or CLI) must see. ``code`` defaults to the class's."""

    code = "ERROR"

    def __init__(self, message: str, details: Any = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:  # not KeyError's repr() when a subclass mixes KeyError in
        return self.message


class Invalid(DomainError):
    """The request is malformed or its values are not acceptable; nothing was changed."""

    code = "BAD_REQUEST"


class NotFound(DomainError):
    code = "NOT_FOUND"


class Unauthenticated(DomainError):
    """No valid credentials: wrong password, unknown or revoked token, expired session."""

    code = "UNAUTHORIZED"


class RateLimited(DomainError):
    """Too many attempts (e.g. failed logins); ``details.retry_after_s`` says when to try again."""

    code = "TOO_MANY_REQUESTS"


class Forbidden(DomainError):
    """Refused whoever asks (a bad signature, a path outside the allowed folders, a wrong secret)."""

    code = "FORBIDDEN"


class Conflict(DomainError):
    """Valid, but not now: the state of the system forbids it (busy, already exists, nothing to do)."""

    code = "CONFLICT"


class GateFailed(Conflict):
    """A candidate model did not beat the champion (deploy without force)."""

    code = "GATE_FAILED"


class TooLarge(DomainError):
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMedia(DomainError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class Unprocessable(DomainError):
    """Well-formed and valid, but it cannot be carried out (e.g. a model that does not load)."""

    code = "UNPROCESSABLE"


class Unavailable(DomainError):
    """A dependency (object store, model, notifier key, Dagster) cannot serve now; try again later."""

    code = "SERVICE_UNAVAILABLE"


class TimedOut(Unavailable):
    """A dependency that is there did not answer in time (e.g. a detector worker over the live link)."""

    code = "TIMEOUT"


class Failed(DomainError):
    """Our own failure while carrying out a valid request."""

    code = "INTERNAL_ERROR"
