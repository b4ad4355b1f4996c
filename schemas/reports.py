"""Analytics reports (``GET /api/analytics/reports``, the report assets in assets/reports.py).

A report covers one period of the alert time zone: a local day (``YYYY-MM-DD``) or a local week,
Monday to Sunday, named by its Monday (``YYYY-MM-DD``, the Dagster partition key; ``YYYY-Www``
is accepted too). Its content is generic (sentences, tables, charts, thumbnails) so that one
renderer writes the CSV and the HTML of every type. See docs/analytics.md, "Reports".
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

ReportType = Literal["daily_summary", "weekly_pattern", "visitor_analysis", "security_report"]
Cadence = Literal["day", "week"]

# Report type -> the period one report covers (its Dagster partitions: daily or weekly).
REPORT_CADENCE: Final[dict[str, Cadence]] = {
    "daily_summary": "day",
    "weekly_pattern": "week",
    "visitor_analysis": "week",
    "security_report": "day",
}
REPORT_TYPES: Final[tuple[str, ...]] = tuple(REPORT_CADENCE)
REPORT_FORMATS: Final[tuple[str, ...]] = ("json", "csv", "html")
# The first period any report partition exists for (the Dagster partitions' start date).
REPORTS_START: Final[date] = date(2025, 1, 6)  # a Monday, so weekly and daily partitions start together

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def period_key(cadence: str, period: str) -> str:
    """The partition key of ``period`` for a cadence: the day itself, or the Monday of the week
    (given as any day of it, or as ``YYYY-Www``). ValueError when it is neither."""
    text = period.strip()
    match = _ISO_WEEK.match(text)
    if match and cadence == "week":
        day = date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1)
    elif _DAY.match(text):
        day = date.fromisoformat(text)
    else:
        expected = "YYYY-MM-DD" if cadence == "day" else "YYYY-MM-DD (any day of the week) or YYYY-Www"
        raise ValueError(f"period must be {expected}, got {period!r}")
    if cadence == "week":
        day -= timedelta(days=day.weekday())
    return day.isoformat()


def period_days(cadence: str, key: str) -> tuple[date, date]:
    """[first local day, day after the last) of a partition key."""
    first = date.fromisoformat(key)
    return first, first + timedelta(days=1 if cadence == "day" else 7)


class ReportTable(msgspec.Struct, kw_only=True):
    name: str  # machine name (CSV section, chart source)
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str | None = None


class ReportChart(msgspec.Struct, kw_only=True):
    name: str  # the PNG beside the report: reports/<type>/<period>/<name>.png
    title: str


class ReportThumbnail(msgspec.Struct, kw_only=True):
    event_id: int
    key: str  # object key of the event's snapshot; the HTML links it signed, when served
    caption: str


class Report(msgspec.Struct, kw_only=True):
    type: str
    period: str  # partition key
    cadence: str
    title: str
    time_zone: str
    start: datetime  # UTC, naive
    end: datetime
    local_start: str  # "YYYY-MM-DD HH:MM" in the time zone
    local_end: str
    generated_at: datetime
    # What the asset check compares with the database (events in [start, end)).
    counts: dict[str, int]
    summary: list[str]
    tables: list[ReportTable]
    charts: list[ReportChart] = []
    thumbnails: list[ReportThumbnail] = []
    notes: list[str] = []


class ReportPending(msgspec.Struct, kw_only=True):
    """202 of ``GET /api/analytics/reports``: the batch job that will make the report."""

    type: str
    period: str
    submitted: bool  # false: the job was already pending or running
    job: Any  # BatchJobView (schemas.batch_jobs imports this module)
