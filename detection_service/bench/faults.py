"""Fault suite: a door scene through the event recorder while faults are injected; ONE JSON line per fault.

    aidoor bench faults [--seconds 36] [--database-url mysql+pymysql://root@127.0.0.1:3306/aidoor_bench_faults]
                        [--faults camera,database,store,telegram,sigkill,all]

Each run is a worker process (``python -m detection_service.bench.faults worker``) that plays a
scripted door scene (people walking by, parcels set down and taken away; the ground truth) in real
time through the real ``ObjectTracker`` -> ``EventRecorder`` -> ``EventWriter`` with its local journal
(docs/pipeline.md "Journal"), against a scratch MariaDB database reached through a ``TcpProxy``
(bench/tcp_proxy.py) and a local object store that can be taken down. The detector is the scene
(scripted boxes): what is measured is the way from a confirmed track to rows, objects and alerts,
not the model. One fault per run, then all together:

- ``camera``: the frames stop for 2.5 s twice (a camera that drops and comes back);
- ``database``: the proxy cuts every connection and refuses new ones for 30 % of the scene;
- ``store``: every object-store write fails for 30 % of the scene;
- ``telegram``: the fake Bot API (tests/fakes/telegram_api.py, on 127.0.0.1) answers every send
  429 (retry_after 1 s), then 500, for 15 % of the scene each; the worker runs the real notifier;
- ``sigkill``: the worker is killed with SIGKILL mid-scene, while writes wait (database down), and
  restarted with the same data dir; the scene goes on from where it was;
- ``all``: all of the above in one run.

Afterwards (the worker drained; the journal empty) the database, the store, the alert queue
(``notification_history``, one recipient) and what the fake Bot API accepted are compared with the
scene: ``expected`` objects,
``lost`` (an object with no event), ``duplicated`` (a second event of one object, or an event of
none), ``orphaned`` (an image row without its object, an object without its row, an alert without
its event), ``images_lost`` (captures an event should have and has not), ``alerts_duplicated``,
``alerts_unsent``, ``telegram_duplicated`` (messages accepted twice). Not covered here (see
docs/pipeline.md "Fault suite"): Dagster being down (neither the recorder nor the notifier uses it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from detection_service.bench import log_to_stderr

log = logging.getLogger("aidoor.bench.faults")

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/aidoor_bench_faults"
FAULTS = ("camera", "database", "store", "telegram", "sigkill", "all")
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
CHAT = "10001"
FPS = 10
CAPTURES = 3  # per event, 0.5 s apart
SIZE = (320, 240)
DRAIN_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class SceneObject:
    kind: str  # person | package
    t_in: float  # scene seconds
    t_out: float
    x: float  # left edge of its box


def scene(seconds: float) -> list[SceneObject]:
    """People (2.5 s in view) and parcels (3 s) in turn, 3.5-4 s apart; the last 4 s empty."""
    objects = []
    t, i = 0.5, 0
    while t + 3.5 <= seconds - 4.0:
        kind = "person" if i % 2 == 0 else "package"
        objects.append(SceneObject(kind, t, t + (2.5 if kind == "person" else 3.0), 20.0 + 60 * (i % 4)))
        t += 6.0 if kind == "person" else 7.0
        i += 1
    return objects


def quiet_moment(objects: Sequence[SceneObject], after: float) -> float:
    """The first time from ``after`` when no object is in view or was within the last 2.5 s (its
    event ended or removed): a SIGKILL then tests the writes, not a track cut in two by a restart."""
    t = after
    while any(o.t_in - 0.5 <= t <= o.t_out + 2.5 for o in objects):
        t += 0.1
    return t


def boxes_at(objects: Sequence[SceneObject], t: float) -> list[tuple[float, float, float, float, str]]:
    out = []
    for o in objects:
        if o.t_in <= t < o.t_out:
            if o.kind == "person":
                x = o.x + 8 * (t - o.t_in)
                out.append((x, 40.0, x + 60, 200.0, "person"))
            else:
                out.append((o.x, 170.0, o.x + 60, 220.0, "package"))
    return out


# --------------------------------------------------------------------------- worker


def _worker(spec: dict[str, Any]) -> int:
    """Play the scene from ``start_at`` to its end in real time; drain; print stats."""
    import numpy as np

    from detection_service.bus import EventBus
    from detection_service.database import make_engine, make_session_factory
    from detection_service.ml.classes import CLASS_IDS
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.pipeline.capture import Frame
    from detection_service.pipeline.config import PipelineConfig
    from detection_service.pipeline.detector import Detection, classify_detections
    from detection_service.pipeline.events import EventRecorder, FrameInfo
    from detection_service.pipeline.tracker import ObjectTracker
    from schemas.settings import DetectionSettings

    configure_offline(Path(spec["data_dir"]))
    objects = [SceneObject(**o) for o in spec["scene"]]
    engine = make_engine(spec["database_url"], pool_pre_ping=True)
    store = _store(Path(spec["data_dir"]), Path(spec["store_down_file"]))
    config = PipelineConfig(
        package_removed_after_s=2.0,
        end_after_s=1.5,
        retry_initial_s=0.1,
        retry_max_s=1.0,
        # --no-journal: the control run, to show what the suite catches without the journal.
        journal_dir=str(Path(spec["data_dir"]) / "journal") if spec.get("journal", True) else None,
    )
    settings = DetectionSettings(capture_count=CAPTURES, capture_interval=0.5, jpeg_quality=70)
    sf = make_session_factory(engine)
    bus = EventBus()
    notifier = _notifier(spec, sf, store, bus)
    recorder = EventRecorder(sf, store, lambda: settings, bus, config, notifier.queue_config)
    tracker = ObjectTracker()
    wall0, start_at, end_at = spec["wall0"], spec["start_at"], spec["seconds"]
    recorder.resume(now=start_at)
    began = time.monotonic() - start_at
    Path(spec["ready_file"]).touch()  # imports done: the parent's clock may run
    seq = 0
    while (t := time.monotonic() - began) < end_at:
        if any(a <= t < b for a, b in spec["camera_gaps"]):
            time.sleep(0.05)  # the camera is gone: no frames
            continue
        seq += 1
        image = np.full((SIZE[1], SIZE[0], 3), 60 + seq % 120, np.uint8)
        dets = [Detection(x1, y1, x2, y2, CLASS_IDS[k], k, 0.85) for x1, y1, x2, y2, k in boxes_at(objects, t)]
        seen = tracker.update(classify_detections(dets, 0.5, "medium"), t, wall0 + t)
        recorder.on_frame(Frame(image, seq, t, wall0 + t), t, seen, FrameInfo("scripted", FPS, 1.0))
        time.sleep(max(0.0, (seq + 1) / FPS - (time.monotonic() - began - start_at)))
    recorder.suspend()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while recorder.writer.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = recorder.stats()
    recorder.close(5.0)
    queued = _wait_alerts_out(sf, deadline)
    notifier.close(5.0)
    print(json.dumps({"done": True, "stats": stats, "alerts_queued": queued}, default=str), flush=True)
    return 0 if not stats["pending_db"] and not stats["pending_images"] and not queued else 3


def _notifier(spec: dict[str, Any], sf: Any, store: Any, bus: Any) -> Any:
    """The real notifier (python-telegram-bot) against the parent's fake Bot API; cooldown off,
    so every event alerts."""
    from detection_service.config import Settings
    from detection_service.notifications.worker import build_notifier

    settings = Settings.from_env(
        environ={"AIDOOR_TELEGRAM_API_URL": spec["telegram_url"], "AIDOOR_TELEGRAM_KEY": spec["telegram_key"]},
        data_dir=Path(spec["data_dir"]),
        database_url=spec["database_url"],
    )
    notifier = build_notifier(settings, sf, store, bus=bus, cooldown_override_s=0.0, updates="off")
    notifier.start()
    return notifier


def _wait_alerts_out(sf: Any, deadline: float) -> int:
    """Wait until no alert is pending or being sent; the number still queued at the deadline."""
    import sqlalchemy as sa

    from schemas.db import NotificationHistory

    queued = -1
    while time.monotonic() < deadline + 30:
        try:
            with sf() as session:
                queued = session.scalar(
                    sa.select(sa.func.count(NotificationHistory.id)).where(
                        NotificationHistory.send_status.in_(("pending", "sending"))
                    )
                )
        except Exception:  # the database may still be coming back
            queued = -1
        if queued == 0:
            return 0
        time.sleep(0.2)
    return queued


def _store(data_dir: Path, down_file: Path):  # type: ignore[no-untyped-def]
    from detection_service.storage import LocalObjectStore

    class SwitchableStore(LocalObjectStore):
        """The local store, down (every write fails) while ``down_file`` exists."""

        def _put_bytes(self, key: str, data: bytes, content_type: str) -> None:
            if down_file.exists():
                raise ConnectionError("object store down (fault injected)")
            super()._put_bytes(key, data, content_type)

    store = SwitchableStore(data_dir / "objects", "ai-door-system", "http://127.0.0.1:8000", b"bench-faults")
    store.ensure_bucket()
    return store


# --------------------------------------------------------------------------- one run


@dataclass
class Result:
    fault: str
    expected: int
    events: int
    lost: int
    duplicated: int
    orphaned: int
    images_expected: int
    images_lost: int
    alerts: int
    alerts_duplicated: int  # two alert rows of one event, kind and recipient
    alerts_unsent: int  # alert rows not `sent` at the end
    telegram_duplicated: int  # messages the Bot API accepted beyond one per sent alert row
    telegram_refused: int  # send requests the Bot API answered 429 / 500 (the fault bit)
    journal_left: int
    restarts: int
    retries: int  # failed writes the workers retried (the faults did bite)
    replayed: int  # journal entries a restarted worker found and replayed
    wall_s: float


def _scratch(url: str) -> None:
    from sqlalchemy.engine import make_url

    from detection_service.database import make_engine

    parsed = make_url(url)
    server = make_engine(parsed.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{parsed.database}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.dispose()


def run_fault(fault: str, url: str, seconds: float, work: Path, journal: bool = True) -> Result:
    import sqlalchemy as sa
    from cryptography.fernet import Fernet
    from sqlalchemy.engine import make_url

    from detection_service import database
    from detection_service.bench.tcp_proxy import TcpProxy
    from detection_service.notifications.crypto import TokenCipher
    from schemas.db import Telegram

    _failure, fake_telegram = _fake_api()
    key = Fernet.generate_key().decode()

    started = time.monotonic()
    _scratch(url)
    database.upgrade(url)
    engine = database.make_engine(url)
    with engine.begin() as conn:
        token = TokenCipher(key.encode(), "bench").encrypt(TOKEN)
        conn.execute(sa.insert(Telegram).values(user_id=CHAT, chat_id=CHAT, bot_token=token))
    data_dir = work / fault
    data_dir.mkdir(parents=True)
    down_file = data_dir / "store-down"
    objects = scene(seconds)
    parsed = make_url(url)
    every = fault == "all"
    gaps = [[0.3 * seconds, 0.3 * seconds + 2.5], [0.7 * seconds, 0.7 * seconds + 2.5]]
    # Scene-time windows of each fault.
    kill_at = quiet_moment(objects, 0.45 * seconds) if fault in ("sigkill", "all") else None
    # With a kill the database stays down until after the restart: the killed worker's writes
    # are only in its journal.
    db_down = (
        (0.3 * seconds, max(0.6 * seconds, (kill_at or 0) + 3.0)) if fault in ("database", "sigkill", "all") else None
    )
    store_down = (0.35 * seconds, 0.65 * seconds) if fault in ("store", "all") else None
    # 429 (retry_after 1 s) on every send, then 500: over before the kill (a kill between the Bot
    # API accepting a message and the row becoming `sent` is the documented repeat window).
    telegram_429 = (0.15 * seconds, 0.3 * seconds) if fault in ("telegram", "all") else None
    telegram_5xx = (0.3 * seconds, 0.45 * seconds) if fault in ("telegram", "all") else None
    fake = fake_telegram()
    fake.add_bot(TOKEN)
    fake.start()
    with TcpProxy(parsed.host or "127.0.0.1", parsed.port or 3306) as proxy:
        proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        spec = {
            "database_url": proxied,
            "data_dir": str(data_dir),
            "store_down_file": str(down_file),
            "scene": [asdict(o) for o in objects],
            "seconds": seconds,
            "wall0": time.time(),
            "start_at": 0.0,
            "camera_gaps": gaps if fault in ("camera",) or every else [],
            "telegram_url": fake.url,
            "telegram_key": key,
            "journal": journal,
        }
        restarts = 0
        worker = _start_worker(spec)
        t0 = time.monotonic()
        while worker.poll() is None:
            t = time.monotonic() - t0
            if db_down:
                if db_down[0] <= t < db_down[1] and proxy.up:
                    proxy.cut()
                elif t >= db_down[1] and not proxy.up:
                    proxy.restore()
            if store_down:
                if store_down[0] <= t < store_down[1] and not down_file.exists():
                    down_file.touch()
                elif t >= store_down[1] and down_file.exists():
                    down_file.unlink()
            for window, status in ((telegram_429, 429), (telegram_5xx, 500)):
                _telegram_window(fake, window, status, t)
            if kill_at is not None and t >= kill_at:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                restarts += 1
                kill_at = None
                worker = _start_worker({**spec, "start_at": t})
            time.sleep(0.05)
        proxy.restore()
        down_file.unlink(missing_ok=True)
        fake.stop()
        if worker.returncode != 0:
            tail = (data_dir / "worker.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"fault worker failed (exit {worker.returncode}):\n{tail}")
    result = _compare(fault, engine, data_dir, objects, spec["wall0"], restarts, time.monotonic() - started, fake)
    engine.dispose()
    return result


def _fake_api() -> Any:
    """The fake Bot API of the tests (tests/fakes/telegram_api.py), as ``aidoor bench notify`` uses it."""
    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from tests.fakes.telegram_api import Failure, FakeTelegram

    return Failure, FakeTelegram


def _telegram_window(fake: Any, window: tuple[float, float] | None, status: int, t: float) -> None:
    """Every sendPhoto / sendMessage fails with ``status`` while ``t`` is in ``window``."""
    if window is None:
        return
    with fake._lock:
        mine = [f for f in fake.failures if f.status == status]
        if window[0] <= t < window[1] and not mine:
            for method in ("sendPhoto", "sendMessage"):
                fake.failures.append(_fake_api()[0](method, status, retry_after=1 if status == 429 else None, times=-1))
        elif t >= window[1] and mine:
            for failure in mine:
                fake.failures.remove(failure)


def _start_worker(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    data_dir = Path(spec["data_dir"])
    ready = data_dir / f"ready-{time.monotonic_ns()}"
    with open(data_dir / "worker.log", "ab") as out:  # its stdout and stderr (log records)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "detection_service.bench.faults",
                "worker",
                json.dumps({**spec, "ready_file": str(ready)}),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not ready.exists():  # the worker is up (imports done) before the clock runs
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (data_dir / "worker.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"fault worker did not start:\n{tail}")
        time.sleep(0.05)
    return proc


def _compare(
    fault: str,
    engine: Any,
    data_dir: Path,
    objects: list[SceneObject],
    wall0: float,
    restarts: int,
    wall_s: float,
    fake: Any,
) -> Result:
    import sqlalchemy as sa

    from detection_service.pipeline.journal import EventJournal
    from schemas.db import DetectionEvent, EventImage, NotificationHistory, ObjectType

    with engine.connect() as conn:
        events = conn.execute(
            sa.select(DetectionEvent.id, ObjectType.code, DetectionEvent.detected_at).join(
                ObjectType, DetectionEvent.object_type_id == ObjectType.id
            )
        ).all()
        images = conn.execute(sa.select(EventImage.event_id, EventImage.image_path)).all()
        alert_rows = conn.execute(
            sa.select(
                NotificationHistory.event_id,
                NotificationHistory.kind,
                NotificationHistory.telegram_user_id,
                NotificationHistory.send_status,
            )
        ).all()
    alerts = [(a.event_id, a.kind, a.telegram_user_id) for a in alert_rows]
    sent_rows = sum(1 for a in alert_rows if a.send_status == "sent")
    accepted = sum(1 for m in fake.sent if m.method in ("sendPhoto", "sendMessage"))
    requests = sum(1 for method, *_ in fake.requests if method in ("sendPhoto", "sendMessage"))
    event_ids = {e.id for e in events}
    matched: dict[int, list[int]] = {i: [] for i in range(len(objects))}
    stray = 0
    for event in events:
        t = event.detected_at.timestamp() - wall0 if event.detected_at.tzinfo else _naive_ts(event.detected_at) - wall0
        hits = [i for i, o in enumerate(objects) if o.kind == event.code and o.t_in - 1.5 <= t <= o.t_out + 1.5]
        if hits:
            matched[hits[0]].append(event.id)
        else:
            stray += 1
    lost = sum(1 for ids in matched.values() if not ids)
    duplicated = sum(len(ids) - 1 for ids in matched.values() if ids) + stray
    store_root = data_dir / "objects" / "ai-door-system"
    stored = {str(p.relative_to(store_root)) for p in store_root.rglob("*.jpg")} if store_root.exists() else set()
    rows = {path for _, path in images}
    orphaned = len(rows - stored) + len(stored - rows) + sum(1 for a in alerts if a[0] not in event_ids)
    per_event = {e: 0 for ids in matched.values() for e in ids[:1]}
    for event_id, _ in images:
        if event_id in per_event:
            per_event[event_id] += 1
    images_expected = CAPTURES * len(per_event)
    images_lost = sum(max(0, CAPTURES - n) for n in per_event.values())
    retries = replayed = 0
    for line in (data_dir / "worker.log").read_text(errors="replace").splitlines():
        if line.startswith('{"done"'):
            stats = json.loads(line)["stats"]
            retries += stats["retries"]
            replayed += (stats["journal"] or {}).get("replayed", 0)
    left = 0
    if (data_dir / "journal").exists():
        journal = EventJournal(data_dir / "journal", 1 << 30)
        left = journal.stats()["entries"]
        journal.close()
    return Result(
        fault=fault,
        expected=len(objects),
        events=len(events),
        lost=lost,
        duplicated=duplicated,
        orphaned=orphaned,
        images_expected=images_expected,
        images_lost=images_lost,
        alerts=len(alerts),
        alerts_duplicated=len(alerts) - len(set(alerts)),
        alerts_unsent=len(alert_rows) - sent_rows,
        telegram_duplicated=max(0, accepted - sent_rows),
        telegram_refused=requests - accepted,
        journal_left=left,
        restarts=restarts,
        retries=retries,
        replayed=replayed,
        wall_s=round(wall_s, 1),
    )


def _naive_ts(value: Any) -> float:
    from datetime import UTC

    return value.replace(tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "worker":
        return _worker(json.loads(argv[1]))
    parser = argparse.ArgumentParser(prog="aidoor bench faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=36.0, help="scene length per run (real time)")
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="scratch MariaDB database (dropped and re-created!); %(default)s"
    )
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument(
        "--no-journal", action="store_true", help="control run: the writer without its journal (expect losses)"
    )
    args = parser.parse_args(list(argv))
    log_to_stderr()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    if not args.database_url.startswith("mysql"):
        parser.error("--database-url must be a MySQL/MariaDB URL (the database fault needs a TCP server)")
    with tempfile.TemporaryDirectory(prefix="aidoor-faults-") as work:
        for fault in faults:
            result = run_fault(fault, args.database_url, args.seconds, Path(work), journal=not args.no_journal)
            print(json.dumps({**asdict(result), **({"journal": False} if args.no_journal else {})}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
