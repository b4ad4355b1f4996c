"""Tracks -> detection events: confirmation, capture sequences, end / package removal, storage.

The pipeline thread calls ``EventRecorder.on_frame`` for every frame it handles; that call only
updates in-memory state and encodes the occasional JPEG. Database rows and object-store writes
go through ``EventWriter``: two worker threads (one for the database, one for the store) with
unbounded FIFO queues. A failed write is retried with exponential backoff until it succeeds;
event rows are never dropped, captures only when more than ``max_pending_image_bytes`` of them
wait for a store that is down. Bus messages are published after the write they describe.
With ``PipelineConfig.journal_dir`` set, every write is first appended to a local fsync'd journal
(``pipeline/journal.py``) and replayed at the next start; writes are idempotent (the event's
``event_uid``, deterministic image keys, one image row per sequence number), so a replay after
a commit that was not acknowledged changes nothing.
A new event takes one path, whoever records it (this recorder or a manual detection,
``realtime/manual_detection.py``): ``record_event`` inserts the row, queues its alerts in the
same transaction and publishes ``EventCreated`` after the commit.
See docs/pipeline.md for the rules (confirmation, one event per object, package life cycle).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus, EventCreated, EventUpdated, PackageRemoved
from detection_service.notifications.queue import QueueConfig, enqueue_alerts
from detection_service.pipeline.capture import Frame
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import UNCLASSIFIED, Detection
from detection_service.pipeline.journal import KIND_IMAGE, KIND_INSERT, KIND_UPDATE, EventJournal, JournalEntry
from detection_service.pipeline.tracker import Track
from detection_service.retry import Backoff
from detection_service.storage.base import ObjectStore
from detection_service.storage.keys import event_image_key
from schemas.db import DEFAULT_CAMERA_ID, DetectionEvent, EventImage, ObjectType
from schemas.enums import EventStatus
from schemas.settings import DetectionSettings

log = logging.getLogger(__name__)

PACKAGE = "package"
ACTOR = "pipeline"


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What the pipeline knows about the detector run that produced ``seen``."""

    model_version: str | None
    fps: float
    processing_ms: float


# A capture's box is recorded only if the detector saw the object this recently (seconds): an older
# box would label the wrong pixels.
BOX_FRESH_S = 0.25


def bbox_json(bbox: tuple[float, float, float, float], width: int, height: int) -> dict[str, int]:
    x1, y1, x2, y2 = (round(v) for v in bbox)
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "frame_width": width, "frame_height": height}


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _utc(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def object_type_id(session: Session, code: str) -> int | None:
    return session.scalar(sa.select(ObjectType.id).where(ObjectType.code == code))


def record_event(
    session_factory: sessionmaker[Session],
    bus: EventBus,
    alerts: QueueConfig,
    *,
    object_type: str,
    values: dict[str, Any],
    bbox: dict[str, int],
    tracking_id: int,
    snapshot: bytes,
    type_id: Callable[[Session, str], int | None] = object_type_id,
    in_transaction: Callable[[Session, DetectionEvent], None] | None = None,
    committed: Callable[[int], None] | None = None,
) -> int:
    """The one path of a new event: insert its ``detection_events`` row (``values``: its columns,
    ``detected_at`` and ``confidence_score`` among them), run ``in_transaction`` with the flushed
    row (e.g. store the capture), queue its Telegram alerts, commit all of it together, call ``committed`` and then
    publish ``EventCreated``. Returns the new event id; raises (nothing committed) on failure.
    Idempotent when ``values`` carries an ``event_uid``: if that row exists (an earlier commit that
    was not acknowledged, a journal replay), its id is returned and nothing is inserted, queued or
    published again."""
    uid = values.get("event_uid")
    with session_factory.begin() as session:
        existing = session.scalar(sa.select(DetectionEvent.id).where(DetectionEvent.event_uid == uid)) if uid else None
        if existing is None:
            row = DetectionEvent(object_type_id=type_id(session, object_type), **values)
            session.add(row)
            session.flush()
            event_id = row.id
            if in_transaction is not None:
                in_transaction(session, row)
            enqueue_alerts(session, event_id, alerts)  # pending Telegram alerts commit with the event
        else:
            event_id = existing
    if committed is not None:
        committed(event_id)
    if existing is not None:
        log.info("event %s (%s) was already written: kept its row %d", uid, object_type, event_id)
        return event_id
    detected_at = values["detected_at"]
    bus.publish(
        EventCreated(
            event_id=event_id,
            object_type=object_type,
            confidence=float(values["confidence_score"]),
            bbox=bbox,
            tracking_id=tracking_id,
            model_version=values.get("model_version"),
            detected_at=detected_at,
            camera_id=int(values.get("camera_id", DEFAULT_CAMERA_ID)),
            image_key=event_image_key(event_id, detected_at, 1),
            snapshot_jpeg=snapshot,
        )
    )
    return event_id


# --------------------------------------------------------------------------- writer


class EventHandle:
    """Shared between the pipeline thread and the writer: the row id once it exists."""

    def __init__(
        self,
        detected_at: datetime,
        object_type: str,
        tracking_id: int,
        event_id: int | None = None,
        uid: str | None = None,
    ) -> None:
        self.detected_at = detected_at
        self.object_type = object_type
        self.tracking_id = tracking_id
        self.event_id = event_id
        self.uid = uid or str(uuid.uuid4())  # the row's event_uid: its idempotency key
        self.gone = False  # a replayed event whose row no longer exists (deleted meanwhile)
        self.images_stored = 0

    def resolved(self) -> bool:
        return self.event_id is not None or self.gone


class _Job(ABC):
    size = 0  # bytes held in memory while queued
    attempts = 0
    entry_id: int | None = None  # its journal entry, removed when the job is done

    def ready(self) -> bool:
        return True

    @abstractmethod
    def run(self, writer: EventWriter) -> None: ...


class _Lane:
    """One worker thread draining a FIFO; the first job that is ready runs, failures back off."""

    def __init__(self, name: str, writer: EventWriter) -> None:
        self.name = name
        self.writer = writer
        self.jobs: deque[_Job] = deque()
        self.cond = threading.Condition()
        self.done = 0
        self.retries = 0
        self.last_error: str | None = None
        self.closing_deadline: float | None = None
        self.thread = threading.Thread(target=self._loop, name=f"event-writer-{name}", daemon=True)
        self.thread.start()

    def put(self, job: _Job) -> None:
        with self.cond:
            self.jobs.append(job)
            self.cond.notify()

    def poke(self) -> None:
        with self.cond:
            self.cond.notify()

    def _expired(self) -> bool:
        return self.closing_deadline is not None and time.monotonic() >= self.closing_deadline

    def _loop(self) -> None:
        cfg = self.writer.config
        backoff = Backoff(cfg.retry_initial_s, cfg.retry_max_s)
        while True:
            with self.cond:
                job = next((j for j in self.jobs if j.ready()), None)
                if job is None:
                    if self.closing_deadline is not None and (not self.jobs or self._expired()):
                        return
                    self.cond.wait(0.1)  # not-ready jobs wait for another lane: poll briefly
                    continue
            try:
                job.run(self.writer)
            except Exception as exc:
                self.retries += 1
                job.attempts += 1
                message = f"{type(job).__name__}: {type(exc).__name__}: {exc}"
                if message != self.last_error:
                    log.warning("event writer (%s) failed, retrying in %.1f s: %s", self.name, backoff.delay, message)
                self.last_error = message
                with self.cond:
                    if job.attempts % 3 == 0 and len(self.jobs) > 1:
                        # A job that keeps failing (a bad row, not an outage) goes to the back so
                        # it cannot hold up every later event; it is still retried, never dropped.
                        self.jobs.remove(job)
                        self.jobs.append(job)
                    if self._expired():
                        return
                    self.cond.wait(backoff.next_delay())
                continue
            backoff.reset()
            self.last_error = None
            with self.cond:
                self.jobs.remove(job)
                self.done += 1
                self.writer._released(job)


class EventWriter:
    """``alerts``: the alert queue's configuration (``Notifier.queue_config``); without one, alerts
    are queued with the defaults and no notifier is woken (a pipeline without a notifier)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        bus: EventBus,
        config: PipelineConfig,
        alerts: QueueConfig | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.bus = bus
        self.config = config
        self.alerts = alerts or QueueConfig()
        self.images_dropped = 0
        self.pending_image_bytes = 0
        self._type_ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self.journal: EventJournal | None = None
        if config.journal_dir:
            self.journal = EventJournal(Path(config.journal_dir), config.journal_max_bytes)
        self.db = _Lane("db", self)
        self.images = _Lane("store", self)
        if self.journal is not None:
            self._replay(self.journal)

    def _replay(self, journal: EventJournal) -> None:
        """Queue the writes a previous run left in the journal, in their order. An event whose
        insert is not among them was committed: its row id is looked up by ``event_uid`` first."""
        entries = journal.pending()
        if not entries:
            return
        inserted = {e.event_uid for e in entries if e.kind == KIND_INSERT}
        handles: dict[str, EventHandle] = {}
        for entry in entries:
            body = entry.body
            handle = handles.get(entry.event_uid)
            if handle is None:
                handle = EventHandle(body["detected_at"], body["object_type"], body["tracking_id"], uid=entry.event_uid)
                handles[entry.event_uid] = handle
                if entry.event_uid not in inserted:
                    self.db.put(ResolveEvent(handle))
            job = _job_of(entry, handle)
            job.entry_id = entry.id
            if isinstance(job, StoreImage):
                with self._lock:
                    self.pending_image_bytes += job.size
                self.images.put(job)
            else:
                self.db.put(job)
        journal.replayed += len(entries)
        log.warning(
            "event journal: replaying %d write(s) of %d event(s) a previous run left undone", len(entries), len(handles)
        )

    def _journal(self, job: _Job, kind: str, handle: EventHandle, body: dict[str, Any], blob: bytes | None) -> bool:
        """Append the job's entry before it is queued; False when the journal refuses it (full)."""
        if self.journal is None:
            return True
        head = {"object_type": handle.object_type, "tracking_id": handle.tracking_id, "detected_at": handle.detected_at}
        try:
            job.entry_id = self.journal.append(kind, handle.uid, {**head, **body}, blob)
        except Exception as exc:  # a failing disk degrades to the in-memory queue, never stops the pipeline
            log.error("event journal write failed (%s of event %s kept in memory only): %s", kind, handle.uid, exc)
            return True
        return job.entry_id is not None

    def type_id(self, session: Session, code: str) -> int:
        if code not in self._type_ids:
            rows = session.execute(sa.select(ObjectType.code, ObjectType.id)).all()
            self._type_ids.update(dict(rows))
        return self._type_ids[code]

    def insert_event(self, job: InsertEvent) -> None:
        # Refused by a full journal, the row still waits in memory (only a crash would lose it).
        self._journal(job, KIND_INSERT, job.handle, {"values": job.values, "bbox": job.bbox}, None)
        self.db.put(job)

    def store_image(self, job: StoreImage) -> bool:
        with self._lock:
            if self.pending_image_bytes + job.size > self.config.max_pending_image_bytes:
                self.images_dropped += 1
                log.error(
                    "dropping capture %d of an event: %d bytes of captures wait for the store",
                    job.seq,
                    self.pending_image_bytes,
                )
                return False
            self.pending_image_bytes += job.size
        body = {"seq": job.seq, "captured_at": job.captured_at, "quality": job.quality, "box": job.box}
        if not self._journal(job, KIND_IMAGE, job.handle, body, job.jpeg):
            with self._lock:
                self.pending_image_bytes -= job.size
                self.images_dropped += 1
            return False
        self.images.put(job)
        return True

    def update_event(self, job: UpdateEvent) -> None:
        body = {"values": job.values, "change": job.change, "removed": job.removed}
        self._journal(job, KIND_UPDATE, job.handle, body, None)
        self.db.put(job)

    def _released(self, job: _Job) -> None:
        if job.size:
            with self._lock:
                self.pending_image_bytes -= job.size
        if job.entry_id is not None and self.journal is not None:
            try:
                self.journal.remove(job.entry_id)
            except Exception as exc:  # the entry stays: replayed (idempotently) at the next start
                log.error("event journal: could not remove entry %d: %s", job.entry_id, exc)

    def pending(self) -> int:
        return len(self.db.jobs) + len(self.images.jobs)

    def stats(self) -> dict[str, Any]:
        return {
            "pending_db": len(self.db.jobs),
            "pending_images": len(self.images.jobs),
            "pending_image_bytes": self.pending_image_bytes,
            "written": self.db.done + self.images.done,
            "retries": self.db.retries + self.images.retries,
            "images_dropped": self.images_dropped,
            "last_error": self.db.last_error or self.images.last_error,
            "journal": self.journal.stats() if self.journal is not None else None,
        }

    def close(self, timeout: float = 5.0) -> int:
        """Drain for up to ``timeout`` s; returns how many writes were left undone (kept in the
        journal for the next start; lost without one)."""
        deadline = time.monotonic() + timeout
        for lane in (self.db, self.images):
            lane.closing_deadline = deadline
            lane.poke()
        for lane in (self.db, self.images):
            lane.thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
        left = self.pending()
        if left and self.journal is not None:
            log.warning("event writer closed with %d writes undone: kept in the journal for the next start", left)
        elif left:
            log.error("event writer closed with %d writes undone (database/store unavailable)", left)
        if self.journal is not None and not (self.db.thread.is_alive() or self.images.thread.is_alive()):
            self.journal.close()
        return left


class InsertEvent(_Job):
    def __init__(self, handle: EventHandle, values: dict[str, Any], snapshot: bytes, bbox: dict[str, int]) -> None:
        self.handle, self.values, self.snapshot, self.bbox = handle, {**values, "event_uid": handle.uid}, snapshot, bbox
        self.object_type = handle.object_type  # as confirmed; a later change is its own UpdateEvent

    def run(self, writer: EventWriter) -> None:
        handle = self.handle

        def committed(event_id: int) -> None:
            handle.event_id = event_id  # only after the commit succeeded
            writer.images.poke()

        record_event(
            writer.session_factory,
            writer.bus,
            writer.alerts,
            object_type=self.object_type,
            values=self.values,
            bbox=self.bbox,
            tracking_id=handle.tracking_id,
            snapshot=self.snapshot,
            type_id=writer.type_id,
            committed=committed,
        )
        self.snapshot = b""


class StoreImage(_Job):
    def __init__(
        self,
        handle: EventHandle,
        seq: int,
        jpeg: bytes,
        captured_at: datetime,
        quality: int,
        box: dict[str, int] | None = None,
    ) -> None:
        self.handle, self.seq, self.jpeg, self.captured_at, self.quality = handle, seq, jpeg, captured_at, quality
        self.box = box  # the object's box in this capture, when the detector saw it just now
        self.size = len(jpeg)

    def ready(self) -> bool:
        return self.handle.resolved()

    def run(self, writer: EventWriter) -> None:
        if self.handle.event_id is None:  # gone: its event was deleted before the replay
            log.info("capture %d of event %s dropped: the event no longer exists", self.seq, self.handle.uid)
            return
        # The key depends only on the event and the sequence number: a repeated put overwrites.
        key = event_image_key(self.handle.event_id, self.handle.detected_at, self.seq)
        writer.store.put_bytes(key, self.jpeg, "image/jpeg")
        row = AddImageRow(self.handle, self.seq, key, self.captured_at, self.quality, self.box)
        row.entry_id, self.entry_id = self.entry_id, None  # the journal entry ends with the image row
        writer.db.put(row)


class AddImageRow(_Job):
    def __init__(
        self,
        handle: EventHandle,
        seq: int,
        key: str,
        captured_at: datetime,
        quality: int,
        box: dict[str, int] | None = None,
    ) -> None:
        self.handle, self.seq, self.key, self.captured_at, self.quality = handle, seq, key, captured_at, quality
        self.box = box

    def run(self, writer: EventWriter) -> None:
        event_id = self.handle.event_id
        with writer.session_factory.begin() as session:
            if session.get(DetectionEvent, event_id) is None:
                # Deleted while its capture waited (a store outage): the row could never be
                # written; remove the object so none is left without its row.
                writer.store.delete(self.key)
                log.info("capture %d of event %s dropped: the event was deleted meanwhile", self.seq, event_id)
                return
            exists = session.scalar(
                sa.select(EventImage.id).where(EventImage.event_id == event_id, EventImage.sequence_number == self.seq)
            )
            if exists is None:  # a retry after a commit that did go through must not duplicate
                session.add(
                    EventImage(
                        event_id=event_id,
                        image_path=self.key,
                        sequence_number=self.seq,
                        compression_quality=self.quality,
                        captured_at=self.captured_at,
                    )
                )
            if self.seq == 1:
                session.execute(
                    sa.update(DetectionEvent).where(DetectionEvent.id == event_id).values(image_path=self.key)
                )
            elif self.box is not None:
                # Boxes of later captures go under "frames" (the bbox format of docs/datasets.md):
                # a relabelled event then yields a label for every capture, not only the first.
                # This lane is the only writer of bbox_coordinates, so read-modify-write is safe.
                text = session.scalar(sa.select(DetectionEvent.bbox_coordinates).where(DetectionEvent.id == event_id))
                bbox = json.loads(text) if text else {}
                bbox.setdefault("frames", {})[str(self.seq)] = self.box
                session.execute(
                    sa.update(DetectionEvent)
                    .where(DetectionEvent.id == event_id)
                    .values(bbox_coordinates=json.dumps(bbox, separators=(",", ":")))
                )
        self.handle.images_stored += 1
        writer.bus.publish(
            EventUpdated(
                event_id=event_id,  # type: ignore[arg-type]
                change="image",
                object_type=self.handle.object_type,
                image_count=self.handle.images_stored,
                image_key=self.key,
            )
        )


class ResolveEvent(_Job):
    """A replayed event whose insert had committed: find its row id by ``event_uid``."""

    def __init__(self, handle: EventHandle) -> None:
        self.handle = handle

    def run(self, writer: EventWriter) -> None:
        with writer.session_factory() as session:
            event_id = session.scalar(sa.select(DetectionEvent.id).where(DetectionEvent.event_uid == self.handle.uid))
        if event_id is None:
            self.handle.gone = True
            log.warning("event %s of the journal no longer exists: its pending writes are dropped", self.handle.uid)
        self.handle.event_id = event_id
        writer.images.poke()


# UpdateEvent.change: which bus message follows the write ("type", "ended", "removed"; None: none).
CHANGE_TYPE, CHANGE_ENDED, CHANGE_REMOVED = "type", "ended", "removed"


def _update_message(change: str | None, handle: EventHandle, values: dict[str, Any], event_id: int) -> Any:
    if change == CHANGE_TYPE:
        return EventUpdated(
            event_id=event_id, change="type", object_type=values["object_type"], image_count=handle.images_stored
        )
    if change == CHANGE_ENDED:
        return EventUpdated(
            event_id=event_id,
            change="ended",
            object_type=handle.object_type,
            image_count=handle.images_stored,
            ended_at=values["ended_at"],
            tracking_duration=values["tracking_duration"],
        )
    if change == CHANGE_REMOVED:
        return PackageRemoved(
            event_id=event_id,
            tracking_id=handle.tracking_id,
            detected_at=handle.detected_at,
            removed_at=values["ended_at"],
            present_s=values["tracking_duration"],
        )
    return None


class UpdateEvent(_Job):
    """Column changes on an inserted event, then the bus message of ``change``. Idempotent: the
    same values again change nothing, and a removal's alert is queued once per recipient."""

    def __init__(
        self, handle: EventHandle, values: dict[str, Any], change: str | None = None, removed: bool = False
    ) -> None:
        self.handle, self.values, self.change = handle, values, change
        self.removed = removed  # a package's removal: its alert is queued in the same transaction

    def ready(self) -> bool:
        return self.handle.resolved()

    def run(self, writer: EventWriter) -> None:
        if self.handle.event_id is None:  # gone (deleted before the replay)
            return
        values = dict(self.values)
        with writer.session_factory.begin() as session:
            stmt = sa.update(DetectionEvent).where(DetectionEvent.id == self.handle.event_id)
            if "object_type" in values:
                # A user's reclassification wins over the tracker's second thoughts.
                values["object_type_id"] = writer.type_id(session, values.pop("object_type"))
                stmt = stmt.where(DetectionEvent.reclassified_at.is_(None))
            session.execute(stmt.values(**values, updated_by=ACTOR))
            if self.removed:
                enqueue_alerts(session, self.handle.event_id, writer.alerts, kind="removed")  # type: ignore[arg-type]
        message = _update_message(self.change, self.handle, self.values, self.handle.event_id)
        if message is not None:
            writer.bus.publish(message)


def _job_of(entry: JournalEntry, handle: EventHandle) -> _Job:
    """The writer's job of a journal entry (replay)."""
    body = entry.body
    if entry.kind == KIND_INSERT:
        return InsertEvent(handle, body["values"], b"", body["bbox"])
    if entry.kind == KIND_UPDATE:
        return UpdateEvent(handle, body["values"], body["change"], removed=body["removed"])
    if entry.kind == KIND_IMAGE:
        return StoreImage(handle, body["seq"], entry.blob or b"", body["captured_at"], body["quality"], body["box"])
    raise ValueError(f"unknown journal entry kind {entry.kind!r}")


# --------------------------------------------------------------------------- recorder


@dataclass(slots=True)
class OpenEvent:
    handle: EventHandle
    object_type: str
    track_id: int | None
    first_seen: float  # monotonic
    first_wall: float
    last_seen: float
    last_wall: float
    bbox: tuple[float, float, float, float]
    confidence: float
    absent_s: float = 0.0
    track_ids: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _CaptureRun:
    handle: EventHandle
    next_seq: int
    count: int
    interval_s: float
    next_at: float
    event: OpenEvent | None = None


class EventRecorder:
    """Turns tracks into events. ``on_frame``/``suspend``/``resume`` are called from the pipeline
    thread only; ``settings`` must be a cheap getter (it is called per event and capture)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        settings: Callable[[], DetectionSettings],
        bus: EventBus,
        config: PipelineConfig | None = None,
        alerts: QueueConfig | None = None,
        *,
        camera_id: int = DEFAULT_CAMERA_ID,
    ) -> None:
        self.session_factory = session_factory
        self.camera_id = camera_id  # every event is this camera's; resume re-adopts only its own
        self.settings = settings
        self.bus = bus
        self.config = config or PipelineConfig()
        self.writer = EventWriter(session_factory, store, bus, self.config, alerts)
        self.events: list[OpenEvent] = []
        self.events_created = 0
        self._by_track: dict[int, OpenEvent] = {}
        self._captures: list[_CaptureRun] = []
        self._last_run: float | None = None
        self._candidates = 0
        self._parked: list[OpenEvent] = []  # open packages of the last run, kept by ``suspend``

    # -- pipeline hooks -------------------------------------------------------------------

    @property
    def watching(self) -> bool:
        """Open events, or tracks on their way to confirmation: the detector must keep looking
        even without motion (a still object would otherwise never collect its confirming hits)."""
        return bool(self.events) or self._candidates > 0

    def on_frame(
        self, frame: Frame, now: float, seen: list[tuple[Track, Detection]] | None = None, info: FrameInfo | None = None
    ) -> None:
        """Call for every frame; ``seen`` (tracks matched in it) only when the detector ran on it."""
        if seen is not None:
            self._observe(frame, now, seen, info or FrameInfo(None, 0.0, 0.0))
        self._capture_due(frame, now)

    def suspend(self) -> None:
        """The pipeline stops: end non-package events at their last sighting; packages stay open
        in the database (``resume`` re-adopts them); pending captures are abandoned."""
        for event in list(self.events):
            if event.object_type != PACKAGE:
                self._end(event)
        # Packages are also kept here: the next ``resume`` continues them even if their row is
        # still in the writer's queue (a restart right after confirmation) or the database is down.
        self._parked = [e for e in self.events if e.object_type == PACKAGE]
        self.events.clear()
        self._by_track.clear()
        self._captures.clear()
        self._last_run = None
        self._candidates = 0

    def resume(self, now: float | None = None) -> None:
        """The pipeline starts: re-adopt open package events from the database (a package still
        at the door continues its event instead of starting a new one), and close events a crash
        left open. Best effort: a database outage only skips this. ``now``: the pipeline's clock."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        parked, self._parked = self._parked, []
        open_ids: set[int] | None = None  # None: the database did not answer
        try:
            with self.session_factory.begin() as session:
                rows = session.execute(
                    sa.select(DetectionEvent, ObjectType.code)
                    .join(ObjectType, DetectionEvent.object_type_id == ObjectType.id)
                    .where(
                        DetectionEvent.ended_at.is_(None),
                        DetectionEvent.status == EventStatus.ACTIVE.value,
                        DetectionEvent.camera_id == self.camera_id,
                    )
                    .order_by(DetectionEvent.detected_at.desc())
                    .limit(200)
                ).all()
                open_ids = {row.id for row, _ in rows}
                for row, code in rows:
                    if any(_same_event(e.handle, row) for e in parked):
                        continue  # this process's own event: continued from memory below
                    if code != PACKAGE or row.bbox_coordinates is None:
                        last = max(row.updated_at or row.detected_at, row.detected_at)
                        row.ended_at = last
                        row.tracking_duration = int((last - row.detected_at).total_seconds())
                        row.updated_by = ACTOR
                        continue
                    box = json.loads(row.bbox_coordinates)
                    detected = row.detected_at.replace(tzinfo=UTC)
                    handle = EventHandle(detected, PACKAGE, row.tracking_id or 0, event_id=row.id)
                    handle.images_stored = len(row.images)
                    age = max(0.0, wall - detected.timestamp())
                    # Orphaned from the start: any package track at the same place may continue it.
                    seen = now - self.config.orphan_after_s
                    self.events.append(
                        OpenEvent(
                            handle,
                            PACKAGE,
                            None,
                            now - age,
                            detected.timestamp(),
                            seen,
                            wall,
                            (box["x1"], box["y1"], box["x2"], box["y2"]),
                            row.confidence_score or 0.0,
                        )
                    )
        except Exception as exc:
            log.warning("could not re-adopt open package events: %s", exc)
        for event in parked:
            event_id = event.handle.event_id
            if event_id is not None and open_ids is not None and event_id not in open_ids:
                continue  # ended or deleted while the pipeline was stopped
            # Orphaned, as a package read from the database: any package track there continues it.
            event.track_id = None
            event.last_seen = min(event.last_seen, now - self.config.orphan_after_s)
            self.events.append(event)
        if self.events:
            log.info("re-adopted %d open package event(s)", len(self.events))

    def event_of(self, track_id: int) -> EventHandle | None:
        """The handle of the open event a track belongs to, if any (pipeline thread)."""
        event = self._by_track.get(track_id)
        return event.handle if event is not None else None

    def configure(self, config: PipelineConfig) -> None:
        """New pipeline settings (confirmation, end, removal) from the next frame; the recorder and its
        writer share one configuration (the writer's lanes keep the retry limits they started with)."""
        self.config = self.writer.config = config

    def close(self, timeout: float = 5.0) -> int:
        """Stop the writer (after ``suspend``); returns the number of writes left undone."""
        return self.writer.close(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "open_events": len(self.events),
            "events_created": self.events_created,
            "capturing": len(self._captures),
            **self.writer.stats(),
        }

    # -- internals ------------------------------------------------------------------------

    def _observe(self, frame: Frame, now: float, seen: list[tuple[Track, Detection]], info: FrameInfo) -> None:
        cfg = self.config
        seen_events: set[int] = set()
        new: list[tuple[Track, Detection]] = []
        for track, det in seen:
            event = self._by_track.get(track.track_id)
            if event is None:
                new.append((track, det))
            else:
                self._refresh(event, track, det, now, frame)
                seen_events.add(id(event))
        # Known tracks first, so an event seen in this very run is never handed to a newcomer.
        self._candidates = 0
        for track, det in new:
            if track.hits_within(cfg.confirm_window_s, now) < cfg.confirm_hits:
                self._candidates += 1
                continue
            event = self._readopt(track, now, seen_events) or self._create(track, det, frame, info)
            self._refresh(event, track, det, now, frame)
            seen_events.add(id(event))

        step = min(now - self._last_run, cfg.max_absence_step_s) if self._last_run is not None else 0.0
        self._last_run = now
        for event in list(self.events):
            if id(event) in seen_events:
                continue
            event.absent_s += step
            limit = cfg.package_removed_after_s if event.object_type == PACKAGE else cfg.end_after_s
            if event.absent_s >= limit:
                self._end(event)

    def _readopt(self, track: Track, now: float, taken: set[int]) -> OpenEvent | None:
        """An open event of a compatible type, whose own track has gone quiet, at the same place."""
        best, best_iou = None, self.config.readopt_iou
        for event in self.events:
            if id(event) in taken or now - event.last_seen < self.config.orphan_after_s:
                continue
            if UNCLASSIFIED not in (event.object_type, track.object_type) and event.object_type != track.object_type:
                continue
            overlap = iou(event.bbox, track.last_bbox)
            if overlap >= best_iou:
                best, best_iou = event, overlap
        if best is not None:
            log.debug("track %d continues event of track %s", track.track_id, best.track_id)
        return best

    def _create(self, track: Track, det: Detection, frame: Frame, info: FrameInfo) -> OpenEvent:
        settings = self.settings()
        object_type = track.object_type
        detected_at = _utc(track.first_wall)
        handle = EventHandle(detected_at, object_type, track.track_id)
        box = bbox_json(det.xyxy, frame.width, frame.height)
        confidence = round(track.type_confidence, 4)
        values = {
            "confidence_score": confidence,
            "bbox_coordinates": json.dumps(box, separators=(",", ":")),
            "model_version": info.model_version,
            "fps": round(info.fps),
            "processing_time": round(info.processing_ms),
            "tracking_id": track.track_id,
            "status": EventStatus.ACTIVE.value,
            "detected_at": detected_at,
            "created_by": ACTOR,
            "camera_id": self.camera_id,
        }
        snapshot = _encode(frame, settings.jpeg_quality)
        self.writer.insert_event(InsertEvent(handle, values, snapshot, box))
        self.writer.store_image(StoreImage(handle, 1, snapshot, _utc(frame.wall_time), settings.jpeg_quality))
        event = OpenEvent(
            handle,
            object_type,
            track.track_id,
            track.first_seen,
            track.first_wall,
            track.last_seen,
            track.last_wall,
            det.xyxy,
            confidence,
        )
        if settings.capture_count > 1:
            self._captures.append(
                _CaptureRun(
                    handle,
                    2,
                    settings.capture_count,
                    settings.capture_interval,
                    frame.captured_at + settings.capture_interval,
                    event,
                )
            )
        self.events.append(event)
        self.events_created += 1
        log.info("event: %s (track %d, confidence %.2f)", object_type, track.track_id, confidence)
        return event

    def _refresh(self, event: OpenEvent, track: Track, det: Detection, now: float, frame: Frame) -> None:
        self._by_track[track.track_id] = event
        event.track_ids.add(track.track_id)
        event.track_id = track.track_id
        event.last_seen, event.last_wall = now, frame.wall_time
        event.bbox = det.xyxy
        event.absent_s = 0.0
        voted = track.object_type
        if event.object_type == UNCLASSIFIED and voted != UNCLASSIFIED:
            # The type may settle after confirmation (a far person gets confident closer up);
            # only ever from unclassified to a type, never between types (no flapping).
            event.object_type = event.handle.object_type = voted
            event.confidence = round(track.type_confidence, 4)
            handle = event.handle
            self.writer.update_event(
                UpdateEvent(handle, {"object_type": voted, "confidence_score": event.confidence}, CHANGE_TYPE)
            )
        elif voted == event.object_type:
            event.confidence = max(event.confidence, round(track.type_confidence, 4))

    def _end(self, event: OpenEvent) -> None:
        if event in self.events:
            self.events.remove(event)
        for track_id in event.track_ids:
            if self._by_track.get(track_id) is event:
                del self._by_track[track_id]
        handle = event.handle
        ended_at = _utc(event.last_wall)
        duration = max(0, round(event.last_seen - event.first_seen))
        values = {"ended_at": ended_at, "tracking_duration": duration, "confidence_score": event.confidence}
        removed = event.object_type == PACKAGE
        if removed:
            log.info("package removed (event of track %d, present %d s)", handle.tracking_id, duration)
        change = CHANGE_REMOVED if removed else CHANGE_ENDED
        self.writer.update_event(UpdateEvent(handle, values, change, removed=removed))

    def _capture_due(self, frame: Frame, now: float) -> None:
        if not self._captures:
            return
        quality = self.settings().jpeg_quality
        jpeg: bytes | None = None
        for run in list(self._captures):
            if frame.captured_at < run.next_at:
                continue
            jpeg = jpeg or _encode(frame, quality)
            box = None
            if run.event is not None and now - run.event.last_seen <= BOX_FRESH_S:
                box = bbox_json(run.event.bbox, frame.width, frame.height)
            self.writer.store_image(StoreImage(run.handle, run.next_seq, jpeg, _utc(frame.wall_time), quality, box))
            run.next_seq += 1
            run.next_at += run.interval_s
            if run.next_at < frame.captured_at:  # frames came late: keep the spacing from now on
                run.next_at = frame.captured_at + run.interval_s
            if run.next_seq > run.count:
                self._captures.remove(run)


def _same_event(handle: EventHandle, row: DetectionEvent) -> bool:
    """The row of a handle; also while the writer has committed it but not yet set its id."""
    if handle.event_id is not None:
        return handle.event_id == row.id
    detected = row.detected_at.replace(tzinfo=UTC)
    return row.tracking_id == handle.tracking_id and abs((detected - handle.detected_at).total_seconds()) < 1.0


def _encode(frame: Frame, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
