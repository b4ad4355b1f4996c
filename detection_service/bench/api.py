"""`aidoor bench api`: list-query speed of the Detection API at depth.

Seeds N events (with their image rows) into a scratch database, starts the real service
(`aidoor serve`, access log off) and measures ``GET /api/detections?limit=50`` as the first page,
a deep page (the middle of the table) and with type + date filters, from C concurrent clients.
The floor is the same SQL (count, page of ids, rows, image counts) run directly on the database.
Prints one JSON line:

    {"events": 100000, "queries": {"first_page": {"p50_ms", "p95_ms", "p99_ms", "rps", "sql_p50_ms"},
     "deep_page": {...}, "filtered": {...}}, ...}

The scratch database is dropped afterwards unless --keep.

``--workers N`` (N > 1, or ``--split``) measures the layout of docs/deployment.md: a private
mosquitto, ``aidoor detect`` in its own process and ``aidoor serve --workers N`` talking to it
over the live link. ``--demo`` plays the demo video in the pipeline meanwhile (in the API
process in the single layout, in the detector worker in the split one), so both layouts carry
the same live load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from detection_service.bench import percentile
from detection_service.config import Settings
from detection_service.database import make_engine, make_session_factory, upgrade
from detection_service.services.event_history import EventFilter, EventService
from detection_service.storage.keys import event_image_key
from schemas.db import DetectionEvent, EventImage, ObjectType, utcnow

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/aidoor_bench_api"
# Share of each type among seeded events: persons dominate a front door, then parcels.
TYPE_WEIGHTS = {"person": 50, "package": 25, "delivery_food": 10, "mail": 5, "unclassified": 10}
SPAN_DAYS = 365


def _scratch_database(url: str, create: bool = True) -> None:
    """Drop the scratch database (a MySQL database or a SQLite file), then create it empty."""
    parsed = make_url(url)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        server = make_engine(parsed.set(database=""))
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{parsed.database}`")
            if create:
                conn.exec_driver_sql(
                    f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        server.dispose()
    elif parsed.database and Path(parsed.database).exists():
        Path(parsed.database).unlink()


def seed(engine: sa.Engine, events: int, images_per_event: int, rng: random.Random) -> float:
    """Bulk-insert events spread over a year (ids ascending with time, as in real life) and their
    image rows; returns seconds taken."""
    started = time.perf_counter()
    with engine.connect() as conn:
        type_ids = dict(conn.execute(sa.select(ObjectType.code, ObjectType.id)).all())
    codes, weights = zip(*TYPE_WEIGHTS.items())
    now = utcnow().replace(microsecond=0)
    step = timedelta(days=SPAN_DAYS) / events
    chunk = 5000
    event_table, image_table = DetectionEvent.__table__, EventImage.__table__
    for first in range(0, events, chunk):
        rows, image_rows = [], []
        for i in range(first, min(events, first + chunk)):
            detected_at = now - timedelta(days=SPAN_DAYS) + step * i
            event_id = i + 1
            key = event_image_key(event_id, detected_at, 1)
            box = {"x1": 100, "y1": 80, "x2": 300, "y2": 400, "frame_width": 1280, "frame_height": 720}
            rows.append(
                {
                    "id": event_id,
                    "object_type_id": type_ids[rng.choices(codes, weights)[0]],
                    "image_path": key,
                    "confidence_score": round(rng.uniform(0.4, 0.99), 4),
                    "bbox_coordinates": json.dumps(box),
                    "model_version": "yolo_v1",
                    "fps": 15,
                    "processing_time": 30,
                    "tracking_id": event_id % 5000,
                    "tracking_duration": rng.randint(1, 120),
                    "status": "active",
                    "detected_at": detected_at,
                    "ended_at": detected_at + timedelta(seconds=30),
                    "notification_sent": True,
                    "user_verified": False,
                    "is_false_positive": False,
                    "created_at": detected_at,
                    "updated_at": detected_at,
                }
            )
            for seq in range(1, images_per_event + 1):
                image_rows.append(
                    {
                        "event_id": event_id,
                        "image_path": key.replace("/1.jpg", f"/{seq}.jpg"),
                        "sequence_number": seq,
                        "compression_quality": 85,
                        "captured_at": detected_at + timedelta(seconds=2 * seq),
                    }
                )
        with engine.begin() as conn:
            conn.execute(event_table.insert(), rows)
            conn.execute(image_table.insert(), image_rows)
    with engine.begin() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            conn.exec_driver_sql("ANALYZE TABLE detection_events, event_images")
        else:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def query_cases(events: int, limit: int) -> dict[str, dict[str, str | int]]:
    now = utcnow()
    return {
        "first_page": {"limit": limit},
        "deep_page": {"limit": limit, "page": max(1, events // limit // 2)},
        "filtered": {
            "limit": limit,
            "type": "package",
            "start_date": (now - timedelta(days=90)).date().isoformat(),
            "end_date": (now - timedelta(days=30)).date().isoformat(),
        },
    }


def sql_floor(service: EventService, params: dict, repeats: int) -> float:
    """p50 (ms) of the list's SQL alone: its total (counted, never cached) and its page statement."""
    from detection_service.services.event_history import parse_when

    flt = EventFilter(
        type=params.get("type"),
        start=parse_when(str(params["start_date"]), "start_date") if "start_date" in params else None,
        end=parse_when(str(params["end_date"]), "end_date", end_of_day=True) if "end_date" in params else None,
    )
    page, limit = int(params.get("page", 1)), int(params["limit"])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with service.session_factory() as session:
            count, rows = service.list_statements(session, flt, page, limit)
            session.execute(count).scalar()
            session.execute(rows).all()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def load(
    base_url: str, params: dict, clients: int, requests: int, headers: dict[str, str] | None = None
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30, headers=headers) as client:
        for _ in range(10):  # warm-up
            await client.get("/api/detections", params=params)
        counter = iter(range(requests))

        async def worker() -> None:
            nonlocal errors
            for _ in counter:
                started = time.perf_counter()
                response = await client.get("/api/detections", params=params)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "rps": round(len(latencies) / wall, 1),
        "errors": errors,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private mosquitto for the live link (TCP_NODELAY: small requests and replies)."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return broker, port


def _demo_path(demo: str, settings_data_dir: Path) -> str:
    """``auto``: the demo video of the user's data dir, built once; ``off``; or a video's path."""
    if demo == "auto":
        from detection_service import demo_video

        path = demo_video.ensure(settings_data_dir)
        return str(path) if path is not None else "off"
    return demo


def run(args: argparse.Namespace) -> dict:
    rng = random.Random(7)
    _scratch_database(args.database_url)
    upgrade(args.database_url)
    engine = make_engine(args.database_url)
    result: dict = {
        "events": args.events,
        "images": args.events * args.images_per_event,
        "database": engine.dialect.name,
        "clients": args.clients,
        "workers": args.workers,
        "layout": "split" if args.split else "single",
    }
    result["seed_s"] = round(seed(engine, args.events, args.images_per_event, rng), 1)
    data_dir = Path(tempfile.mkdtemp(prefix="aidoor-bench-api-"))
    service = EventService(make_session_factory(engine), store=None)  # type: ignore[arg-type]
    cases = query_cases(args.events, args.limit)

    port = _free_port()
    env = {
        **os.environ,
        "AIDOOR_DATABASE_URL": args.database_url,
        "AIDOOR_DATA_DIR": str(data_dir),
        "AIDOOR_PORT": str(port),
        "AIDOOR_DEMO_VIDEO": args.demo_path,
        "AIDOOR_LOG_LEVEL": "WARNING",
        "AIDOOR_DAGSTER_PORT": str(_free_port()),
    }
    aidoor = str(Path(sys.executable).parent / "aidoor")
    # A viewer token, as a script would use (docs/security.md); the guard's cost is part of the latency.
    token = subprocess.run(
        [aidoor, "token", "create", "--role", "viewer", "--name", "bench api"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    broker = detect = None
    if args.split:
        broker, broker_port = _start_broker(data_dir)
        env["AIDOOR_LIVE_BROKER_URL"] = f"mqtt://127.0.0.1:{broker_port}/bench"
        detect = subprocess.Popen(
            [aidoor, "detect", "--no-migrate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    server = subprocess.Popen(
        [aidoor, "serve", "--no-migrate", "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"service exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(base_url + "/api/system/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("service did not answer within 60 s")
            time.sleep(0.3)
        # Every worker up (and, split, linked to the detector): the live state answers repeatedly.
        while not all(
            httpx.get(base_url + "/api/detection", headers=headers, timeout=5).status_code == 200
            for _ in range(2 * args.workers)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the detection state did not answer within 60 s")
            time.sleep(0.5)
        if args.demo_path != "off":  # the demo plays before measuring
            while httpx.get(base_url + "/api/detection", headers=headers, timeout=5).json()["data"]["fps"] <= 0:
                if time.monotonic() > deadline + 60:
                    raise RuntimeError("the demo video did not play within 2 minutes")
                time.sleep(0.5)
        queries = {}
        for name, params in cases.items():
            measured = asyncio.run(load(base_url, params, args.clients, args.requests, headers))
            # One client alone: the service's own latency, without queueing behind 15 others.
            measured["p50_ms_1_client"] = asyncio.run(load(base_url, params, 1, 60, headers))["p50_ms"]
            measured["sql_p50_ms"] = round(sql_floor(service, params, 30), 2)
            measured["p50_over_sql"] = round(measured["p50_ms"] / measured["sql_p50_ms"], 2)
            queries[name] = measured
        result["queries"] = queries
        live = httpx.get(base_url + "/api/detection", headers=headers, timeout=5).json()["data"]
        result["pipeline"] = {key: live.get(key) for key in ("status", "source", "fps", "frames_read")}
    finally:
        for process in (server, detect, broker):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        engine.dispose()
        if not args.keep:
            _scratch_database(args.database_url, create=False)
    result["target"] = {"p95_ms": 25, "p50_over_sql": 3}
    return result


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    parser = argparse.ArgumentParser(prog="aidoor bench api", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=settings.bench_database_url or DEFAULT_URL,
        help="scratch database (dropped and re-created!); default %(default)s (AIDOOR_BENCH_DATABASE_URL)",
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--images-per-event", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=800, help="requests per query kind")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--workers", type=int, default=1, help="API workers; more than 1 runs aidoor detect apart (docs/deployment.md)"
    )
    parser.add_argument("--split", action="store_true", help="aidoor detect apart also with one API worker")
    parser.add_argument(
        "--demo",
        default="auto",
        help="video the pipeline plays meanwhile: auto (the demo video, built once), off, or a path",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.split = args.split or args.workers > 1
    args.demo_path = _demo_path(args.demo, settings.data_dir)
    print(json.dumps(run(args)), flush=True)
    return 0
