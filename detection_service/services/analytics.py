"""Analytics of the recorded events: statistics, patterns (when things come, how long they stay)
and anomalies against the door's own history. Methods and thresholds: docs/analytics.md.

Local time: hours, weekdays and days are in the alert time zone (``Settings.alert_timezone``).
The database stores naive UTC, so each query turns ``detected_at`` into seconds since the epoch
(``TIMESTAMPDIFF`` on MySQL/MariaDB, ``strftime('%s')`` on SQLite), adds the zone's UTC offset
(a ``CASE`` over the window's offset changes when the zone has daylight saving time) and derives
hour / weekday / day with integer arithmetic. Grouping happens in a derived table whose buckets
the outer query groups by, so every selected column is grouped or aggregated
(``ONLY_FULL_GROUP_BY`` holds). Only the event rows of an anomaly window (days, not months) are
read into Python; everything over longer spans is a ``GROUP BY`` of at most a few thousand rows.

Answers are cached per query while the events are unchanged: the key holds ``MAX(id)`` and
``MAX(updated_at)`` (both index lookups), so a new event or a relabel shows at once; deletions
(the nightly clean-up, another process) show within ``CACHE_TTL_S``.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.functions import FunctionElement

from detection_service.errors import Invalid
from detection_service.services.event_history import parse_when
from schemas.analytics import (
    DELIVERY_TYPES,
    GROUP_BYS,
    PERIODS,
    SENSITIVITIES,
    WEEKDAYS,
    Anomalies,
    Anomaly,
    Baseline,
    BusyHour,
    DeliveryPattern,
    DeliveryWindow,
    DurationStats,
    Patterns,
    Statistics,
    StatisticsGroup,
)
from schemas.db import DetectionEvent, ObjectType, utcnow

T = TypeVar("T")

PERIOD_SPANS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
MAX_WINDOW = timedelta(days=366)
CACHE_TTL_S = 60.0
CACHE_SIZE = 128

# Delivery windows and weekdays: the fewest half-hours (days) holding this share of arrivals.
COVERAGE = 0.8
# --- anomalies -------------------------------------------------------------------------------
MIN_HISTORY_DAYS = 14
MIN_HISTORY_EVENTS = 50
# rare_hour / package_taken: flagged when the smoothed "events per week in this slot" is below.
RARE_P = {"low": 0.02, "medium": 0.05, "high": 0.12}
RARE_PRIOR = 0.25  # pseudo-count: a slot never seen still has some chance
# loitering: longer than median + K x robust spread (and never under LOITER_FLOOR_S).
LOITER_K = {"low": 8.0, "medium": 5.0, "high": 3.0}
LOITER_FLOOR_S = 120.0
MIN_DWELL_SAMPLES = 20
# burst: at least this many events within BURST_WINDOW_S that a Poisson rate from the baseline
# makes this unlikely.
BURST_WINDOW_S = 120
BURST_MIN = {"low": 8, "medium": 5, "high": 4}
BURST_P = {"low": 1e-6, "medium": 1e-4, "high": 1e-3}
# package_taken: a person event this close to the removal took it; flagged alone only at high.
PERSON_NEAR_S = 15
MIN_REMOVALS = 20
MERGE_RARE_S = 15 * 60  # rare-hour events this close together are one visit


# --- portable SQL pieces ------------------------------------------------------------------------


class _EpochSeconds(FunctionElement[int]):
    """Seconds since 1970-01-01 of a naive-UTC DATETIME column (no session time zone involved)."""

    type = sa.Integer()
    inherit_cache = True
    name = "epoch_seconds"


@compiles(_EpochSeconds)
def _epoch_sqlite(element: _EpochSeconds, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_EpochSeconds, "mysql")
@compiles(_EpochSeconds, "mariadb")
def _epoch_mysql(element: _EpochSeconds, compiler: Any, **kw: Any) -> str:
    return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {compiler.process(element.clauses, **kw)})"


class _IntDiv(FunctionElement[int]):
    """Integer division of two non-negative integers."""

    type = sa.Integer()
    inherit_cache = True
    name = "int_div"


@compiles(_IntDiv)
def _div_sqlite(element: _IntDiv, compiler: Any, **kw: Any) -> str:
    a, b = element.clauses.clauses
    return f"(({compiler.process(a, **kw)}) / ({compiler.process(b, **kw)}))"


@compiles(_IntDiv, "mysql")
@compiles(_IntDiv, "mariadb")
def _div_mysql(element: _IntDiv, compiler: Any, **kw: Any) -> str:
    a, b = element.clauses.clauses
    return f"(({compiler.process(a, **kw)}) DIV ({compiler.process(b, **kw)}))"


def _int(value: int) -> Any:
    return sa.literal_column(str(int(value)), sa.Integer())


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def offset_segments(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """[(from_utc, offset_s)] covering [start, end): where the zone's UTC offset changes (hourly
    resolution, as every real zone changes on an hour or half-hour... checked every 15 minutes)."""

    def offset(at: datetime) -> int:
        return int(at.replace(tzinfo=UTC).astimezone(zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    segments = [(start, offset(start))]
    # Walk in days; on a change, find the 15-minute step where it happened.
    day = start
    while day < end:
        nxt = min(day + timedelta(days=1), end)
        if offset(nxt) != segments[-1][1]:
            step = day
            while step < nxt and offset(step) == segments[-1][1]:
                step += timedelta(minutes=15)
            segments.append((step, offset(step)))
        day = nxt
    return segments


def local_seconds(column: Any, segments: list[tuple[datetime, int]]) -> Any:
    """SQL: seconds since the epoch of ``column`` as local wall-clock time."""
    epoch = _EpochSeconds(column)
    if len(segments) == 1:
        return epoch + _int(segments[0][1])
    whens = [(column < segments[i + 1][0], _int(off)) for i, (_, off) in enumerate(segments[:-1])]
    return epoch + sa.case(*whens, else_=_int(segments[-1][1]))


def local_hour(seconds: Any) -> Any:
    return _IntDiv(seconds, _int(3600)) % 24


def local_weekday(seconds: Any) -> Any:  # Monday = 0 (1970-01-01 was a Thursday)
    return (_IntDiv(seconds, _int(86400)) + 3) % 7


def local_day(seconds: Any) -> Any:  # days since 1970-01-01
    return _IntDiv(seconds, _int(86400))


def local_half_hour(seconds: Any) -> Any:  # 0..47
    return _IntDiv(seconds, _int(1800)) % 48


# --- helpers -------------------------------------------------------------------------------------


def _float(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _hhmm(half_hour: int) -> str:
    return f"{half_hour // 2:02d}:{30 * (half_hour % 2):02d}"


def covering_runs(counts: list[int], coverage: float = COVERAGE) -> list[tuple[int, int]]:
    """Runs [first, last] of indexes that together hold at least ``coverage`` of the total: the
    biggest slots are taken until the share is reached, one-slot gaps between taken slots that
    saw arrivals are closed, and each run grows into neighbours holding at least half its mean."""
    total = sum(counts)
    if not total:
        return []
    chosen: set[int] = set()
    running = 0
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        if running >= coverage * total:
            break
        chosen.add(i)
        running += counts[i]
    for i in range(1, len(counts) - 1):
        if i not in chosen and i - 1 in chosen and i + 1 in chosen and counts[i] > 0:
            chosen.add(i)
    runs: list[list[int]] = []
    for i in sorted(chosen):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    for run in runs:
        mean = sum(counts[run[0] : run[1] + 1]) / (run[1] - run[0] + 1)
        while run[0] > 0 and counts[run[0] - 1] > 0 and counts[run[0] - 1] >= mean / 2:
            run[0] -= 1
        while run[1] < len(counts) - 1 and counts[run[1] + 1] > 0 and counts[run[1] + 1] >= mean / 2:
            run[1] += 1
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def duration_stats(histogram: Iterable[tuple[float, int]]) -> DurationStats:
    """From (value, count) pairs: nearest-rank quantiles, mean, max."""
    pairs = sorted((float(v), int(n)) for v, n in histogram if v is not None and n)
    n = sum(c for _, c in pairs)
    if not n:
        return DurationStats(count=0, median_s=None, p90_s=None, mean_s=None, max_s=None)

    def quantile(q: float) -> float:
        rank, seen = max(1, math.ceil(q * n)), 0
        for value, count in pairs:
            seen += count
            if seen >= rank:
                return value
        return pairs[-1][0]

    mean = sum(v * c for v, c in pairs) / n
    return DurationStats(
        count=n, median_s=quantile(0.5), p90_s=quantile(0.9), mean_s=round(mean, 1), max_s=pairs[-1][0]
    )


def weighted_median(pairs: Iterable[tuple[float, int]]) -> float:
    """Median of values given as (value, count) pairs (the lower one of an even count)."""
    ordered = sorted((float(v), int(n)) for v, n in pairs if n)
    total, seen = sum(n for _, n in ordered), 0
    for value, n in ordered:
        seen += n
        if 2 * seen >= total:
            return value
    return 0.0


def poisson_tail(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    term = math.exp(-lam)
    below = term
    for i in range(1, k):
        term *= lam / i
        below += term
    return max(0.0, 1.0 - below) if below < 0.999999 else _tail_direct(k, lam)


def _tail_direct(k: int, lam: float) -> float:
    # Sum the upper tail directly where 1 - P(X < k) would lose every digit.
    term = math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1)) if lam > 0 else 0.0
    total = 0.0
    i = k
    while term > 1e-300 and i < k + 1000:
        total += term
        i += 1
        term *= lam / i
    return total


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # naive UTC
    end: datetime


def resolve_window(period: str, start: str | None, end: str | None, now: datetime | None = None) -> Window:
    """``period`` = the span ending at ``end`` (default: the end of the current minute), unless
    ``start`` is given: then [start, start + period) or [start, end)."""
    if period not in PERIODS:
        raise Invalid(
            f"period must be one of {list(PERIODS)}, got {period!r}",
            {"field": "period", "value": period, "allowed": list(PERIODS)},
            code="INVALID_PERIOD",
        )
    span = PERIOD_SPANS[period]
    start_at = parse_when(start, "start") if start else None
    end_at = parse_when(end, "end", end_of_day=True) if end else None
    if start_at is None and end_at is None:
        now = now or utcnow()
        end_at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if start_at is None:
        start_at = end_at - span  # type: ignore[operator]
    if end_at is None:
        end_at = start_at + span
    if start_at >= end_at:
        raise Invalid(
            "start must be before end",
            {"field": "start", "start": start_at.isoformat(), "end": end_at.isoformat()},
            code="INVALID_DATE_RANGE",
        )
    if end_at - start_at > MAX_WINDOW:
        raise Invalid(
            f"the window may span at most {MAX_WINDOW.days} days",
            {"field": "end", "start": start_at.isoformat(), "end": end_at.isoformat()},
            code="INVALID_DATE_RANGE",
        )
    return Window(start_at, end_at)


def _camera(camera_id: int | None) -> tuple[Any, ...]:
    """The WHERE condition of a camera filter (none for every camera)."""
    return () if camera_id is None else (DetectionEvent.camera_id == camera_id,)


def _check_int(name: str, value: int, low: int, high: int, code: str) -> None:
    if not low <= value <= high:
        raise Invalid(
            f"{name} must be between {low} and {high}, got {value}",
            {"field": name, "value": value, "min": low, "max": high},
            code=code,
        )


# --- the service ----------------------------------------------------------------------------------


class AnalyticsService:
    def __init__(self, session_factory: sessionmaker[Session], time_zone: str = "UTC", cache: bool = True) -> None:
        self.session_factory = session_factory
        self.time_zone = time_zone
        self.zone = zone_of(time_zone)
        self.cache_enabled = cache
        self._cache: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._types: dict[int, str] = {}

    # -- plumbing -------------------------------------------------------------------------------

    def _type_codes(self, session: Session, need: Iterable[int] = ()) -> dict[int, str]:
        if not self._types or any(t not in self._types for t in need):
            self._types = dict(session.execute(sa.select(ObjectType.id, ObjectType.code)).all())
        return self._types

    def _cached(self, session: Session, key: tuple, compute: Callable[[], T]) -> T:
        if not self.cache_enabled:
            return compute()
        stamp = tuple(
            session.execute(sa.select(sa.func.max(DetectionEvent.id), sa.func.max(DetectionEvent.updated_at))).one()
        )
        full_key = (*key, stamp)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(full_key)
            if hit is not None and now - hit[0] < CACHE_TTL_S:
                self._cache.move_to_end(full_key)
                return hit[1]
        value = compute()
        with self._lock:
            self._cache[full_key] = (now, value)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _local(self, at: datetime) -> datetime:
        return at.replace(tzinfo=UTC).astimezone(self.zone)

    # -- statistics -----------------------------------------------------------------------------

    def statistics(
        self,
        period: str = "week",
        group_by: str = "type",
        start: str | None = None,
        end: str | None = None,
        now: datetime | None = None,
        *,
        camera_id: int | None = None,
    ) -> Statistics:
        """``camera_id``: only that camera's events (docs/cameras.md); None: every camera."""
        window = resolve_window(period, start, end, now)
        if group_by not in GROUP_BYS:
            raise Invalid(
                f"group_by must be one of {list(GROUP_BYS)}, got {group_by!r}",
                {"field": "group_by", "value": group_by, "allowed": list(GROUP_BYS)},
                code="INVALID_GROUP_BY",
            )
        with self.session_factory() as session:
            return self._cached(
                session,
                ("statistics", period, group_by, window, camera_id),
                lambda: self._statistics(session, period, group_by, window, camera_id),
            )

    def _statistics(
        self, session: Session, period: str, group_by: str, window: Window, camera_id: int | None = None
    ) -> Statistics:
        e = DetectionEvent
        secs = local_seconds(e.detected_at, offset_segments(self.zone, window.start, window.end))
        bucket = {
            "type": e.object_type_id,
            "hour": local_hour(secs),
            "weekday": local_weekday(secs),
            "day": local_day(secs),
        }[group_by]
        inner = (
            sa.select(
                bucket.label("bucket"),
                e.confidence_score.label("conf"),
                e.tracking_duration.label("dur"),
                e.is_false_positive.label("fp"),
                e.original_type_id.label("orig"),
            )
            .where(
                e.detected_at >= window.start,
                e.detected_at < window.end,
                *([e.camera_id == camera_id] if camera_id is not None else []),
            )
            .subquery("events")
        )
        rows = session.execute(
            sa.select(
                inner.c.bucket,
                sa.func.count().label("n"),
                sa.func.avg(inner.c.conf).label("conf"),
                sa.func.avg(inner.c.dur).label("dur"),
                sa.func.sum(sa.case((inner.c.fp.is_(True), 1), else_=0)).label("fp"),
                sa.func.sum(sa.case((inner.c.orig.is_not(None), 1), else_=0)).label("relabelled"),
            ).group_by(inner.c.bucket)
        ).all()
        by_bucket = {int(r.bucket): r for r in rows}
        if group_by == "type":
            codes = self._type_codes(session, by_bucket)
            keys = [(tid, codes.get(tid, str(tid))) for tid in sorted(set(codes) | set(by_bucket))]
        elif group_by == "hour":
            keys = [(h, f"{h:02d}") for h in range(24)]
        elif group_by == "weekday":
            keys = list(enumerate(WEEKDAYS))
        else:
            first = self._local(window.start).date()
            last = self._local(window.end - timedelta(seconds=1)).date()
            epoch = date(1970, 1, 1)
            keys = [
                ((first - epoch).days + i, (first + timedelta(days=i)).isoformat())
                for i in range((last - first).days + 1)
            ]
        groups = []
        for value, key in keys:
            r = by_bucket.get(value)
            n = int(r.n) if r else 0
            fp, relabelled = (int(r.fp or 0), int(r.relabelled or 0)) if r else (0, 0)
            groups.append(
                StatisticsGroup(
                    key=key,
                    count=n,
                    mean_confidence=_float(r.conf) if r else None,
                    mean_duration_s=_float(r.dur, 1) if r else None,
                    reclassified=relabelled,
                    reclassified_share=_share(relabelled, n),
                    false_positives=fp,
                    false_positive_share=_share(fp, n),
                )
            )
        return Statistics(
            period=period,
            group_by=group_by,
            start=window.start,
            end=window.end,
            time_zone=self.time_zone,
            total=sum(g.count for g in groups),
            groups=groups,
        )

    # -- patterns -------------------------------------------------------------------------------

    def patterns(
        self,
        period: str = "month",
        start: str | None = None,
        end: str | None = None,
        now: datetime | None = None,
        camera_id: int | None = None,
    ) -> Patterns:
        """``camera_id``: that camera's events only (docs/cameras.md); None: every camera."""
        window = resolve_window(period, start, end, now)
        with self.session_factory() as session:
            return self._cached(
                session,
                ("patterns", period, window, camera_id),
                lambda: self._patterns(session, period, window, _camera(camera_id)),
            )

    def _slot_counts(self, session: Session, column: Any, window_col: Any, window: Window, *conds: Any) -> list[Any]:
        """(type id, weekday, half-hour, count) of the events in the window (false positives out)."""
        e = DetectionEvent
        secs = local_seconds(column, offset_segments(self.zone, window.start - timedelta(days=1), window.end))
        inner = (
            sa.select(e.object_type_id.label("tid"), local_weekday(secs).label("wd"), local_half_hour(secs).label("hh"))
            .where(window_col >= window.start, window_col < window.end, e.is_false_positive.is_(False), *conds)
            .subquery("slots")
        )
        return session.execute(
            sa.select(inner.c.tid, inner.c.wd, inner.c.hh, sa.func.count().label("n")).group_by(
                inner.c.tid, inner.c.wd, inner.c.hh
            )
        ).all()

    def _duration_histogram(
        self, session: Session, type_id: int | None, window: Window, cam: tuple[Any, ...] = ()
    ) -> list[tuple[int, int]]:
        if type_id is None:
            return []
        e = DetectionEvent
        rows = session.execute(
            sa.select(e.tracking_duration, sa.func.count())
            .where(
                e.object_type_id == type_id,
                e.detected_at >= window.start,
                e.detected_at < window.end,
                e.tracking_duration.is_not(None),
                e.ended_at.is_not(None),
                e.is_false_positive.is_(False),
                *cam,
            )
            .group_by(e.tracking_duration)
        ).all()
        return [(int(v), int(n)) for v, n in rows]

    def _patterns(self, session: Session, period: str, window: Window, cam: tuple[Any, ...] = ()) -> Patterns:
        rows = self._slot_counts(session, DetectionEvent.detected_at, DetectionEvent.detected_at, window, *cam)
        codes = self._type_codes(session, {int(r.tid) for r in rows})
        ids = {code: tid for tid, code in codes.items()}
        hist: dict[str, list[list[int]]] = {code: [[0] * 24 for _ in range(7)] for code in codes.values()}
        halves: dict[str, list[int]] = {code: [0] * 48 for code in codes.values()}
        days: dict[str, list[int]] = {code: [0] * 7 for code in codes.values()}
        for r in rows:
            code = codes.get(int(r.tid), str(r.tid))
            wd, hh, n = int(r.wd), int(r.hh), int(r.n)
            hist.setdefault(code, [[0] * 24 for _ in range(7)])[wd][hh // 2] += n
            halves.setdefault(code, [0] * 48)[hh] += n
            days.setdefault(code, [0] * 7)[wd] += n
        overall = [[sum(hist[c][wd][h] for c in hist) for h in range(24)] for wd in range(7)]
        busiest = sorted(
            ((overall[wd][h], wd, h) for wd in range(7) for h in range(24) if overall[wd][h]),
            key=lambda t: (-t[0], t[1], t[2]),
        )[:5]
        by_type = {}
        for code, grid in hist.items():
            per_hour = [sum(grid[wd][h] for wd in range(7)) for h in range(24)]
            by_type[code] = [h for h in sorted(range(24), key=lambda h: (-per_hour[h], h)) if per_hour[h]][:3]
        windows = {}
        for code in DELIVERY_TYPES:
            counts = halves.get(code, [0] * 48)
            total = sum(counts)
            runs = covering_runs(counts)
            wins = [
                DeliveryWindow(
                    start=_hhmm(a),
                    end=_hhmm(b + 1),
                    arrivals=sum(counts[a : b + 1]),
                    share=round(sum(counts[a : b + 1]) / total, 4),
                )
                for a, b in runs
            ]
            wd_runs = covering_runs(days.get(code, [0] * 7))
            weekdays = [WEEKDAYS[i] for a, b in wd_runs for i in range(a, b + 1)]
            windows[code] = DeliveryPattern(arrivals=total, coverage=COVERAGE, windows=wins, weekdays=weekdays)
        return Patterns(
            period=period,
            start=window.start,
            end=window.end,
            time_zone=self.time_zone,
            events=sum(int(r.n) for r in rows),
            histograms=hist,
            busiest_hours=[BusyHour(weekday=WEEKDAYS[wd], hour=h, count=n) for n, wd, h in busiest],
            busiest_hours_by_type=by_type,
            delivery_windows=windows,
            package_stay=duration_stats(self._duration_histogram(session, ids.get("package"), window, cam)),
            person_dwell=duration_stats(self._duration_histogram(session, ids.get("person"), window, cam)),
        )

    # -- anomalies ------------------------------------------------------------------------------

    def anomalies(
        self,
        sensitivity: str = "medium",
        days: int = 7,
        baseline_days: int = 90,
        limit: int = 100,
        now: datetime | None = None,
        camera_id: int | None = None,
    ) -> Anomalies:
        """``camera_id``: that camera's events against that camera's own history; None: every camera."""
        if sensitivity not in SENSITIVITIES:
            raise Invalid(
                f"sensitivity must be one of {list(SENSITIVITIES)}, got {sensitivity!r}",
                {"field": "sensitivity", "value": sensitivity, "allowed": list(SENSITIVITIES)},
                code="INVALID_SENSITIVITY",
            )
        _check_int("days", days, 1, 31, "INVALID_DAYS")
        _check_int("baseline_days", baseline_days, MIN_HISTORY_DAYS, 365, "INVALID_BASELINE_DAYS")
        _check_int("limit", limit, 1, 500, "INVALID_LIMIT")
        now = now or utcnow()
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        # The window: the last `days` local days, today included, from local midnight.
        first_day = self._local(now).date() - timedelta(days=days - 1)
        local_midnight = datetime.combine(first_day, datetime.min.time(), tzinfo=self.zone)
        window = Window(local_midnight.astimezone(UTC).replace(tzinfo=None), end)
        history = Window(window.start - timedelta(days=baseline_days), window.start)
        with self.session_factory() as session:
            return self._cached(
                session,
                ("anomalies", sensitivity, limit, window, history, camera_id),
                lambda: self._anomalies(session, sensitivity, limit, window, history, _camera(camera_id)),
            )

    def _anomalies(
        self, session: Session, sens: str, limit: int, window: Window, history: Window, cam: tuple[Any, ...] = ()
    ) -> Anomalies:
        e = DetectionEvent
        codes = self._type_codes(session)
        ids = {code: tid for tid, code in codes.items()}
        person, package = ids.get("person"), ids.get("package")
        first, count = session.execute(
            sa.select(sa.func.min(e.detected_at), sa.func.count()).where(
                e.detected_at >= history.start, e.detected_at < history.end, e.is_false_positive.is_(False), *cam
            )
        ).one()
        covered = (history.end - first).total_seconds() / 86400 if first else 0.0
        baseline = Baseline(start=history.start, end=history.end, days=round(covered, 1), events=int(count or 0))
        answer = {
            "sensitivity": sens,
            "start": window.start,
            "end": window.end,
            "time_zone": self.time_zone,
            "baseline": baseline,
        }
        if covered < MIN_HISTORY_DAYS or baseline.events < MIN_HISTORY_EVENTS:
            return Anomalies(
                **answer,
                insufficient_history=True,
                total=0,
                anomalies=[],
                message=(
                    f"Not enough history to tell what is unusual: {baseline.events} event(s) over {covered:.1f} day(s) "
                    f"before {window.start:%Y-%m-%d %H:%M} UTC; anomalies need at least {MIN_HISTORY_DAYS} days and "
                    f"{MIN_HISTORY_EVENTS} events."
                ),
            )
        weeks = covered / 7
        slots = [[0] * 24 for _ in range(7)]  # baseline visits per local (weekday, hour)
        for r in self._slot_counts(session, e.detected_at, e.detected_at, history, *cam):
            slots[int(r.wd)][int(r.hh) // 2] += int(r.n)
        removals = [0] * 24
        if package is not None:
            for r in self._slot_counts(session, e.ended_at, e.ended_at, history, e.object_type_id == package, *cam):
                removals[int(r.hh) // 2] += int(r.n)
        dwell = self._duration_histogram(session, person, history, cam)
        events = session.execute(
            sa.select(e.id, e.object_type_id, e.detected_at, e.ended_at, e.tracking_duration)
            .where(e.detected_at >= window.start, e.detected_at < window.end, e.is_false_positive.is_(False), *cam)
            .order_by(e.detected_at, e.id)
        ).all()
        taken = (
            []
            if package is None
            else session.execute(
                sa.select(e.id, e.detected_at, e.ended_at, e.tracking_duration)
                .where(
                    e.object_type_id == package,
                    e.ended_at >= window.start,
                    e.ended_at < window.end,
                    e.is_false_positive.is_(False),
                    *cam,
                )
                .order_by(e.ended_at, e.id)
            ).all()
        )
        found: list[Anomaly] = []
        found += self._rare_hours(events, slots, weeks, sens, codes)
        found += self._loitering(events, dwell, sens, person)
        found += self._bursts(events, slots, weeks, sens)
        found += self._taken(taken, events, removals, slots, weeks, sens, person)
        found.sort(key=lambda a: (-a.score, a.at))
        kinds = defaultdict(int)
        for a in found:
            kinds[a.kind] += 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing unusual"
        return Anomalies(
            **answer,
            insufficient_history=False,
            total=len(found),
            anomalies=found[:limit],
            message=(
                f"{summary} since {self._local(window.start):%Y-%m-%d %H:%M} ({self.time_zone}), against "
                f"{baseline.events} event(s) over {covered:.0f} day(s) before."
            ),
        )

    # Smoothed events per week in a (weekday, hour) slot: the slot, half of each neighbouring hour,
    # half the mean of the same hour on the other weekdays (a Saturday delivery at the usual hour
    # is not rare just because Saturdays are quiet).
    @staticmethod
    def _slot_rate(slots: list[list[int]], wd: int, h: int, weeks: float) -> tuple[float, float]:
        row = slots[wd]
        same_hour_elsewhere = sum(slots[w][h] for w in range(7) if w != wd) / 6
        eff = row[h] + 0.5 * (row[(h - 1) % 24] + row[(h + 1) % 24]) + 0.5 * same_hour_elsewhere
        return min(1.0, (eff + RARE_PRIOR) / (weeks + 1)), eff

    def _when(self, at: datetime) -> tuple[datetime, str, str]:
        local = self._local(at)
        return (
            local,
            local.strftime("%Y-%m-%d %H:%M"),
            f"{local:%H:%M} on {WEEKDAYS[local.weekday()].capitalize()} {local:%Y-%m-%d}",
        )

    def _rare_hours(
        self, events: list[Any], slots: list[list[int]], weeks: float, sens: str, codes: dict[int, str]
    ) -> list[Anomaly]:
        flagged = []
        for ev in events:
            local = self._local(ev.detected_at)
            p, eff = self._slot_rate(slots, local.weekday(), local.hour, weeks)
            if p < RARE_P[sens]:
                flagged.append((ev, p, eff))
        out: list[Anomaly] = []
        group: list[tuple[Any, float, float]] = []
        for item in [*flagged, None]:
            if (
                item is not None
                and group
                and (item[0].detected_at - group[-1][0].detected_at).total_seconds() <= MERGE_RARE_S
            ):
                group.append(item)
                continue
            if group:
                ev0, p, eff = min(group, key=lambda g: g[1])
                local, stamp, when = self._when(group[0][0].detected_at)
                kinds = sorted({codes.get(g[0].object_type_id, "event") for g in group})
                wd = WEEKDAYS[local.weekday()].capitalize()
                out.append(
                    Anomaly(
                        kind="rare_hour",
                        event_ids=[g[0].id for g in group],
                        score=round(RARE_P[sens] / max(p, 1e-6), 2),
                        at=group[0][0].detected_at,
                        local_time=stamp,
                        message=(
                            f"{' and '.join(kinds).capitalize()} at {when}: this door almost never sees anyone "
                            f"around {local.hour:02d}:00 on a {wd} (about {eff / max(weeks, 1e-9):.2f} visits a week "
                            f"in {weeks:.0f} weeks of history)."
                        ),
                    )
                )
            group = [item] if item is not None else []
        return out

    def _loitering(
        self, events: list[Any], dwell: list[tuple[int, int]], sens: str, person: int | None
    ) -> list[Anomaly]:
        samples = sum(n for _, n in dwell)
        if person is None or samples < MIN_DWELL_SAMPLES:
            return []
        median = weighted_median(dwell)
        mad = weighted_median([(abs(v - median), n) for v, n in dwell])
        spread = max(1.4826 * mad, 0.25 * median, 5.0)
        threshold = max(LOITER_FLOOR_S, median + LOITER_K[sens] * spread)
        out = []
        for ev in events:
            if ev.object_type_id != person or ev.tracking_duration is None or ev.tracking_duration <= threshold:
                continue
            _, stamp, when = self._when(ev.detected_at)
            minutes = ev.tracking_duration / 60
            out.append(
                Anomaly(
                    kind="loitering",
                    event_ids=[ev.id],
                    score=round(ev.tracking_duration / threshold, 2),
                    at=ev.detected_at,
                    local_time=stamp,
                    message=(
                        f"A person stayed at the door for {minutes:.0f} min from {when}; people usually stay "
                        f"{median:.0f} s (flagged above {threshold:.0f} s)."
                    ),
                )
            )
        return out

    def _bursts(self, events: list[Any], slots: list[list[int]], weeks: float, sens: str) -> list[Anomaly]:
        out: list[Anomaly] = []
        times = [ev.detected_at for ev in events]
        j = 0
        clusters: list[list[int]] = []  # [first, last, threshold]
        for i in range(len(events)):
            j = max(j, i)
            while j + 1 < len(events) and (times[j + 1] - times[i]).total_seconds() <= BURST_WINDOW_S:
                j += 1
            k = j - i + 1
            if k < BURST_MIN[sens]:
                continue
            local = self._local(times[i])
            row = slots[local.weekday()]
            per_hour = (row[local.hour] + RARE_PRIOR) / max(weeks, 1e-9)
            lam = per_hour * BURST_WINDOW_S / 3600
            need = BURST_MIN[sens]
            while poisson_tail(need, lam) >= BURST_P[sens] and need < 10_000:
                need += 1
            if k < need:
                continue
            if clusters and i <= clusters[-1][1]:
                clusters[-1][1] = max(clusters[-1][1], j)
                clusters[-1][2] = min(clusters[-1][2], need)
            else:
                clusters.append([i, j, need])
        for a, b, need in clusters:
            group = events[a : b + 1]
            _, stamp, when = self._when(group[0].detected_at)
            span = (group[-1].detected_at - group[0].detected_at).total_seconds()
            out.append(
                Anomaly(
                    kind="burst",
                    event_ids=[ev.id for ev in group],
                    score=round(len(group) / need, 2),
                    at=group[0].detected_at,
                    local_time=stamp,
                    message=(
                        f"{len(group)} events within {span / 60:.1f} min from {when}; at that hour this door "
                        f"rarely sees more than {need - 1} in {BURST_WINDOW_S // 60} minutes."
                    ),
                )
            )
        return out

    def _taken(
        self,
        taken: list[Any],
        events: list[Any],
        removals: list[int],
        slots: list[list[int]],
        weeks: float,
        sens: str,
        person: int | None,
    ) -> list[Anomaly]:
        persons = [ev for ev in events if ev.object_type_id == person]  # in detected_at order
        starts = [ev.detected_at for ev in persons]
        longest = max(((ev.ended_at or ev.detected_at) - ev.detected_at for ev in persons), default=timedelta(0))
        near_s = timedelta(seconds=PERSON_NEAR_S)
        total_removals = sum(removals)
        out = []
        for pkg in taken:
            local = self._local(pkg.ended_at)
            h = local.hour
            if total_removals >= MIN_REMOVALS:
                eff = removals[h] + 0.5 * (removals[(h - 1) % 24] + removals[(h + 1) % 24])
                # Removals per week in this hour over the whole week (removals are too few per weekday).
                p = min(1.0, (eff + RARE_PRIOR) / (weeks + 1))
                usual = f"{eff:.0f} of {total_removals} removals in the history happened around {h:02d}:00"
            else:
                p, eff = self._slot_rate(slots, local.weekday(), h, weeks)
                usual = f"the door sees about {eff / max(weeks, 1e-9):.2f} visits a week around {h:02d}:00"
            # Person events seen from 15 s before to 15 s after the removal (bisected: only those
            # that started within the longest person event before it can overlap).
            lo = bisect.bisect_left(starts, pkg.ended_at - near_s - longest)
            hi = bisect.bisect_right(starts, pkg.ended_at + near_s)
            near = [ev for ev in persons[lo:hi] if pkg.ended_at <= (ev.ended_at or ev.detected_at) + near_s]
            unusual = p < RARE_P[sens]
            if not unusual and not (near and sens == "high"):
                continue
            _, stamp, when = self._when(pkg.ended_at)
            score = RARE_P[sens] / max(p, 1e-6) if unusual else 1.0
            stay = f" after {pkg.tracking_duration / 60:.0f} min at the door" if pkg.tracking_duration else ""
            who = f", while person event {near[0].id} was at the door" if near else ", with no person seen"
            why = f"an unusual hour ({usual})" if unusual else "within seconds of a person at the door"
            out.append(
                Anomaly(
                    kind="package_taken",
                    event_ids=[pkg.id, *(ev.id for ev in near)],
                    score=round(max(score, 1.0), 2),
                    at=pkg.ended_at,
                    local_time=stamp,
                    message=f"Package (event {pkg.id}) was taken at {when}{stay}{who}: {why}.",
                )
            )
        return out
