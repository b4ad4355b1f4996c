"""Analytics API structs (``GET /api/analytics/statistics|patterns|anomalies``).

Hours, weekdays and days are local time in the alert time zone (``AIDOOR_ALERT_TIMEZONE``);
``start``/``end`` are UTC. Weekdays are numbered Monday = 0 .. Sunday = 6 and named ``mon`` ..
``sun``. See docs/analytics.md for the methods.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

PERIODS: Final[tuple[str, ...]] = ("day", "week", "month")
GROUP_BYS: Final[tuple[str, ...]] = ("type", "hour", "weekday", "day")
SENSITIVITIES: Final[tuple[str, ...]] = ("low", "medium", "high")
WEEKDAYS: Final[tuple[str, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The types whose arrival times make "delivery windows".
DELIVERY_TYPES: Final[tuple[str, ...]] = ("package", "delivery_food", "mail")

AnomalyKind = Literal["rare_hour", "loitering", "burst", "package_taken"]


class StatisticsGroup(msgspec.Struct, kw_only=True):
    key: str  # type code, "00".."23", "mon".."sun" or "YYYY-MM-DD" (local)
    count: int
    mean_confidence: float | None
    mean_duration_s: float | None  # tracking duration of the group's events that ended
    reclassified: int  # relabelled to another type by a person (original_type_id set)
    reclassified_share: float | None
    false_positives: int
    false_positive_share: float | None


class Statistics(msgspec.Struct, kw_only=True):
    period: str
    group_by: str
    start: datetime
    end: datetime
    time_zone: str
    total: int
    groups: list[StatisticsGroup]


class DeliveryWindow(msgspec.Struct, kw_only=True):
    start: str  # "HH:MM" local
    end: str  # "HH:MM" local, exclusive ("24:00" = midnight)
    arrivals: int
    share: float  # of the type's arrivals in the period


class DeliveryPattern(msgspec.Struct, kw_only=True):
    arrivals: int
    # Fewest half-hour-aligned intervals that together cover at least ``coverage`` of the arrivals.
    coverage: float
    windows: list[DeliveryWindow]
    weekdays: list[str]  # the weekdays that together hold at least ``coverage`` of them


class BusyHour(msgspec.Struct, kw_only=True):
    weekday: str
    hour: int
    count: int


class DurationStats(msgspec.Struct, kw_only=True):
    count: int
    median_s: float | None
    p90_s: float | None
    mean_s: float | None
    max_s: float | None


class Patterns(msgspec.Struct, kw_only=True):
    period: str
    start: datetime
    end: datetime
    time_zone: str
    events: int
    # type -> 7 rows (mon..sun) x 24 columns (local hour) of event counts.
    histograms: dict[str, list[list[int]]]
    busiest_hours: list[BusyHour]  # the top (weekday, hour) slots over every type
    busiest_hours_by_type: dict[str, list[int]]  # type -> its 3 busiest local hours
    delivery_windows: dict[str, DeliveryPattern]
    package_stay: DurationStats  # from arrival to removal, packages that were taken
    person_dwell: DurationStats  # how long the tracker saw a person


class Anomaly(msgspec.Struct, kw_only=True):
    kind: AnomalyKind
    event_ids: list[int]
    score: float  # how many times past the threshold of the asked sensitivity (>= 1)
    at: datetime  # UTC
    local_time: str  # "YYYY-MM-DD HH:MM" in the alert time zone
    message: str


class Baseline(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime
    days: float  # history actually covered (first event .. end)
    events: int


class Anomalies(msgspec.Struct, kw_only=True):
    sensitivity: str
    start: datetime
    end: datetime
    time_zone: str
    baseline: Baseline
    insufficient_history: bool
    message: str
    total: int
    anomalies: list[Anomaly]
