"""Analytics reports: what one local day or week at the door looked like, as stored documents.

Four types (``schemas.reports.REPORT_CADENCE``): ``daily_summary`` and ``security_report`` per
local day, ``weekly_pattern`` and ``visitor_analysis`` per local week (Monday to Sunday), all in
the alert time zone. The content reuses ``AnalyticsService`` (statistics, patterns, anomalies) on
the period's exact window; what it does not compute (the day's events, packages left overnight,
component outages) is read here. Each report is stored in the object store as JSON, a CSV (UTF-8
with a BOM, so Excel reads Korean) and a self-contained HTML page (inline matplotlib PNGs as data
URIs, thumbnails as signed links), under ``storage.keys.report_root``.

The Dagster assets (assets/reports.py) build and store them; ``GET /api/analytics/reports`` serves
the stored ones and, for a period with no report yet, hands back the ``report_generate`` batch job
that will make it (the pending one when there is one: never two). See docs/analytics.md, "Reports".
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.batch_jobs import BatchJobs
from detection_service.errors import Invalid
from detection_service.services.analytics import AnalyticsService, duration_stats, zone_of
from detection_service.services.visitors import VisitorService
from detection_service.storage import ObjectStore
from detection_service.storage.base import ObjectNotFound
from detection_service.storage.keys import report_key, report_root
from schemas.analytics import WEEKDAYS
from schemas.batch_jobs import BatchJobView, ReportGenerate
from schemas.db import DetectionEvent, EventImage, ObjectType, SystemStatusLog, utcnow
from schemas.reports import (
    REPORT_CADENCE,
    REPORT_FORMATS,
    REPORT_TYPES,
    REPORTS_START,
    Report,
    ReportChart,
    ReportTable,
    ReportThumbnail,
    period_days,
    period_key,
)

TITLES = {
    "daily_summary": "Daily summary",
    "weekly_pattern": "Weekly pattern",
    "visitor_analysis": "Visitor analysis",
    "security_report": "Security report",
}
MAX_EVENT_ROWS = 2000  # rows of an event list in the JSON/CSV (a day of this door holds a few hundred)
HTML_ROWS = 12  # rows of a table the HTML page shows (the rest: the CSV), so it prints on 1-2 pages
THUMBNAILS = 6
STORED_LINK_TTL = timedelta(days=7)  # links in the stored report.html (the endpoint re-signs them)
OVERNIGHT_LOOKBACK = timedelta(days=14)  # packages still at the door at the day's end, arrived since
DOWN_STATUSES = ("stopped", "error", "down")
SIGNIFICANT_COUNTS = ("events", "false_positives", "reclassified")


@dataclass(frozen=True, slots=True)
class Served:
    """A stored report in the asked format: ``body`` is the Report (json), CSV bytes or HTML text."""

    report_type: str
    period: str
    format: str
    body: Any


@dataclass(frozen=True, slots=True)
class Pending:
    """No report for that period yet: the batch job that will make it (``submitted``: new now)."""

    report_type: str
    period: str
    job: BatchJobView
    submitted: bool


def _local_stamp(at: datetime, zone: Any) -> str:
    return at.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _num(value: Any, digits: int = 2) -> Any:
    return None if value is None else round(float(value), digits)


class ReportService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore | None,
        time_zone: str,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.time_zone = time_zone
        self.zone = zone_of(time_zone)
        # Reports read the database as it is now: no answer cache.
        self.analytics = AnalyticsService(session_factory, time_zone, cache=False)
        self.jobs = BatchJobs(session_factory)
        self._now = now

    # ------------------------------------------------------------------ periods

    def window(self, report_type: str, key: str) -> tuple[datetime, datetime]:
        """[start, end) in naive UTC of a partition: local midnight to local midnight."""
        first, after = period_days(REPORT_CADENCE[report_type], key)
        return self._utc_midnight(first), self._utc_midnight(after)

    def _utc_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC).replace(tzinfo=None)

    def latest_period(self, report_type: str, now: datetime | None = None) -> str:
        """The last period that is over (yesterday, last week) in the time zone."""
        today = (now or self._now()).replace(tzinfo=UTC).astimezone(self.zone).date()
        cadence = REPORT_CADENCE[report_type]
        return period_key(cadence, (today - timedelta(days=1 if cadence == "day" else 7)).isoformat())

    def check_request(self, report_type: str, period: str | None, fmt: str) -> tuple[str, str, str]:
        """(type, partition key, format) or ``Invalid`` naming the bad value."""
        if report_type not in REPORT_TYPES:
            raise Invalid(
                f"type must be one of {list(REPORT_TYPES)}, got {report_type!r}",
                {"field": "type", "value": report_type, "allowed": list(REPORT_TYPES)},
                code="INVALID_REPORT_TYPE",
            )
        if fmt not in REPORT_FORMATS:
            raise Invalid(
                f"format must be one of {list(REPORT_FORMATS)}, got {fmt!r}",
                {"field": "format", "value": fmt, "allowed": list(REPORT_FORMATS)},
                code="INVALID_FORMAT",
            )
        if period is None or not period.strip():
            return report_type, self.latest_period(report_type), fmt
        cadence = REPORT_CADENCE[report_type]
        try:
            key = period_key(cadence, period)
        except ValueError as exc:
            raise Invalid(str(exc), {"field": "period", "value": period}, code="INVALID_PERIOD") from None
        if date.fromisoformat(key) < REPORTS_START:
            raise Invalid(
                f"reports start with {REPORTS_START.isoformat()}, got {period!r}",
                {"field": "period", "value": period, "min": REPORTS_START.isoformat()},
                code="INVALID_PERIOD",
            )
        _, end = self.window(report_type, key)
        if end > self._now():
            latest = self.latest_period(report_type)
            raise Invalid(
                f"the {cadence} {key} is not over yet (it ends {_local_stamp(end, self.zone)} {self.time_zone}); "
                f"the latest report is {latest}",
                {"field": "period", "value": period, "ends": end.isoformat(), "latest": latest},
                code="INVALID_PERIOD",
            )
        return report_type, key, fmt

    # ------------------------------------------------------------------ building

    def build(self, report_type: str, key: str) -> Report:
        """The report of one partition, from the database as it is now."""
        start, end = self.window(report_type, key)
        with self.session_factory() as session:
            codes = dict(session.execute(sa.select(ObjectType.id, ObjectType.code)).all())
        stats = self.analytics.statistics("day", "type", start.isoformat(), end.isoformat())
        counts = {"events": stats.total}
        counts.update({f"type:{g.key}": g.count for g in stats.groups})
        counts["false_positives"] = sum(g.false_positives for g in stats.groups)
        counts["reclassified"] = sum(g.reclassified for g in stats.groups)
        by_type = ReportTable(
            name="by_type",
            title="Events by type",
            columns=["type", "events", "mean_confidence", "mean_duration_s", "relabelled", "false_positives"],
            rows=[
                [g.key, g.count, g.mean_confidence, g.mean_duration_s, g.reclassified, g.false_positives]
                for g in stats.groups
                if g.count
            ],
        )
        report = Report(
            type=report_type,
            period=key,
            cadence=REPORT_CADENCE[report_type],
            title=f"{TITLES[report_type]} — {self._period_name(report_type, key)}",
            time_zone=self.time_zone,
            start=start,
            end=end,
            local_start=_local_stamp(start, self.zone),
            local_end=_local_stamp(end, self.zone),
            generated_at=utcnow(),
            counts=counts,
            summary=[],
            tables=[by_type],
        )
        builder = {
            "daily_summary": self._daily_summary,
            "weekly_pattern": self._weekly_pattern,
            "visitor_analysis": self._visitor_analysis,
            "security_report": self._security_report,
        }[report_type]
        builder(report, codes)
        return report

    def _period_name(self, report_type: str, key: str) -> str:
        first, after = period_days(REPORT_CADENCE[report_type], key)
        if REPORT_CADENCE[report_type] == "day":
            return f"{WEEKDAYS[first.weekday()].capitalize()} {first.isoformat()}"
        year, week, _ = first.isocalendar()
        return f"week {year}-W{week:02d} ({first.isoformat()} to {(after - timedelta(days=1)).isoformat()})"

    def _type_phrase(self, report: Report) -> str:
        parts = [f"{n} {k.split(':', 1)[1]}" for k, n in report.counts.items() if k.startswith("type:") and n]
        return ", ".join(parts) or "none"

    def _hours_table(self, report: Report, only: str | None = None) -> ReportTable:
        """Events per local hour (false positives out), one column per type, from patterns."""
        patterns = self.analytics.patterns("day", report.start.isoformat(), report.end.isoformat())
        types = [t for t, grid in patterns.histograms.items() if any(map(any, grid)) and (only in (None, t))]
        rows = []
        for hour in range(24):
            per_type = [sum(patterns.histograms[t][wd][hour] for wd in range(7)) for t in types]
            rows.append([f"{hour:02d}", *per_type, sum(per_type)])
        return ReportTable(name="by_hour", title="Events per local hour", columns=["hour", *types, "total"], rows=rows)

    def _anomalies(self, report: Report, days: int) -> list[Any]:
        # anomalies() looks at the `days` local days ending with the minute before `now`.
        answer = self.analytics.anomalies("medium", days=days, now=report.end - timedelta(minutes=1), limit=500)
        report.tables.append(
            ReportTable(
                name="anomalies",
                title="Anomalies (sensitivity medium)",
                columns=["kind", "local_time", "score", "event_ids", "message"],
                rows=[
                    [a.kind, a.local_time, a.score, " ".join(map(str, a.event_ids)), a.message]
                    for a in answer.anomalies
                ],
                note=answer.message if answer.insufficient_history else None,
            )
        )
        return answer.anomalies

    def _events(self, start: datetime, end: datetime, *conds: Any, limit: int = MAX_EVENT_ROWS) -> list[Any]:
        e = DetectionEvent
        with self.session_factory() as session:
            return session.execute(
                sa.select(
                    e.id,
                    e.object_type_id,
                    e.original_type_id,
                    e.detected_at,
                    e.ended_at,
                    e.confidence_score,
                    e.tracking_duration,
                    e.is_false_positive,
                    e.user_verified,
                    e.image_path,
                )
                .where(e.detected_at >= start, e.detected_at < end, *conds)
                .order_by(e.detected_at, e.id)
                .limit(limit)
            ).all()

    def _event_table(self, name: str, title: str, events: list[Any], codes: dict[int, str]) -> ReportTable:
        return ReportTable(
            name=name,
            title=title,
            columns=["event_id", "local_time", "type", "confidence", "duration_s", "false_positive", "relabelled_from"],
            rows=[
                [
                    ev.id,
                    _local_stamp(ev.detected_at, self.zone),
                    codes.get(ev.object_type_id, str(ev.object_type_id)),
                    _num(ev.confidence_score, 3),
                    ev.tracking_duration,
                    bool(ev.is_false_positive),
                    codes.get(ev.original_type_id) if ev.original_type_id else None,
                ]
                for ev in events
            ],
            note=f"the first {MAX_EVENT_ROWS} only" if len(events) >= MAX_EVENT_ROWS else None,
        )

    def _thumbnails(self, report: Report, events: list[Any], codes: dict[int, str], first: set[int]) -> None:
        """Up to THUMBNAILS snapshots: the events named in ``first`` (anomalies), then the first
        event of each type."""
        with_image = [ev for ev in events if ev.image_path]
        chosen = [ev for ev in with_image if ev.id in first]
        seen_types = {ev.object_type_id for ev in chosen}
        for ev in with_image:
            if ev.object_type_id not in seen_types:
                chosen.append(ev)
                seen_types.add(ev.object_type_id)
        report.thumbnails = [
            ReportThumbnail(
                event_id=ev.id,
                key=ev.image_path,
                caption=f"#{ev.id} {codes.get(ev.object_type_id, '?')} {_local_stamp(ev.detected_at, self.zone)[11:]}",
            )
            for ev in chosen[:THUMBNAILS]
        ]

    def _daily_summary(self, report: Report, codes: dict[int, str]) -> None:
        hours = self._hours_table(report)
        patterns = self.analytics.patterns("day", report.start.isoformat(), report.end.isoformat())
        anomalies = self._anomalies(report, days=1)
        events = self._events(report.start, report.end)
        busiest = max(hours.rows, key=lambda r: (r[-1], -int(r[0])))
        stay, dwell = patterns.package_stay, patterns.person_dwell
        report.summary = [
            f"{report.counts['events']} event(s) from {report.local_start} to {report.local_end} "
            f"({report.time_zone}): {self._type_phrase(report)}.",
            f"Busiest hour: {busiest[0]}:00 with {busiest[-1]} event(s)."
            if busiest[-1]
            else "No events outside false positives.",
            f"Packages taken: {stay.count} (median stay {self._minutes(stay.median_s)}); "
            f"people seen {dwell.count} time(s) (median {self._seconds(dwell.median_s)}).",
            f"{report.counts['false_positives']} marked false positive, {report.counts['reclassified']} relabelled; "
            f"{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'} at medium sensitivity.",
        ]
        report.tables += [hours, self._event_table("events", "Events", events, codes)]
        report.charts = [ReportChart(name="by_hour", title="Events per local hour")]
        self._thumbnails(report, events, codes, {i for a in anomalies for i in a.event_ids})

    def _weekly_pattern(self, report: Report, codes: dict[int, str]) -> None:
        patterns = self.analytics.patterns("week", report.start.isoformat(), report.end.isoformat())
        days = self.analytics.statistics("week", "day", report.start.isoformat(), report.end.isoformat())
        grid = [[sum(patterns.histograms[t][wd][h] for t in patterns.histograms) for h in range(24)] for wd in range(7)]
        report.tables += [
            ReportTable(
                name="by_day",
                title="Events per local day",
                columns=["day", "events", "false_positives", "relabelled", "mean_confidence"],
                rows=[[g.key, g.count, g.false_positives, g.reclassified, g.mean_confidence] for g in days.groups],
            ),
            ReportTable(
                name="hour_by_weekday",
                title="Events per weekday and local hour (false positives out)",
                columns=["weekday", *(f"{h:02d}" for h in range(24))],
                rows=[[WEEKDAYS[wd], *grid[wd]] for wd in range(7)],
            ),
            ReportTable(
                name="delivery_windows",
                title="Delivery windows (intervals covering 80% of arrivals)",
                columns=["type", "arrivals", "windows", "weekdays"],
                rows=[
                    [
                        t,
                        p.arrivals,
                        ", ".join(f"{w.start}-{w.end} ({w.arrivals}, {w.share:.0%})" for w in p.windows),
                        " ".join(p.weekdays),
                    ]
                    for t, p in patterns.delivery_windows.items()
                ],
            ),
            ReportTable(
                name="busiest_hours",
                title="Busiest hours",
                columns=["weekday", "hour", "events"],
                rows=[[b.weekday, f"{b.hour:02d}:00", b.count] for b in patterns.busiest_hours],
            ),
            self._durations_table(patterns),
        ]
        busiest_day = max(days.groups, key=lambda g: g.count, default=None)
        windows = [
            f"{t} {', '.join(f'{w.start}-{w.end}' for w in p.windows)}"
            for t, p in patterns.delivery_windows.items()
            if p.windows
        ]
        report.summary = [
            f"{report.counts['events']} event(s) this week ({report.time_zone}): {self._type_phrase(report)}.",
            f"Busiest day: {busiest_day.key} with {busiest_day.count} event(s)."
            if busiest_day and busiest_day.count
            else "No events this week.",
            f"Delivery windows: {'; '.join(windows)}." if windows else "Too few deliveries for a delivery window.",
            f"Packages stayed a median {self._minutes(patterns.package_stay.median_s)}; "
            f"people a median {self._seconds(patterns.person_dwell.median_s)}.",
        ]
        report.charts = [
            ReportChart(name="heatmap", title="Events per weekday and hour"),
            ReportChart(name="by_day", title="Events per day"),
        ]

    def _durations_table(self, patterns: Any) -> ReportTable:
        return ReportTable(
            name="durations",
            title="How long things stayed (seconds)",
            columns=["what", "count", "median_s", "p90_s", "mean_s", "max_s"],
            rows=[
                [name, s.count, s.median_s, s.p90_s, s.mean_s, s.max_s]
                for name, s in (("package stay", patterns.package_stay), ("person dwell", patterns.person_dwell))
            ],
        )

    def _visitor_analysis(self, report: Report, codes: dict[int, str]) -> None:
        # Person events per day and hour, and who came back: the frequent-visitor grouping by
        # appearance (services/visitors.py) over the same week.
        person = next((tid for tid, code in codes.items() if code == "person"), None)
        events = (
            [] if person is None else self._events(report.start, report.end, DetectionEvent.object_type_id == person)
        )
        real = [ev for ev in events if not ev.is_false_positive]
        by_day: dict[date, list[Any]] = {}
        hours = [0] * 24
        night = []
        for ev in real:
            local = ev.detected_at.replace(tzinfo=UTC).astimezone(self.zone)
            by_day.setdefault(local.date(), []).append(ev)
            hours[local.hour] += 1
            if local.hour < 6:
                night.append(ev)
        dwell = duration_stats((ev.tracking_duration, 1) for ev in real if ev.tracking_duration is not None)
        first, after = period_days("week", report.period)
        day_rows = []
        for i in range((after - first).days):
            day = first + timedelta(days=i)
            evs = by_day.get(day, [])
            durations = [ev.tracking_duration for ev in evs if ev.tracking_duration is not None]
            day_rows.append(
                [
                    day.isoformat(),
                    WEEKDAYS[day.weekday()],
                    len(evs),
                    min((_local_stamp(ev.detected_at, self.zone)[11:] for ev in evs), default=None),
                    max((_local_stamp(ev.detected_at, self.zone)[11:] for ev in evs), default=None),
                    round(sum(durations) / len(durations), 1) if durations else None,
                ]
            )
        long_visits = sorted(
            (ev for ev in real if ev.tracking_duration and dwell.p90_s and ev.tracking_duration > dwell.p90_s),
            key=lambda ev: -ev.tracking_duration,
        )
        report.tables += [
            ReportTable(
                name="visits_by_day",
                title="Person events per day",
                columns=["day", "weekday", "visits", "first", "last", "mean_duration_s"],
                rows=day_rows,
            ),
            ReportTable(
                name="visits_by_hour",
                title="Person events per local hour",
                columns=["hour", "visits"],
                rows=[[f"{h:02d}", n] for h, n in enumerate(hours)],
            ),
            self._event_table("long_visits", "Longest visits (above the week's p90)", long_visits, codes),
            self._event_table("night_visits", "Visits between 00:00 and 06:00", night, codes),
        ]
        busiest = sorted(range(24), key=lambda h: (-hours[h], h))[:3]
        report.summary = [
            f"{len(real)} person event(s) this week ({report.time_zone}), "
            f"{sum(1 for row in day_rows if row[2])} day(s) with visitors.",
            "Usual hours: " + ", ".join(f"{h:02d}:00 ({hours[h]})" for h in busiest if hours[h]) + "."
            if real
            else "Nobody came this week.",
            f"Visits lasted a median {self._seconds(dwell.median_s)}, p90 {self._seconds(dwell.p90_s)}; "
            f"{len(night)} at night (00:00-06:00).",
        ]
        # A service per report: its answer cache would never be hit.
        grouped = VisitorService(self.session_factory, self.store, self.time_zone, cache=False).between(
            report.start, report.end, min_visits=2, limit=50
        )
        report.tables.insert(
            1,
            ReportTable(
                name="visitors",
                title="Returning visitors (grouped by appearance)",
                columns=["visitor", "visits", "events", "first_visit", "last_visit", "usual_hours", "similarity"],
                rows=[
                    [
                        v.visitor_id,
                        v.visits,
                        v.events,
                        _local_stamp(v.first_visit.replace(tzinfo=None), self.zone),
                        _local_stamp(v.last_visit.replace(tzinfo=None), self.zone),
                        " ".join(f"{h:02d}" for h in v.usual_hours),
                        v.similarity,
                    ]
                    for v in grouped.visitors
                ],
                note=grouped.message,
            ),
        )
        report.summary.append(
            f"{grouped.visitors_total} returning visitor(s) (2+ visits, grouped by clothing colours)."
            if grouped.status == "ok"
            else grouped.message
        )
        report.notes = [
            f"Visits are person events (per day and hour) or, for returning visitors, person tracks grouped "
            f"by the appearance of their captures ({grouped.method}); {grouped.grouped_visits} of "
            f"{grouped.visits} visit(s) had a usable capture. Status: {grouped.status}."
        ]
        report.charts = [ReportChart(name="visits_by_hour", title="Person events per local hour")]
        thumbs = self._visitor_thumbnails(grouped)
        self._thumbnails(report, sorted(real, key=lambda ev: -(ev.tracking_duration or 0)), codes, set())
        if thumbs:
            report.thumbnails = thumbs[:THUMBNAILS]

    def _visitor_thumbnails(self, grouped: Any) -> list[ReportThumbnail]:
        """The representative capture of each returning visitor (its key, signed when served)."""
        wanted = {v.thumbnail.image_id: v for v in grouped.visitors if v.thumbnail is not None}
        if not wanted:
            return []
        with self.session_factory() as session:
            keys = dict(
                session.execute(
                    sa.select(EventImage.id, EventImage.image_path).where(EventImage.id.in_(list(wanted)))
                ).all()
            )
        return [
            ReportThumbnail(
                event_id=v.thumbnail.event_id,
                key=keys[image_id],
                caption=f"visitor {v.visitor_id}: {v.visits} visits",
            )
            for image_id, v in wanted.items()
            if image_id in keys
        ]

    def _security_report(self, report: Report, codes: dict[int, str]) -> None:
        anomalies = self._anomalies(report, days=1)
        ids = {code: tid for tid, code in codes.items()}
        e = DetectionEvent
        unclassified = (
            self._events(report.start, report.end, e.object_type_id == ids["unclassified"])
            if "unclassified" in ids
            else []
        )
        false_positives = self._events(report.start, report.end, e.is_false_positive.is_(True))
        overnight = []
        if "package" in ids:
            with self.session_factory() as session:
                overnight = session.execute(
                    sa.select(e.id, e.detected_at, e.ended_at, e.image_path, e.object_type_id)
                    .where(
                        e.object_type_id == ids["package"],
                        e.detected_at >= report.end - OVERNIGHT_LOOKBACK,
                        e.detected_at < report.end,
                        sa.or_(e.ended_at.is_(None), e.ended_at >= report.end),
                        e.is_false_positive.is_(False),
                    )
                    .order_by(e.detected_at, e.id)
                ).all()
        outages = self._outages(report.start, report.end)
        report.counts["unclassified"] = len(unclassified)
        report.tables += [
            self._event_table("unclassified", "Unclassified events", unclassified, codes),
            self._event_table("false_positives", "Events marked false positive", false_positives, codes),
            ReportTable(
                name="packages_overnight",
                title="Packages still at the door at the end of the day",
                columns=["event_id", "arrived", "taken", "hours_at_door"],
                rows=[
                    [
                        p.id,
                        _local_stamp(p.detected_at, self.zone),
                        _local_stamp(p.ended_at, self.zone) if p.ended_at else "not yet",
                        round(((p.ended_at or report.end) - p.detected_at).total_seconds() / 3600, 1),
                    ]
                    for p in overnight
                ],
                note="taken = when the tracker last saw it; 'not yet' = still there when the report was made",
            ),
            ReportTable(
                name="outages",
                title="Component outages (system_status_logs)",
                columns=["component", "status", "from", "to", "minutes", "error"],
                rows=outages,
            ),
        ]
        report.summary = [
            f"{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'} at medium sensitivity "
            f"({', '.join(sorted({a.kind for a in anomalies})) or 'none'}).",
            f"{len(unclassified)} unclassified event(s), {len(false_positives)} marked false positive.",
            f"{len(overnight)} package(s) left at the door overnight.",
            f"{len(outages)} component outage(s)"
            + (f": {', '.join(sorted({str(o[0]) for o in outages}))}." if outages else "."),
        ]
        report.charts = [ReportChart(name="by_hour", title="Events per local hour")]
        report.tables.insert(1, self._hours_table(report))
        flagged = {i for a in anomalies for i in a.event_ids}
        events = self._events(report.start, report.end, e.id.in_(flagged)) if flagged else []
        self._thumbnails(report, events + unclassified, codes, flagged)

    def _outages(self, start: datetime, end: datetime) -> list[list[Any]]:
        """Stretches in which a component logged stopped/error/down, until its next other status
        (or the end of the period), from the status rows of the period and the last one before."""
        s = SystemStatusLog
        with self.session_factory() as session:
            rows = list(
                session.execute(
                    sa.select(s.component, s.status, s.logged_at, s.error_message)
                    .where(s.logged_at >= start, s.logged_at < end)
                    .order_by(s.logged_at, s.id)
                ).all()
            )
            components = {r.component for r in rows}
            earlier = session.execute(
                sa.select(s.component, sa.func.max(s.logged_at)).where(s.logged_at < start).group_by(s.component)
            ).all()
            before = []
            for component, at in earlier:
                last = session.execute(
                    sa.select(s.component, s.status, s.logged_at, s.error_message)
                    .where(s.component == component, s.logged_at == at)
                    .order_by(s.id.desc())
                    .limit(1)
                ).first()
                if last is not None and last.status in DOWN_STATUSES:
                    before.append(last)
                    components.add(component)
        open_: dict[str, tuple[Any, datetime]] = {}
        out: list[list[Any]] = []

        def close(component: str, until: datetime | None) -> None:
            row, since = open_.pop(component)
            stop = until or end
            out.append(
                [
                    component,
                    row.status,
                    _local_stamp(since, self.zone),
                    _local_stamp(until, self.zone) if until else "still at the end of the period",
                    round((stop - since).total_seconds() / 60, 1),
                    (row.error_message or "")[:200],
                ]
            )

        for row in before:
            open_[row.component] = (row, start)
        for row in rows:
            down = row.status in DOWN_STATUSES
            if down and row.component not in open_:
                open_[row.component] = (row, row.logged_at)
            elif not down and row.component in open_:
                close(row.component, row.logged_at)
        for component in sorted(open_):
            close(component, None)
        return sorted(out, key=lambda r: r[2])

    @staticmethod
    def _minutes(seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds / 60:.0f} min"

    @staticmethod
    def _seconds(seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds:.0f} s"

    # ------------------------------------------------------------------ the database's own count

    def database_counts(self, report: Report) -> dict[str, int]:
        """The counts a report states, counted again with plain SQL over its UTC window (the asset
        check compares the two)."""
        e = DetectionEvent
        with self.session_factory() as session:
            codes = dict(session.execute(sa.select(ObjectType.id, ObjectType.code)).all())
            rows = session.execute(
                sa.select(
                    e.object_type_id,
                    sa.func.count(),
                    sa.func.sum(sa.case((e.is_false_positive.is_(True), 1), else_=0)),
                    sa.func.sum(sa.case((e.original_type_id.is_not(None), 1), else_=0)),
                )
                .where(e.detected_at >= report.start, e.detected_at < report.end)
                .group_by(e.object_type_id)
            ).all()
        counted = {f"type:{code}": 0 for code in codes.values()}
        counted.update({"events": 0, "false_positives": 0, "reclassified": 0})
        for tid, n, fp, relabelled in rows:
            counted[f"type:{codes.get(tid, tid)}"] = int(n)
            counted["events"] += int(n)
            counted["false_positives"] += int(fp or 0)
            counted["reclassified"] += int(relabelled or 0)
        if "unclassified" in report.counts:
            counted["unclassified"] = counted.get("type:unclassified", 0)
        return counted

    # ------------------------------------------------------------------ rendering

    def charts(self, report: Report) -> dict[str, bytes]:
        """The report's charts as PNGs (matplotlib, no pyplot: thread-safe, no display)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        tables = {t.name: t for t in report.tables}
        out = {}
        for chart in report.charts:
            fig = Figure(figsize=(7.4, 2.3), dpi=110)
            ax = fig.subplots()
            if chart.name == "heatmap":
                grid = [row[1:] for row in tables["hour_by_weekday"].rows]
                image = ax.imshow(grid, aspect="auto", cmap="Blues")
                ax.set_yticks(range(7), [w.capitalize() for w in WEEKDAYS])
                ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
                fig.colorbar(image, ax=ax, pad=0.01).ax.tick_params(labelsize=7)
                ax.tick_params(labelsize=7)
            else:
                table = tables[chart.name]
                # Numeric positions and explicit tick labels (category axes log a line per chart).
                x = list(range(len(table.rows)))
                if chart.name in ("by_day", "visits_by_hour"):
                    ax.bar(x, [r[1] for r in table.rows], color="#3b6ea5")
                else:  # per type columns, stacked
                    bottom = [0] * len(table.rows)
                    for i, name in enumerate(table.columns[1:-1], start=1):
                        values = [r[i] for r in table.rows]
                        ax.bar(x, values, bottom=bottom, label=name)
                        bottom = [b + v for b, v in zip(bottom, values)]
                    if len(table.columns) > 2:
                        ax.legend(fontsize=7, ncols=5, loc="upper left", frameon=False)
                ax.set_xticks(x, [str(r[0])[5:] if chart.name == "by_day" else str(r[0]) for r in table.rows])
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                ax.tick_params(labelsize=7)
                ax.spines[["top", "right"]].set_visible(False)
            ax.set_title(chart.title, fontsize=9, loc="left")
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            out[chart.name] = buffer.getvalue()
        return out

    @staticmethod
    def to_csv(report: Report) -> bytes:
        """UTF-8 with a BOM (Excel then reads Korean right); a header block, then each table as
        a titled section separated by an empty row."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["report", report.type])
        writer.writerow(["title", report.title])
        writer.writerow(["period", report.period])
        writer.writerow(["time_zone", report.time_zone])
        writer.writerow(["local_start", report.local_start])
        writer.writerow(["local_end", report.local_end])
        for name, value in report.counts.items():
            writer.writerow([name, value])
        for line in report.summary:
            writer.writerow(["summary", line])
        for table in report.tables:
            writer.writerow([])
            writer.writerow([table.title])
            writer.writerow(table.columns)
            writer.writerows([["" if v is None else v for v in row] for row in table.rows])
        for note in report.notes:
            writer.writerow([])
            writer.writerow(["note", note])
        return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")

    @staticmethod
    def to_html(report: Report, charts: dict[str, bytes], link: Callable[[str], str | None]) -> str:
        """One self-contained page: inline CSS, charts as data URIs, thumbnails as signed links
        (``link(key)``), tables cut to HTML_ROWS rows; A4 print styles keep it to one or two pages."""
        esc = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(report.title)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<header><h1>{esc(report.title)}</h1>",
            f'<p class="meta">{esc(report.local_start)} – {esc(report.local_end)} ({esc(report.time_zone)}) · '
            f"generated {esc(report.generated_at.strftime('%Y-%m-%d %H:%M'))} UTC · ai-door-system</p></header>",
            '<section class="summary"><ul>',
            *(f"<li>{esc(line)}</li>" for line in report.summary),
            "</ul></section>",
        ]
        for chart in report.charts:
            png = charts.get(chart.name)
            if png:
                data = base64.b64encode(png).decode("ascii")
                parts.append(f'<figure><img alt="{esc(chart.title)}" src="data:image/png;base64,{data}"></figure>')
        thumbs = [(t, link(t.key)) for t in report.thumbnails]
        if any(url for _, url in thumbs):
            parts.append('<section class="thumbs">')
            for thumb, url in thumbs:
                if url:
                    parts.append(
                        f'<figure><a href="{esc(url)}"><img loading="lazy" alt="{esc(thumb.caption)}" '
                        f'src="{esc(url)}"></a><figcaption>{esc(thumb.caption)}</figcaption></figure>'
                    )
            parts.append("</section>")
        # A table drawn as a chart is left out of the page (its numbers stay in the CSV and JSON).
        charted = {c.name for c in report.charts if c.name in charts}
        if "heatmap" in charted:
            charted.add("hour_by_weekday")  # the heatmap's numbers
        for table in report.tables:
            if table.name in charted and table.name != "by_day":
                continue
            parts.append(f"<section class=table><h2>{esc(table.title)}</h2>")
            if not table.rows:
                parts.append('<p class="empty">none</p>')
            else:
                parts.append("<table><thead><tr>")
                parts += [f"<th>{esc(c.replace('_', ' '))}</th>" for c in table.columns]
                parts.append("</tr></thead><tbody>")
                for row in table.rows[:HTML_ROWS]:
                    cells = "".join(
                        f'<td class="{"num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""}">'
                        f"{esc('' if v is None else str(v))}</td>"
                        for v in row
                    )
                    parts.append(f"<tr>{cells}</tr>")
                parts.append("</tbody></table>")
                if len(table.rows) > HTML_ROWS:
                    parts.append(f'<p class="more">{len(table.rows) - HTML_ROWS} more row(s) in the CSV / JSON.</p>')
            if table.note:
                parts.append(f'<p class="note">{esc(table.note)}</p>')
            parts.append("</section>")
        for note in report.notes:
            parts.append(f'<p class="note">{esc(note)}</p>')
        parts.append("</body></html>")
        return "\n".join(parts)

    # ------------------------------------------------------------------ storing and serving

    def _require_store(self) -> ObjectStore:
        if self.store is None:
            from detection_service.storage.base import StorageUnavailable

            raise StorageUnavailable("the object store is not available")
        return self.store

    def materialize(self, report_type: str, key: str, progress: Callable[[int, str], Any] | None = None) -> Report:
        """Build one partition's report and store its JSON, CSV, charts and HTML. Returns it."""
        store = self._require_store()
        step = progress or (lambda pct, text: None)
        step(10, f"reading events of {report_type} {key}")
        report = self.build(report_type, key)
        step(60, "drawing charts")
        charts = self.charts(report)
        step(80, "storing")
        for name, png in charts.items():
            store.put_bytes(report_key(report_type, key, f"{name}.png"), png, "image/png")
        store.put_bytes(report_key(report_type, key, "report.csv"), self.to_csv(report), "text/csv; charset=utf-8")
        stored_link = self._linker(STORED_LINK_TTL)
        page = self.to_html(report, charts, stored_link).encode("utf-8")
        store.put_bytes(report_key(report_type, key, "report.html"), page, "text/html; charset=utf-8")
        # The JSON last: its presence is what makes the period "made" for the endpoint.
        store.put_bytes(report_key(report_type, key, "report.json"), msgspec.json.encode(report), "application/json")
        return report

    def _linker(self, ttl: timedelta) -> Callable[[str], str | None]:
        store = self._require_store()

        def link(key: str) -> str | None:
            try:
                return store.url_for(key, expires=ttl)
            except Exception:  # a key the store refuses: no thumbnail, not a failed report
                return None

        return link

    def stored(self, report_type: str, key: str) -> Report | None:
        try:
            data = self._require_store().get_bytes(report_key(report_type, key, "report.json"))
        except ObjectNotFound:
            return None
        return msgspec.json.decode(data, type=Report)

    def keys(self, report_type: str, key: str) -> list[str]:
        return sorted(info.key for info in self._require_store().list(report_root(report_type, key)))

    def serve(
        self, report_type: str, period: str | None, fmt: str = "json", link_ttl: timedelta = timedelta(hours=1)
    ) -> Served | Pending:
        """The stored report in ``fmt``; with none yet, the batch job that makes it."""
        report_type, key, fmt = self.check_request(report_type, period, fmt)
        report = self.stored(report_type, key)
        if report is None:
            job, submitted = self.request(report_type, key)
            return Pending(report_type, key, job, submitted)
        store = self._require_store()
        if fmt == "json":
            return Served(report_type, key, fmt, report)
        if fmt == "csv":
            return Served(report_type, key, fmt, store.get_bytes(report_key(report_type, key, "report.csv")))
        # The page again from the stored JSON and charts, so its thumbnail links are fresh.
        charts = {}
        for chart in report.charts:
            try:
                charts[chart.name] = store.get_bytes(report_key(report_type, key, f"{chart.name}.png"))
            except ObjectNotFound:
                continue
        return Served(report_type, key, fmt, self.to_html(report, charts, self._linker(link_ttl)))

    def request(self, report_type: str, key: str) -> tuple[BatchJobView, bool]:
        """The pending or running report_generate job for this partition, else a new one (the same
        rule as ``POST /api/batch/trigger``: ``BatchJobs.submit_once``)."""
        return self.jobs.submit_once(
            ReportGenerate(report_type=report_type, period=key), f"{report_type} report {key}", priority=6
        )


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 13px/1.4 "DejaVu Sans", "Noto Sans KR", "Malgun Gothic", system-ui, sans-serif; color: #1d2430;
       margin: 0 auto; max-width: 860px; padding: 18px 22px; }
h1 { font-size: 20px; margin: 0 0 2px; }
h2 { font-size: 13px; margin: 12px 0 4px; color: #274b73; }
.meta { color: #5b6573; margin: 0 0 8px; font-size: 11px; }
.summary ul { margin: 4px 0 8px 18px; padding: 0; }
.summary li { margin: 1px 0; }
figure { margin: 4px 0; }
figure img { width: 100%; max-height: 230px; object-fit: contain; }
.thumbs { display: flex; gap: 6px; flex-wrap: wrap; }
.thumbs figure { width: 128px; margin: 0; }
.thumbs img { width: 128px; height: 96px; object-fit: cover; border: 1px solid #ccd; }
.thumbs figcaption { font-size: 10px; color: #5b6573; }
table { border-collapse: collapse; width: 100%; font-size: 11px; }
th, td { border-bottom: 1px solid #e1e5ea; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #f2f5f8; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note, .more, .empty { color: #5b6573; font-size: 10px; margin: 2px 0; }
@page { size: A4; margin: 12mm; }
@media print {
  body { padding: 0; max-width: none; font-size: 10px; }
  figure img { max-height: 52mm; }
  section.table { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""
