"""Declared bounds of path and query parameters, so a value out of range is a 400 in the envelope
(Litestar validates them) and the OpenAPI document states the range."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

# Row ids are BIGINT on MariaDB and INTEGER (64-bit) on SQLite; a larger number reached the driver
# and failed there (OverflowError, a 500). 2**53 - 1 keeps every id exact as a JSON number too.
MAX_ROW_ID = 2**53 - 1

RowId = Annotated[int, Parameter(ge=1, le=MAX_ROW_ID, description="A row id (1 .. 2**53-1)")]
OptionalRowId = Annotated[int | None, Parameter(ge=1, le=MAX_ROW_ID, description="A row id (1 .. 2**53-1)")]
