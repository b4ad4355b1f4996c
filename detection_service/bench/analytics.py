"""`aidoor bench analytics`: speed of the six analytics endpoints at depth, the report partitions,
and the frequent-visitor precision/recall.

Seeds N events over 180 days with a daily and weekly rhythm per type into a scratch database
(dropped afterwards unless --keep), plus one person event per crop of the identity set of
`aidoor bench visitors` (real people from `person-capston2-v11`, their frames stored in a local
object store in a temporary folder, at person hours of the last 14 days, so all of them fall in
the newest MAX_EVENTS person events the visitor grouping reads). Then it calls each endpoint's
service from C concurrent threads:

- statistics, patterns, anomalies through AnalyticsService, with its answer cache off (`cold`:
  every call does the SQL and the Python work) and on (`cached`, as the API serves them);
- frequent visitors (30 days) through VisitorService: `cold` is a new service per call (every
  capture fetched from the store, decoded and embedded: the first call after a restart; fewer
  calls, see VISITORS_COLD_REQUESTS), `embeddings_warm` one service with its answer cache off and
  its embedding cache warm (the SQL, the clustering and the thumbnail links: a call after the
  person events changed), `cached` one service with its answer cache on (as the API serves it
  while the events are unchanged: the stamp query). The seeded rhythm events have no captures: they are
  loaded and counted as visits without a usable capture, as on a door whose old captures expired;
- tracking: not a database query. The pipeline thread publishes an immutable list of the tracked
  objects after each detector run and the endpoint reads it. Measured: `DetectionPipeline.tracking()`
  plus the JSON encoding of it (the endpoint's whole work) on a running pipeline fed pushed frames
  at 15 fps, with a detector that reports TRACKED_OBJECTS standing people on each (the real tracker
  and recorder make the snapshot; measured last, as its recorder writes events);
- reports: one partition of each type is built, charted and stored for the last day / week
  (ReportService, wall time), then `ReportService.serve` of that stored partition as json
  (+ JSON encoding), csv and html is measured.

Last, `bench.visitors.run()` measures the grouping on the identity set; its `visitors_precision`
and `visitors_recall` go into the line. Prints one JSON line:

    {"events": 100000, "queries": {"statistics_week_type": {"cold": {"p50_ms", "p95_ms", "rps"}, "cached": {...}},
     ..., "frequent_visitors_30d": {...}, "tracking": {"snapshot": {...}}}, "frequent_visitors": {...},
     "reports": {"daily_summary": {"period", "wall_s", "events"}, ...}, "daily_partition_s", "weekly_partition_s",
     "report_serving": {"daily_summary": {"json": {"p50_ms", "p95_ms", "rps"}, "csv": ..., "html": ...}, ...},
     "visitors_precision", "visitors_recall", "visitors_identity_set": {...}}

Not measured here: the HTTP layer (see `aidoor bench api` for its cost on the list queries).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import msgspec
import numpy as np
import sqlalchemy as sa

from detection_service.bench import percentile
from detection_service.bench import visitors as visitors_bench
from detection_service.bench.api import _scratch_database
from detection_service.bus import EventBus
from detection_service.config import Settings
from detection_service.database import make_engine, make_session_factory, upgrade
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import Detection, Detector, DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from detection_service.services.analytics import AnalyticsService
from detection_service.services.reports import ReportService, Served
from detection_service.services.visitors import DEFAULT_THRESHOLD, VisitorService
from detection_service.storage.keys import event_image_key
from detection_service.storage.local import LocalObjectStore
from schemas.db import DetectionEvent, EventImage, ObjectType, utcnow
from schemas.reports import REPORT_CADENCE, REPORT_TYPES
from schemas.settings import CameraSettings

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
VISITOR_DAYS = 14  # the identity-set events fall in the last 14 local days
VISITORS_COLD_REQUESTS = 8  # a cold call embeds every capture (seconds): fewer calls
TRACKED_OBJECTS = 12  # more than a front door holds at once
REPORT_FORMATS = ("json", "csv", "html")


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


def _store(folder: str) -> LocalObjectStore:
    store = LocalObjectStore(
        root_dir=folder, bucket="ai-door-system", public_url="http://127.0.0.1:8000", signing_key=b"bench" * 8
    )
    store.ensure_bucket()
    return store


def seed_visitor_captures(factory, store: LocalObjectStore, dataset: Path, zone: ZoneInfo, rng: random.Random) -> int:
    """One person event per crop of the identity set (its frame stored as the event's capture,
    the crop's box in ``bbox_coordinates``), at person hours of the last VISITOR_DAYS days."""
    crops = visitors_bench.identity_set(dataset)
    _, hours, _ = RHYTHM["person"]
    today = utcnow().replace(tzinfo=UTC).astimezone(zone).date()
    with factory.begin() as session:
        person = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == "person"))
        for crop in crops:
            day = today - timedelta(days=rng.randrange(1, VISITOR_DAYS + 1))
            hour = rng.choices(list(hours), list(hours.values()))[0]
            local = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=zone)
            at = local.astimezone(UTC).replace(tzinfo=None)
            event = DetectionEvent(
                object_type_id=person,
                detected_at=at,
                ended_at=at + timedelta(seconds=30),
                tracking_duration=30,
                confidence_score=0.8,
                status="active",
                model_version="yolo_v1",
            )
            session.add(event)
            session.flush()
            key = event_image_key(event.id, at, 1)
            store.put_bytes(key, crop.path.read_bytes(), "image/jpeg")
            session.add(EventImage(event_id=event.id, image_path=key, sequence_number=1, captured_at=at))
            x1, y1, x2, y2 = crop.box
            event.image_path = key
            event.bbox_coordinates = json.dumps({"x1": x1, "y1": y1, "x2": x2, "y2": y2})
    return len(crops)


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


def measure_visitors(factory, store: LocalObjectStore, time_zone: str, clients: int, requests: int) -> dict:
    """GET /api/analytics/frequent-visitors?days=30 (module docstring: cold = a new service)."""

    def fresh(_: object) -> None:
        VisitorService(factory, store, time_zone).visitors(30)

    warm = VisitorService(factory, store, time_zone, cache=False)
    answer = warm.visitors(30)
    cached = VisitorService(factory, store, time_zone)
    return {
        "cold": measure(warm, fresh, clients, min(requests, VISITORS_COLD_REQUESTS)),
        "embeddings_warm": measure(warm, lambda s: s.visitors(30), clients, requests),
        "cached": measure(cached, lambda s: s.visitors(30), clients, requests),
        "answer": {
            "person_events": answer.person_events,
            "visits": answer.visits,
            "grouped_visits": answer.grouped_visits,
            "visitors_total": answer.visitors_total,
            "truncated": answer.truncated,
        },
    }


class _StandingPeople(Detector):
    """The bench's detector: the same TRACKED_OBJECTS person boxes on every frame (people standing
    at the door), so the real tracker and recorder of a running pipeline make the snapshot that
    GET /api/analytics/tracking serves. No model: what is measured is the snapshot, not detection."""

    backend = "bench"
    model_id = "bench-standing-people"
    imgsz = 640
    names = {0: "person"}

    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]:
        return [
            Detection(40.0 + 100 * i, 200.0, 110.0 + 100 * i, 560.0, 0, "person", 0.9) for i in range(TRACKED_OBJECTS)
        ]


def measure_tracking(factory, store: LocalObjectStore, data_dir: Path, clients: int, requests: int) -> dict:
    """GET /api/analytics/tracking (module docstring): the snapshot read plus its JSON encoding,
    while the pipeline runs on pushed frames and republishes the snapshot after every detector run.
    Its recorder writes events for these people: measured after everything that counts events."""
    from detection_service.ml.ultralytics_env import configure_offline

    configure_offline(data_dir)  # the tracker is Ultralytics' ByteTrack: no network, caches in data_dir
    pipeline = DetectionPipeline(
        session_factory=factory,
        store=store,
        bus=EventBus(),
        holder=DetectorHolder(_StandingPeople()),
        camera=CameraSettings(source="push", resolution="1280x720", fps=15),
        config=PipelineConfig(motion_mode="off"),  # the detector on every frame
    )
    frame = cv2.imencode(".jpg", np.full((720, 1280, 3), 120, np.uint8))[1].tobytes()
    stop = threading.Event()

    def feed() -> None:  # the WebSocket ingest's part: a frame every 1/15 s
        while not stop.wait(1 / 15):
            pipeline.push_jpeg(frame)

    feeder = threading.Thread(target=feed, name="bench-feed", daemon=True)
    pipeline.start()
    feeder.start()
    try:
        deadline = time.monotonic() + 60
        while pipeline.tracking().count < TRACKED_OBJECTS or not all(o.confirmed for o in pipeline.tracking().objects):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pipeline did not track {TRACKED_OBJECTS} people within 60 s")
            time.sleep(0.1)
        timing = measure(pipeline, lambda p: msgspec.json.encode(p.tracking()), clients, requests)
        snapshot = pipeline.tracking()
        timing["objects"] = snapshot.count
        timing["confirmed"] = sum(o.confirmed for o in snapshot.objects)
        return {"snapshot": timing}
    finally:
        stop.set()
        feeder.join(2)
        pipeline.close()


def time_reports(factory, store: LocalObjectStore, time_zone: str, clients: int, requests: int) -> dict:
    """Wall time of one partition of each report type (build, charts, store), the last day/week;
    a daily partition = daily_summary + security_report (what the daily job materializes). Then
    GET /api/analytics/reports of each stored partition in each format (ReportService.serve)."""
    timings: dict = {}
    serving: dict = {}
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
    for report_type, timing in timings.items():
        serving[report_type] = {}
        for fmt in REPORT_FORMATS:

            def serve(s: ReportService, report_type=report_type, period=timing["period"], fmt=fmt) -> None:
                served = s.serve(report_type, period, fmt)
                assert isinstance(served, Served), f"{report_type} {period} was not stored"
                if fmt == "json":
                    msgspec.json.encode(served.body)  # the API encodes the Report into the envelope

            serving[report_type][fmt] = measure(service, serve, clients, requests)
    by_cadence = {
        cadence: round(sum(t["wall_s"] for name, t in timings.items() if REPORT_CADENCE[name] == cadence), 2)
        for cadence in ("day", "week")
    }
    return {
        "reports": timings,
        "daily_partition_s": by_cadence["day"],
        "weekly_partition_s": by_cadence["week"],
        "report_serving": serving,
    }


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
    has_crops = args.visitor_dataset.is_dir()
    try:
        result["seed_s"] = round(seed(engine, args.events, zone, rng), 1)
        factory = make_session_factory(engine)
        with tempfile.TemporaryDirectory(prefix="aidoor-bench-analytics-") as folder:
            store = _store(folder)
            if has_crops:
                result["visitor_capture_events"] = seed_visitor_captures(
                    factory, store, args.visitor_dataset, zone, rng
                )
            cold = AnalyticsService(factory, settings.alert_timezone, cache=False)
            cached = AnalyticsService(factory, settings.alert_timezone, cache=True)
            queries = {}
            result["queries"] = queries
            if args.only == "visitors":  # the frequent-visitor endpoint alone (its identity-set captures)
                queries["frequent_visitors_30d"] = measure_visitors(
                    factory, store, settings.alert_timezone, args.clients, args.requests
                )
                return result
            for name, call in QUERIES.items():
                queries[name] = {
                    "cold": measure(cold, call, args.clients, args.requests),
                    "cached": measure(cached, call, args.clients, args.requests),
                }
            queries["frequent_visitors_30d"] = measure_visitors(
                factory, store, settings.alert_timezone, args.clients, args.requests
            )
            answer = cold.anomalies("medium")
            result["anomalies_found"] = answer.total
            result.update(time_reports(factory, store, settings.alert_timezone, args.clients, args.requests))
            queries["tracking"] = measure_tracking(factory, store, settings.data_dir, args.clients, args.requests)
    finally:
        engine.dispose()
        if not args.keep:
            _scratch_database(args.database_url, create=False)
    if has_crops:
        quality = visitors_bench.run(args.visitor_dataset, DEFAULT_THRESHOLD)
        result["visitors_precision"] = quality["visitors_precision"]
        result["visitors_recall"] = quality["visitors_recall"]
        result["visitors_identity_set"] = quality["identity_set"]
    else:
        result["visitors_precision"] = result["visitors_recall"] = None
        result["visitors_skipped"] = f"no identity set at {args.visitor_dataset}"
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
    parser.add_argument(
        "--only",
        choices=["visitors"],
        help="measure one endpoint: visitors = frequent visitors alone (no reports, tracking, precision/recall)",
    )
    parser.add_argument(
        "--visitor-dataset",
        type=Path,
        default=visitors_bench.DEFAULT_DATASET,
        help="person-capston2-v11 export: captures of the visitor events and the precision/recall set",
    )
    args = parser.parse_args(argv)
    print(json.dumps(run(args, settings)), flush=True)
    return 0
