"""The event writer's local journal (issue #14 item 4, docs/pipeline.md "Journal"): what waits for
the database or the store survives a crash, is replayed at the next start and is written exactly
once (events, image rows, objects and alerts), and the bound refuses loudly, never silently."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus, EventCreated
from detection_service.database import make_engine, make_session_factory
from detection_service.ml.classes import CLASS_IDS
from detection_service.pipeline.capture import Frame
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import Detection, classify_detections
from detection_service.pipeline.events import EventRecorder, FrameInfo
from detection_service.pipeline.journal import JOURNAL_FILE, EventJournal, dumps, loads
from detection_service.pipeline.tracker import ObjectTracker
from detection_service.storage import LocalObjectStore
from schemas.db import DetectionEvent, EventImage, NotificationHistory, ObjectType, Telegram
from schemas.settings import DetectionSettings

WALL0 = 1_780_000_000.0  # 2026-05-28 UTC
FPS = 10
SETTINGS = DetectionSettings(capture_count=3, capture_interval=0.5, jpeg_quality=70)

pytestmark = pytest.mark.usefixtures("offline_dir")  # the tracker needs Ultralytics offline


@pytest.fixture
def session_factory(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    s = LocalObjectStore(tmp_path / "objects", "ai-door-system", "http://127.0.0.1:8000", b"test-key")
    s.ensure_bucket()
    return s


class StoreDown:
    """An object store that is down: every write fails."""

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        raise ConnectionError("object store unreachable")


def _down_database(tmp_path: Path) -> sessionmaker[Session]:
    # A SQLite file in a directory that does not exist: every connection attempt fails.
    return make_session_factory(make_engine(f"sqlite:///{tmp_path / 'missing' / 'down.db'}"))


def _det(x1: float, y1: float, x2: float, y2: float, name: str, conf: float) -> Detection:
    return Detection(x1, y1, x2, y2, CLASS_IDS[name], name, conf)


def _scene(t: float) -> list[Detection]:
    """A person walks by (0-3 s) while a parcel is set down and taken away again (1-5 s)."""
    x = 40 + 10 * t
    person = [_det(x, 40, x + 60, 200, "person", 0.85)] if t < 3.0 else []
    parcel = [_det(200, 170, 260, 220, "package", 0.8)] if 1.0 <= t < 5.0 else []
    return person + parcel


def _recorder(sf: sessionmaker[Session], store: object, journal_dir: Path, bus: EventBus, **limits) -> EventRecorder:
    config = PipelineConfig(
        package_removed_after_s=2.0, retry_initial_s=0.05, retry_max_s=0.2, journal_dir=str(journal_dir), **limits
    )
    return EventRecorder(sf, store, lambda: SETTINGS, bus, config)  # type: ignore[arg-type]


def _play(recorder: EventRecorder, seconds: float, script: Callable[[float], list[Detection]]) -> None:
    tracker = ObjectTracker()
    for i in range(round(seconds * FPS)):
        t = i / FPS
        image = np.full((240, 320, 3), (i * 7) % 200, np.uint8)
        seen = tracker.update(classify_detections(script(t), 0.5, "medium"), t, WALL0 + t)
        recorder.on_frame(Frame(image, i, t, WALL0 + t), t, seen, FrameInfo("m-test", 10.0, 12.0))


def _wait(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _snapshot(sf: sessionmaker[Session], store: LocalObjectStore) -> dict[str, object]:
    with sf() as s:
        events = s.execute(
            sa.select(DetectionEvent.id, ObjectType.code, DetectionEvent.ended_at, DetectionEvent.event_uid)
            .join(ObjectType, DetectionEvent.object_type_id == ObjectType.id)
            .order_by(DetectionEvent.id)
        ).all()
        images = s.execute(
            sa.select(EventImage.event_id, EventImage.sequence_number, EventImage.image_path).order_by(EventImage.id)
        ).all()
        alerts = s.execute(
            sa.select(NotificationHistory.event_id, NotificationHistory.kind, NotificationHistory.telegram_user_id)
        ).all()
    return {
        "events": [(e.id, e.code, e.ended_at is not None, e.event_uid) for e in events],
        "images": [tuple(i) for i in images],
        "objects": sorted(k for k in [o.key for o in store.list("events/")] if k.endswith(".jpg")),
        "alerts": sorted(tuple(a) for a in alerts),
    }


def _add_recipient(sf: sessionmaker[Session]) -> None:
    with sf.begin() as s:
        s.add(Telegram(user_id="4242", chat_id="4242", bot_token="not-used-here"))


# --- the journal itself --------------------------------------------------------------------------


def test_entries_survive_reopening_in_order_with_their_datetimes_and_blobs(tmp_path: Path) -> None:
    when = datetime(2026, 5, 28, 12, 0, 1, tzinfo=UTC)
    assert loads(dumps({"at": when, "n": [1, {"x": when}]})) == {"at": when, "n": [1, {"x": when}]}
    journal = EventJournal(tmp_path, 10_000)
    first = journal.append("insert", "uid-1", {"detected_at": when})
    second = journal.append("image", "uid-1", {"seq": 1}, b"\xff\xd8jpeg")
    assert first is not None and second is not None and first < second
    journal.close()

    again = EventJournal(tmp_path, 10_000)  # as after a crash: the file is all there is
    entries = again.pending()
    assert [(e.kind, e.event_uid) for e in entries] == [("insert", "uid-1"), ("image", "uid-1")]
    assert entries[0].body == {"detected_at": when} and entries[1].blob == b"\xff\xd8jpeg"
    assert again.stats()["entries"] == 2 and again.stats()["bytes"] > 0
    again.remove(entries[0].id)
    again.remove(entries[0].id)  # twice: a no-op
    assert [e.id for e in again.pending()] == [second] and again.entries == 1
    mode = sqlite3.connect(tmp_path / JOURNAL_FILE).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_the_bound_refuses_captures_first_then_rows_and_counts_each(tmp_path: Path, caplog) -> None:
    journal = EventJournal(tmp_path, 2_000)
    assert journal.append("image", "u", {"seq": 1}, b"x" * 1_500) is not None
    # A second capture would pass the limit less the rows' reserve: refused, logged, counted.
    assert journal.append("image", "u", {"seq": 2}, b"x" * 400) is None
    # A row still fits into the reserve ...
    assert journal.append("insert", "u", {"values": {"a": 1}}) is not None
    # ... until the limit itself.
    assert journal.append("update", "u", {"values": {"pad": "y" * 600}}) is None
    stats = journal.stats()
    assert stats["refused"] == {"insert": 0, "update": 1, "image": 1}
    assert stats["entries"] == 2 and stats["bytes"] <= stats["max_bytes"] == 2_000
    assert "event journal full" in caplog.text


def test_an_unreadable_journal_is_kept_aside_and_an_empty_one_started(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILE).write_bytes(b"this is not a SQLite database" * 100)
    journal = EventJournal(tmp_path, 10_000)
    assert journal.pending() == [] and journal.append("insert", "u", {}) is not None
    assert len(list(tmp_path.glob(f"{JOURNAL_FILE}.corrupt-*"))) == 1


# --- the writer with it ---------------------------------------------------------------------------


def test_a_crash_while_database_and_store_are_down_loses_nothing(tmp_path, session_factory, store) -> None:
    _add_recipient(session_factory)
    journal_dir = tmp_path / "journal"
    crashed = _recorder(_down_database(tmp_path), StoreDown(), journal_dir, EventBus())
    _play(crashed, 9.0, _scene)
    assert crashed.events_created == 2
    stats = crashed.stats()["journal"]
    # 2 inserts, a person's end and a package's removal, 3 captures each: all on disk.
    assert stats["entries"] == 10 and stats["refused"] == {"insert": 0, "update": 0, "image": 0}
    crashed.writer.close(0.3)  # the process dies: nothing reached the database or the store

    bus = EventBus()
    sub = bus.subscribe("test")
    restarted = _recorder(session_factory, store, journal_dir, bus)
    assert _wait(lambda: restarted.writer.pending() == 0 and restarted.stats()["journal"]["entries"] == 0)
    after = _snapshot(session_factory, store)
    assert [(code, ended) for _, code, ended, _ in after["events"]] == [("person", True), ("package", True)]
    assert all(uid for *_, uid in after["events"])
    ids = [event_id for event_id, *_ in after["events"]]
    assert sorted((e, seq) for e, seq, _ in after["images"]) == [(i, s) for i in ids for s in (1, 2, 3)]
    assert after["objects"] == sorted(path for *_, path in after["images"])
    assert after["alerts"] and len(after["alerts"]) == len(set(after["alerts"]))  # one per event / kind / recipient
    assert (ids[0], "event") in {(e, k) for e, k, _ in after["alerts"]}
    assert restarted.stats()["journal"]["replayed"] == 10
    created = []
    while (m := sub.get(timeout=0.2)) is not None:
        created += [m] if isinstance(m, EventCreated) else []
    assert [m.object_type for m in created] == ["person", "package"]
    restarted.close(2.0)


def test_a_replay_after_writes_that_went_through_but_were_not_acknowledged_duplicates_nothing(
    tmp_path, session_factory, store, monkeypatch
) -> None:
    _add_recipient(session_factory)
    journal_dir = tmp_path / "journal"
    first = _recorder(session_factory, store, journal_dir, EventBus())
    # Every write commits, but the process dies before it can forget the journal entry.
    monkeypatch.setattr(first.writer.journal, "remove", lambda entry_id: None)
    _play(first, 9.0, _scene)
    assert _wait(lambda: first.writer.pending() == 0)
    first.close(2.0)
    before = _snapshot(session_factory, store)
    assert len(before["events"]) == 2 and len(before["images"]) == 6 and before["alerts"]
    assert EventJournal(journal_dir, 1 << 20).stats()["entries"] == 10

    bus = EventBus()
    sub = bus.subscribe("test")
    second = _recorder(session_factory, store, journal_dir, bus)
    assert _wait(lambda: second.writer.pending() == 0 and second.stats()["journal"]["entries"] == 0)
    assert _snapshot(session_factory, store) == before  # the same rows, objects and alerts; nothing new
    messages = []
    while (m := sub.get(timeout=0.2)) is not None:
        messages.append(m)
    assert not [m for m in messages if isinstance(m, EventCreated)]  # an existing row is not announced again
    second.close(2.0)


def test_pending_writes_of_an_event_deleted_meanwhile_are_dropped(tmp_path, session_factory, store) -> None:
    journal_dir = tmp_path / "journal"
    first = _recorder(session_factory, StoreDown(), journal_dir, EventBus())
    _play(first, 9.0, _scene)
    assert _wait(lambda: len(first.writer.db.jobs) == 0 and first.writer.db.done >= 4)  # rows in, captures not
    first.close(0.3)
    with session_factory.begin() as s:
        s.execute(sa.delete(DetectionEvent))  # a user deleted both events while the store was down

    second = _recorder(session_factory, store, journal_dir, EventBus())
    assert _wait(lambda: second.writer.pending() == 0 and second.stats()["journal"]["entries"] == 0)
    assert _snapshot(session_factory, store)["images"] == [] and [o.key for o in store.list("events/")] == []
    second.close(2.0)


def test_a_full_journal_drops_captures_and_says_so(tmp_path, caplog) -> None:
    recorder = _recorder(
        _down_database(tmp_path), StoreDown(), tmp_path / "journal", EventBus(), journal_max_bytes=6_000
    )
    _play(recorder, 9.0, _scene)
    stats = recorder.stats()
    assert stats["journal"]["refused"]["image"] >= 1 and stats["images_dropped"] >= stats["journal"]["refused"]["image"]
    assert stats["journal"]["refused"]["insert"] == 0  # the rows' reserve held
    assert stats["journal"]["bytes"] <= 6_000
    assert "event journal full" in caplog.text
    recorder.close(0.3)


def test_status_and_performance_show_the_journal(client) -> None:
    status = client.get("/api/system/status").json()["data"]
    journal = status["journal"]
    assert journal is not None and journal["max_bytes"] == 256 * 1024 * 1024
    assert set(journal) == {"entries", "bytes", "max_bytes", "replayed", "refused"}
    current = client.get("/api/system/performance").json()["data"]["current"]
    assert current["journal"]["max_bytes"] == 256 * 1024 * 1024
