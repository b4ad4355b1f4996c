"""`aidoor bench analytics`: speed of the statistics, patterns and anomalies queries at depth.

Seeds N events over 180 days with a daily and weekly rhythm per type into a scratch database
(dropped afterwards unless --keep), then runs each query from C concurrent threads through
AnalyticsService, once with its answer cache off (every call does the SQL and the Python work)
and once with it on (the service as the API serves it); then builds and stores one report of each
type for the last day / week (ReportService, a local object store in a temporary folder) and
times them. Prints one JSON line:

    {"events": 100000, "queries": {"statistics_week_type": {"cold": {"p50_ms", "p95_ms"}, "cached": {...}}, ...},
     "reports": {"daily_summary": {"period", "wall_s"}, ...}, "daily_partition_s", "weekly_partition_s"}

Not measured here: the HTTP layer (see `aidoor bench api` for its cost on the list queries).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from detection_service.bench import percentile
from detection_service.bench.api import _scratch_database
from detection_service.config import Settings
from detection_service.database import make_engine, make_session_factory, upgrade
from detection_service.services.analytics import AnalyticsService
from detection_service.services.reports import ReportService
from detection_service.storage.local import LocalObjectStore
from schemas.db import DetectionEvent, ObjectType, utcnow
from schemas.reports import REPORT_CADENCE, REPORT_TYPES

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/aidoor_bench_analytics"
SPAN_DAYS = 180
# Per type: share of events, local hours with their weights, weekdays it happens on.
RHYTHM = {
    "person": (50, {7: 2, 8: 4, 12: 2, 13: 2, 17: 3, 18: 5, 19: 5, 20: 3, 21: 1}, range(7)),
    "package": (20, {10: 5, 11: 5, 14: 3, 15: 3, 16: 2}, range(6)),
    "delivery_food": (12, {12: 4, 18: 5, 19: 5, 20: 2}, range(7)),
    "mail": (8, {10: 5, 11: 5}, range(5)),
    "unclassified": (10, dict.fromkeys(range(24), 1), range(7)),
}


def seed(engine: sa.Engine, events: int, zone: ZoneInfo, rng: random.Random) -> float:
    started = time.perf_counter()
    with engine.connect() as conn:
        type_ids = dict(conn.execute(sa.select(ObjectType.code, ObjectType.id)).all())
    codes = list(RHYTHM)
    weights = [RHYTHM[c][0] for c in codes]
    today = utcnow().replace(tzinfo=UTC).astimezone(zone).date()
    stamps: list[tuple[datetime, str]] = []
    while len(stamps) < events:
        code = rng.choices(codes, weights)[0]
        _, hours, weekdays = RHYTHM[code]
        day = today - timedelta(days=rng.randrange(1, SPAN_DAYS + 1))
        if day.weekday() not in weekdays:
            continue
        hour = rng.choices(list(hours), list(hours.values()))[0]
        local = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=zone)
        stamps.append((local.astimezone(UTC).replace(tzinfo=None), code))
    stamps.sort()
    rows = []
    for at, code in stamps:
        duration = rng.randint(3600, 9 * 3600) if code == "package" else int(rng.lognormvariate(3.5, 0.6))
        rows.append(
            {
                "object_type_id": type_ids[code],
                "detected_at": at,
                "ended_at": at + timedelta(seconds=duration),
                "tracking_duration": duration,
                "confidence_score": round(rng.uniform(0.4, 0.99), 4),
                "is_false_positive": rng.random() < 0.02,
                "status": "active",
                "model_version": "yolo_v1",
                "created_at": at,
                "updated_at": at,
            }
        )
    for first in range(0, len(rows), 5000):
        with engine.begin() as conn:
            conn.execute(DetectionEvent.__table__.insert(), rows[first : first + 5000])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ANALYZE TABLE detection_events" if engine.dialect.name in ("mysql", "mariadb") else "ANALYZE"
        )
    return time.perf_counter() - started


QUERIES = {
    "statistics_week_type": lambda s: s.statistics("week", "type"),
    "statistics_month_hour": lambda s: s.statistics("month", "hour"),
    "patterns_month": lambda s: s.patterns("month"),
    "anomalies_medium": lambda s: s.anomalies("medium"),
}


def measure(service: AnalyticsService, call, clients: int, requests: int) -> dict:
    call(service)  # warm-up (and fills the cache when it is on)
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        call(service)
        latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "rps": round(len(latencies) / wall, 1),
    }


def time_reports(factory, time_zone: str) -> dict:
    """Wall time of one partition of each report type (build, charts, store), the last day/week;
    a daily partition = daily_summary + security_report (what the daily job materializes)."""
    timings: dict = {}
    with tempfile.TemporaryDirectory(prefix="aidoor-bench-reports-") as folder:
        store = LocalObjectStore(
            root_dir=folder, bucket="ai-door-system", public_url="http://127.0.0.1:8000", signing_key=b"bench" * 8
        )
        store.ensure_bucket()
        service = ReportService(factory, store, time_zone)
        for report_type in REPORT_TYPES:
            period = service.latest_period(report_type)
            started = time.perf_counter()
            report = service.materialize(report_type, period)
            timings[report_type] = {
                "period": period,
                "wall_s": round(time.perf_counter() - started, 2),
                "events": report.counts["events"],
            }
    by_cadence = {
        cadence: round(sum(t["wall_s"] for name, t in timings.items() if REPORT_CADENCE[name] == cadence), 2)
        for cadence in ("day", "week")
    }
    return {"reports": timings, "daily_partition_s": by_cadence["day"], "weekly_partition_s": by_cadence["week"]}


def run(args: argparse.Namespace, settings: Settings) -> dict:
    rng = random.Random(12)
    zone = ZoneInfo(settings.alert_timezone)
    _scratch_database(args.database_url)
    upgrade(args.database_url)
    engine = make_engine(args.database_url)
    result: dict = {
        "events": args.events,
        "days": SPAN_DAYS,
        "database": engine.dialect.name,
        "clients": args.clients,
        "time_zone": settings.alert_timezone,
    }
    try:
        result["seed_s"] = round(seed(engine, args.events, zone, rng), 1)
        factory = make_session_factory(engine)
        cold = AnalyticsService(factory, settings.alert_timezone, cache=False)
        cached = AnalyticsService(factory, settings.alert_timezone, cache=True)
        queries = {}
        for name, call in QUERIES.items():
            queries[name] = {
                "cold": measure(cold, call, args.clients, args.requests),
                "cached": measure(cached, call, args.clients, args.requests),
            }
        result["queries"] = queries
        answer = cold.anomalies("medium")
        result["anomalies_found"] = answer.total
        result.update(time_reports(factory, settings.alert_timezone))
    finally:
        engine.dispose()
        if not args.keep:
            _scratch_database(args.database_url, create=False)
    result["target"] = {"p95_ms": 150, "daily_partition_s": 5, "weekly_partition_s": 20}
    return result


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    parser = argparse.ArgumentParser(prog="aidoor bench analytics", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="scratch database (dropped and re-created!); default %(default)s"
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=60, help="calls per query and cache mode")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    print(json.dumps(run(args, settings)), flush=True)
    return 0
