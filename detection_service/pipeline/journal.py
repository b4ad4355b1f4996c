"""The event writer's local write-ahead journal: nothing queued is lost across a crash.

Every write the pipeline hands to ``EventWriter`` (a new event, a change to it, a capture with
its image row) is first appended here, on local disk, and removed once the database / object
store has it. At start the writer replays what is left, in order. The journal is one SQLite
file (``<data dir>/journal/events.sqlite3``) in WAL mode with ``synchronous=FULL``: each append
is one fsync'd transaction, so what ``append`` returned survives a SIGKILL or a power cut.

Bounded by ``max_bytes`` (the summed size of entries: capture JPEGs plus the JSON bodies).
Captures may fill it up to the limit less a reserve (``ROW_RESERVE_FRACTION``) kept for event
rows and their updates; past that a capture is refused (the caller drops it), past the limit
itself a row is refused (the caller keeps it in memory only). Either way it is logged and
counted per kind in ``stats()["refused"]`` — never silently. See docs/pipeline.md "Journal".
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_FILE = "events.sqlite3"
ROW_RESERVE_FRACTION = 1 / 16  # of max_bytes, kept free of captures for event rows / updates
KIND_INSERT, KIND_UPDATE, KIND_IMAGE = "insert", "update", "image"
KINDS = (KIND_INSERT, KIND_UPDATE, KIND_IMAGE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    event_uid TEXT NOT NULL,
    body TEXT NOT NULL,
    blob BLOB,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    kind: str
    event_uid: str
    body: dict[str, Any]
    blob: bytes | None


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _hook(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and "$dt" in obj:
        return datetime.fromisoformat(obj["$dt"])
    return obj


def dumps(body: dict[str, Any]) -> str:
    """JSON with datetimes kept as (timezone-aware) datetimes across a round trip."""
    return json.dumps(body, default=_default, separators=(",", ":"))


def loads(text: str) -> dict[str, Any]:
    return json.loads(text, object_hook=_hook)


class EventJournal:
    """Thread-safe: the pipeline thread appends, the writer's two lanes remove."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("the journal's max_bytes must be positive")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / JOURNAL_FILE
        self.max_bytes = max_bytes
        self.refused = dict.fromkeys(KINDS, 0)
        self.replayed = 0
        self._lock = threading.Lock()
        self._conn = self._open()
        self.bytes, self.entries = self._conn.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries").fetchone()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            # An unreadable journal must not keep the service from starting: keep it aside for
            # a person to look at and start an empty one.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("event journal %s unreadable (%s); moved to %s, starting empty", self.path, exc, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # fsync at every commit, WAL included
        conn.execute(_SCHEMA)
        conn.execute("SELECT COUNT(*) FROM entries").fetchone()  # a corrupt file fails here
        return conn

    def append(self, kind: str, event_uid: str, body: dict[str, Any], blob: bytes | None = None) -> int | None:
        """Durably append one entry; its id, or None when the bound refuses it (logged, counted)."""
        text = dumps(body)
        size = len(text) + (len(blob) if blob else 0)
        limit = self.max_bytes if kind != KIND_IMAGE else self.max_bytes * (1 - ROW_RESERVE_FRACTION)
        with self._lock:
            if self.bytes + size > limit:
                self.refused[kind] += 1
                log.error(
                    "event journal full (%d of %d bytes): %s of event %s not journalled (%d %s refused so far)",
                    self.bytes,
                    self.max_bytes,
                    kind,
                    event_uid,
                    self.refused[kind],
                    kind,
                )
                return None
            cursor = self._conn.execute(
                "INSERT INTO entries (kind, event_uid, body, blob, size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, event_uid, text, blob, size, time.time()),
            )
            self.bytes += size
            self.entries += 1
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def remove(self, entry_id: int) -> None:
        """The write is done: forget the entry (a no-op for an id already removed)."""
        with self._lock:
            row = self._conn.execute("SELECT size FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                return
            self._conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            self.bytes -= row[0]
            self.entries -= 1

    def pending(self) -> list[JournalEntry]:
        """Every entry left, oldest first (the order the writes were made in)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, kind, event_uid, body, blob FROM entries ORDER BY id").fetchall()
        return [JournalEntry(row[0], row[1], row[2], loads(row[3]), row[4]) for row in rows]

    def stats(self) -> dict[str, Any]:
        return {  # no path: GET /api/detection shows these to viewers
            "entries": self.entries,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "replayed": self.replayed,
            "refused": dict(self.refused),
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()
