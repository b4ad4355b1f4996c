"""Telegram alert benchmark: prints ONE JSON line (issue 6's figures), logs go to stderr.

    aidoor bench notify [--events 100] [--interval 0.05] [--database-url URL]

Event created -> photo accepted by the Bot API, end to end through the real path: the pipeline's
EventWriter inserts the event and its pending alert in one transaction, the notifier (default
settings, python-telegram-bot) claims the row and uploads capture 1 with sendPhoto to the fake
Bot API of bench/fake_telegram.py on 127.0.0.1. t0 = the moment the event is handed to the
writer; t1 = the moment the fake accepted the photo. Two rounds of ``--events`` events each:
clean, then with a 429 (retry_after=1) on every 10th sendPhoto. ``duplicates`` counts photos of
the same event beyond the first, over both rounds (the cooldown is off so every event alerts).
Database: a throw-away SQLite file unless ``--database-url``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detection_service.bench import percentile

log = logging.getLogger("aidoor.bench.notify")

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
CHAT = "10001"


def _jpeg() -> bytes:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    image = (rng.random((480, 640, 3)) * 60 + 80).astype("uint8")
    cv2.rectangle(image, (200, 100), (420, 460), (30, 160, 30), -1)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def run(events: int = 100, interval_s: float = 0.2, database_url: str | None = None) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from detection_service.bench.fake_telegram import Failure, FakeTelegram
    from detection_service.bus import EventBus
    from detection_service.config import Settings
    from detection_service.database import make_engine, make_session_factory, upgrade
    from detection_service.notifications.crypto import TokenCipher
    from detection_service.notifications.worker import build_notifier
    from detection_service.pipeline.config import PipelineConfig
    from detection_service.pipeline.events import EventHandle, EventWriter, InsertEvent, StoreImage
    from detection_service.storage import make_object_store
    from schemas.db import Telegram

    with tempfile.TemporaryDirectory(prefix="aidoor-bench-notify-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        key = Fernet.generate_key().decode()
        fake = FakeTelegram()
        fake.add_bot(TOKEN)
        fake.start()
        settings = Settings.from_env(
            environ={"AIDOOR_TELEGRAM_API_URL": fake.url, "AIDOOR_TELEGRAM_KEY": key},
            data_dir=Path(tmp) / "data",
            database_url=url,
        )
        engine = make_engine(url)
        sf = make_session_factory(engine)
        store = make_object_store(settings)
        store.ensure_bucket()
        with sf.begin() as session:
            session.add(
                Telegram(user_id=CHAT, chat_id=CHAT, bot_token=TokenCipher(key.encode(), "bench").encrypt(TOKEN))
            )
        bus = EventBus()
        notifier = build_notifier(settings, sf, store, bus=bus, cooldown_override_s=0.0, updates="off")
        notifier.start()
        writer = EventWriter(sf, store, bus, PipelineConfig(), alerts=notifier.queue_config)
        shot = _jpeg()
        rounds: dict[str, dict[int, float]] = {}
        try:
            for name in ("clean", "with_429"):
                if name == "with_429":
                    counter = {"n": 0}
                    original = fake._take_failure

                    def every_tenth(method: str, chat_id: Any, _orig: Any = original, counter: Any = counter) -> Any:
                        if method == "sendPhoto":
                            counter["n"] += 1
                            if counter["n"] % 10 == 0:
                                return Failure(method, 429, retry_after=1)
                        return _orig(method, chat_id)

                    fake._take_failure = every_tenth
                handles = []
                for i in range(events):
                    now = datetime.now(UTC)
                    handle = EventHandle(now, "person", i)
                    values = {
                        "confidence_score": 0.9,
                        "bbox_coordinates": "{}",
                        "model_version": "bench",
                        "tracking_id": i,
                        "status": "active",
                        "detected_at": now,
                        "created_by": "bench",
                    }
                    t0 = time.monotonic()
                    writer.insert_event(InsertEvent(handle, values, shot, {}))
                    writer.store_image(StoreImage(handle, 1, shot, now, 85))
                    handles.append((handle, t0))
                    time.sleep(interval_s)
                deadline = time.monotonic() + 60 + events * 0.2
                while time.monotonic() < deadline:
                    ids = {h.event_id for h, _ in handles}
                    if None not in ids and ids <= _accepted(fake).keys():
                        break
                    time.sleep(0.05)
                rounds[name] = {h.event_id: t0 for h, t0 in handles if h.event_id is not None}
        finally:
            writer.close(5)
            notifier.close(5)
            fake.stop()
            engine.dispose()
        accepted = _accepted(fake)
        counts: dict[int, int] = {}
        for sent in fake.sent:
            event_id = _event_of(sent)
            if event_id is not None:
                counts[event_id] = counts.get(event_id, 0) + 1
        latency = {
            name: [(accepted[e] - t0) * 1000 for e, t0 in r.items() if e in accepted] for name, r in rounds.items()
        }
        return {
            "events": events,
            "interval_s": interval_s,
            "p50_ms": percentile(latency["clean"], 50, 1),
            "p95_ms": percentile(latency["clean"], 95, 1),
            "max_ms": percentile(latency["clean"], 100, 1),
            "mean_ms": round(statistics.fmean(latency["clean"]), 1) if latency["clean"] else None,
            "p50_ms_with_429": percentile(latency["with_429"], 50, 1),
            "p95_ms_with_429": percentile(latency["with_429"], 95, 1),
            "sent": sum(1 for e in rounds["clean"] if e in accepted),
            "sent_with_429": sum(1 for e in rounds["with_429"] if e in accepted),
            "duplicates": sum(c - 1 for c in counts.values() if c > 1),
            "retries": notifier.stats.retries,
            "photo_bytes": len(shot),
            "database": url.split(":", 1)[0],
        }


def _event_of(sent: Any) -> int | None:
    try:
        return int(sent.reply_markup["inline_keyboard"][0][0]["callback_data"].split(":")[1])
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def _accepted(fake: Any) -> dict[int, float]:
    first: dict[int, float] = {}
    for sent in list(fake.sent):
        event_id = _event_of(sent)
        if event_id is not None and event_id not in first and sent.method == "sendPhoto":
            first[event_id] = sent.at
    return first


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench notify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between events")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(list(argv or []))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run(args.events, args.interval, args.database_url)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["duplicates"] == 0 and result["sent"] == args.events else 1
