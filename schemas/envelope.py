"""The seed's response envelope, shared by every API response (errors included)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(msgspec.Struct, Generic[T], kw_only=True):
    success: bool = True
    message: str = "OK"
    data: T | None = None
    timestamp: datetime = msgspec.field(default_factory=utc_now)


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """A page of a list endpoint; ``total`` counts every row that matches the filters."""

    items: list[T]
    total: int
    page: int
    limit: int


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    success: bool = False
    message: str
    error: ErrorInfo
    timestamp: datetime = msgspec.field(default_factory=utc_now)
