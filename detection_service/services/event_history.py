"""Events and their captures: history with paging and filters, detail with signed image links,
relabelling (the manual labels that feed dataset auto-collection and retraining).

Lists page through ids first (an index-only scan of ``(detected_at, id)`` or
``(object_type_id, detected_at, id)``), then load the rows of that page by primary key, so a
deep page costs an index walk rather than reading every skipped row."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.auto_collect import BoxError, parse_bbox
from detection_service.errors import Invalid, NotFound, Unavailable
from detection_service.ml.classes import CLASS_IDS
from detection_service.storage import ObjectStore, StorageError
from detection_service.storage.keys import label_key
from schemas.db import DetectionEvent, EventImage, ObjectType, utcnow
from schemas.enums import EventStatus, ObjectTypeCode
from schemas.envelope import Page
from schemas.events import MAX_PAGE_LIMIT, ClassifyRequest, EventDetail, EventImageInfo, EventSummary, ObjectTypeInfo

log = logging.getLogger(__name__)

DEFAULT_URL_TTL = timedelta(hours=1)
# A list's total is counted again after this long even if nothing seemed to change (see _total).
TOTAL_TTL_S = 10.0
# date_range shortcuts of GET /api/events; an explicit range is "<start>/<end>" (ISO 8601).
DATE_RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}


# What a list item needs; the rest (bbox JSON, audit columns) is left in the table.
SUMMARY_COLUMNS = (
    "id",
    "camera_id",
    "object_type_id",
    "original_type_id",
    "confidence_score",
    "detected_at",
    "ended_at",
    "tracking_duration",
    "tracking_id",
    "status",
    "user_verified",
    "is_false_positive",
    "reclassified_at",
    "model_version",
    "image_path",
)


class _Type(NamedTuple):
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class EventFilter:
    type: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    status: str | None = None
    camera_id: int | None = None  # docs/cameras.md


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def parse_when(text: str, name: str, end_of_day: bool = False) -> datetime:
    """ISO 8601 date or date-time (naive = UTC). A bare date as an end means the whole day."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(
            f"{name} must be an ISO 8601 date or date-time, got {text!r}",
            {"field": name, "value": text},
            code="INVALID_DATE",
        ) from None
    if end_of_day and len(text.strip()) == 10:
        value += timedelta(days=1)
    return _naive_utc(value)


def parse_date_range(text: str, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """``today``, ``1h``, ``24h``, ``7d``, ``30d``, ``90d``, ``all`` or ``<start>/<end>``."""
    now = now or utcnow()
    text = text.strip()
    if text in ("", "all"):
        return None, None
    if text == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0), None
    if text in DATE_RANGES:
        return now - DATE_RANGES[text], None
    if "/" in text:
        start, _, end = text.partition("/")
        return (
            parse_when(start, "date_range") if start else None,
            parse_when(end, "date_range", end_of_day=True) if end else None,
        )
    raise Invalid(
        f"date_range must be one of {['today', *DATE_RANGES, 'all']} or '<start>/<end>' (ISO 8601)",
        {"value": text},
        code="INVALID_DATE_RANGE",
    )


def check_paging(page: int, limit: int) -> None:
    problems = []
    if page < 1:
        problems.append({"field": "page", "message": "must be 1 or more"})
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        problems.append({"field": "limit", "message": f"must be between 1 and {MAX_PAGE_LIMIT}"})
    if problems:
        raise Invalid("; ".join(f"{p['field']} {p['message']}" for p in problems), problems, code="INVALID_PAGING")


class EventService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        url_ttl: timedelta = DEFAULT_URL_TTL,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.url_ttl = url_ttl
        self._types: dict[int, _Type] = {}
        self._types_lock = threading.Lock()
        self._totals: dict[tuple[EventFilter, int], tuple[int, int, float]] = {}
        self._generation = 0

    # -- object types ---------------------------------------------------------------------

    def types(self) -> list[ObjectTypeInfo]:
        with self.session_factory() as session:
            rows = session.scalars(sa.select(ObjectType).order_by(ObjectType.id)).all()
        return [
            ObjectTypeInfo(id=t.id, code=t.code, name=t.name, description=t.description, is_active=t.is_active)
            for t in rows
        ]

    def _type_map(self, session: Session, need: int | None = None, refresh: bool = False) -> dict[int, _Type]:
        """object_types by id, cached (the table changes only by migration or by hand); re-read
        when an id or code is not in the cache."""
        with self._types_lock:
            if refresh or not self._types or (need is not None and need not in self._types):
                self._types = {
                    i: _Type(c, n)
                    for i, c, n in session.execute(sa.select(ObjectType.id, ObjectType.code, ObjectType.name))
                }
            return self._types

    def _type_id(self, session: Session, code: str) -> int:
        for refresh in (False, True):
            types = self._type_map(session, refresh=refresh)
            for type_id, kind in types.items():
                if kind.code == code:
                    return type_id
        raise Invalid(
            f"unknown object type {code!r}",
            {"types": sorted(kind.code for kind in types.values())},
            code="UNKNOWN_TYPE",
        )

    # -- lists ----------------------------------------------------------------------------

    def _conditions(self, session: Session, flt: EventFilter) -> list[Any]:
        conds: list[Any] = []
        if flt.type:
            conds.append(DetectionEvent.object_type_id == self._type_id(session, flt.type))
        if flt.start is not None:
            conds.append(DetectionEvent.detected_at >= flt.start)
        if flt.end is not None:
            conds.append(DetectionEvent.detected_at < flt.end)
        if flt.start is not None and flt.end is not None and flt.start >= flt.end:
            raise Invalid(
                "the start of the range must be before its end",
                {"start": flt.start.isoformat(), "end": flt.end.isoformat()},
                code="INVALID_DATE_RANGE",
            )
        if flt.status:
            if flt.status not in tuple(EventStatus):
                raise Invalid(
                    f"status must be one of {[s.value for s in EventStatus]}",
                    {"value": flt.status},
                    code="INVALID_STATUS",
                )
            conds.append(DetectionEvent.status == flt.status)
        if flt.camera_id is not None:
            conds.append(DetectionEvent.camera_id == flt.camera_id)
        return conds

    def list_statements(self, session: Session, flt: EventFilter, page: int, limit: int) -> tuple[sa.Select, sa.Select]:
        """The two statements a list runs: its uncached total, and its page (see _summaries)."""
        conds = self._conditions(session, flt)
        count = sa.select(sa.func.count(DetectionEvent.id)).where(*conds)
        return count, self._rows_statement(self._page_query(conds, page, limit))

    def _total(self, session: Session, flt: EventFilter, conds: list[Any]) -> int:
        """COUNT(*) of a filter, remembered while no event was added (MAX(id), an index lookup,
        is unchanged) and nothing in this process changed or deleted events, for at most
        TOTAL_TTL_S (changes made by other processes: Dagster's nightly clean-up)."""
        newest = session.scalar(sa.select(sa.func.max(DetectionEvent.id))) or 0
        key = (flt, self._generation)
        now = time.monotonic()
        cached = self._totals.get(key)
        if cached is not None and cached[0] == newest and now - cached[2] < TOTAL_TTL_S:
            return cached[1]
        total = session.scalar(sa.select(sa.func.count(DetectionEvent.id)).where(*conds)) or 0
        if len(self._totals) >= 256:
            self._totals.clear()
        self._totals[key] = (newest, total, now)
        return total

    def invalidate_totals(self) -> None:
        """Events were changed or deleted (relabel, clean-up): recount from now on."""
        self._generation += 1
        self._totals.clear()

    @staticmethod
    def _page_query(conds: list[Any], page: int, limit: int) -> sa.Select[tuple[int]]:
        return (
            sa.select(DetectionEvent.id)
            .where(*conds)
            .order_by(DetectionEvent.detected_at.desc(), DetectionEvent.id.desc())
            .limit(limit)
            .offset((page - 1) * limit)
        )

    def list_events(self, flt: EventFilter, page: int = 1, limit: int = 20) -> Page[EventSummary]:
        check_paging(page, limit)
        with self.session_factory() as session:
            conds = self._conditions(session, flt)
            total = self._total(session, flt, conds)
            items = self._summaries(session, self._page_query(conds, page, limit)) if total else []
        return Page(items=items, total=total, page=page, limit=limit)

    def recent(self, limit: int = 10) -> list[EventSummary]:
        check_paging(1, limit)
        with self.session_factory() as session:
            return self._summaries(session, self._page_query([], 1, limit))

    def _summaries(self, session: Session, page_ids: sa.Select[tuple[int]]) -> list[EventSummary]:
        rows = session.execute(self._rows_statement(page_ids)).all()
        if not rows:
            return []
        types = self._type_map(session, need=max(r.object_type_id for r in rows))
        return [self._summary(row, types, row.image_count) for row in rows]

    @staticmethod
    def _rows_statement(page_ids: sa.Select[tuple[int]]) -> sa.Select:
        """The page's rows in one statement: a late join on the page of ids (walked in the index,
        so a deep OFFSET skips index entries, not rows) with only the listed columns, and each
        event's image count as a correlated count."""
        page = page_ids.subquery("page")
        image_count = (
            sa.select(sa.func.count(EventImage.id))
            .where(EventImage.event_id == DetectionEvent.id)
            .correlate(DetectionEvent)
            .scalar_subquery()
        )
        return (
            sa.select(*(getattr(DetectionEvent, c) for c in SUMMARY_COLUMNS), image_count.label("image_count"))
            .join(page, page.c.id == DetectionEvent.id)
            .order_by(DetectionEvent.detected_at.desc(), DetectionEvent.id.desc())
        )

    def _summary(self, event: Any, types: dict[int, _Type], image_count: int) -> EventSummary:
        """From an ORM event or a row of SUMMARY_COLUMNS."""
        kind = types.get(event.object_type_id)
        original = types.get(event.original_type_id) if event.original_type_id else None
        url, _ = self._url(event.image_path)
        return EventSummary(
            id=event.id,
            type=kind.code if kind else "unclassified",
            type_name=kind.name if kind else "",
            original_type=original.code if original else None,
            confidence=event.confidence_score,
            detected_at=event.detected_at,
            ended_at=event.ended_at,
            duration_s=event.tracking_duration,
            tracking_id=event.tracking_id,
            status=event.status,
            user_verified=event.user_verified,
            is_false_positive=event.is_false_positive,
            reclassified_at=event.reclassified_at,
            model_version=event.model_version,
            image_count=image_count,
            thumbnail_url=url,
            camera_id=event.camera_id,
        )

    def _url(self, key: str | None) -> tuple[str | None, datetime | None]:
        if not key:
            return None, None
        try:
            return self.store.url_for(key, self.url_ttl), datetime.now(UTC) + self.url_ttl
        except StorageError as exc:  # the store is down: the rest of the answer is still useful
            log.warning("no URL for %s: %s", key, exc)
            return None, None

    # -- one event ------------------------------------------------------------------------

    def _load(self, session: Session, event_id: int) -> DetectionEvent:
        event = session.get(DetectionEvent, event_id)
        if event is None:
            raise NotFound(f"no event {event_id}", {"id": event_id}, code="EVENT_NOT_FOUND")
        return event

    def get(self, event_id: int) -> EventDetail:
        with self.session_factory() as session:
            return self._detail(session, self._load(session, event_id))

    def _detail(self, session: Session, event: DetectionEvent) -> EventDetail:
        types = self._type_map(session, need=event.object_type_id)
        images = [self._image(img) for img in event.images]
        summary = self._summary(event, types, len(images))
        try:
            bbox = json.loads(event.bbox_coordinates) if event.bbox_coordinates else None
        except ValueError:
            bbox = None
        return EventDetail(
            **{f: getattr(summary, f) for f in summary.__struct_fields__},
            bbox=bbox,
            fps=event.fps,
            processing_time_ms=event.processing_time,
            notification_sent=event.notification_sent,
            images=images,
        )

    def _image(self, img: EventImage, **extra: Any) -> EventImageInfo:
        url, expires_at = self._url(img.image_path)
        return EventImageInfo(
            id=img.id,
            event_id=img.event_id,
            sequence_number=img.sequence_number,
            url=url,
            url_expires_at=expires_at,
            key=img.image_path,
            captured_at=img.captured_at,
            compression_quality=img.compression_quality,
            **extra,
        )

    def images(self, event_id: int) -> list[EventImageInfo]:
        with self.session_factory() as session:
            return [self._image(img) for img in self._load(session, event_id).images]

    def unclassified_images(self, page: int = 1, limit: int = 20) -> Page[EventImageInfo]:
        """Captures of events still typed unclassified (false positives excluded), newest first:
        the work list of a person labelling by hand."""
        check_paging(page, limit)
        with self.session_factory() as session:
            type_id = self._type_id(session, ObjectTypeCode.UNCLASSIFIED)
            conds = (DetectionEvent.object_type_id == type_id, DetectionEvent.is_false_positive.is_(False))
            join = sa.join(EventImage, DetectionEvent, EventImage.event_id == DetectionEvent.id)
            total = session.scalar(sa.select(sa.func.count(EventImage.id)).select_from(join).where(*conds)) or 0
            rows = session.execute(
                sa.select(EventImage, DetectionEvent.bbox_coordinates)
                .select_from(join)
                .where(*conds)
                .order_by(DetectionEvent.detected_at.desc(), EventImage.event_id.desc(), EventImage.sequence_number)
                .limit(limit)
                .offset((page - 1) * limit)
            ).all()
            items = [
                self._image(img, object_type=ObjectTypeCode.UNCLASSIFIED.value, bbox=_json(bbox)) for img, bbox in rows
            ]
        return Page(items=items, total=total, page=page, limit=limit)

    # -- relabelling ----------------------------------------------------------------------

    def classify(
        self,
        event_id: int,
        type_code: str,
        verified: bool | None = True,
        false_positive: bool | None = False,
        *,
        by_user_id: int | None = None,
        by_name: str = "user",
    ) -> EventDetail:
        """Set an event's type as a person says it is. The detector's type is kept in
        original_type_id (first relabel only). Repeating the same call changes nothing. The
        audit columns name who did it: reclassified_by (users.id, None for a CLI token or an
        alert button) and updated_by (the account or token name)."""
        request = ClassifyRequest(type=type_code, verified=bool(verified), false_positive=bool(false_positive))  # type: ignore[arg-type]
        with self.session_factory.begin() as session:
            event = self._load(session, event_id)
            new_type_id = self._type_id(session, request.type)
            changed = (
                event.object_type_id != new_type_id
                or event.user_verified != request.verified
                or event.is_false_positive != request.false_positive
            )
            if changed:
                if event.object_type_id != new_type_id and event.original_type_id is None:
                    event.original_type_id = event.object_type_id
                event.object_type_id = new_type_id
                event.user_verified = request.verified
                event.is_false_positive = request.false_positive
                event.reclassified_at = utcnow()
                event.reclassified_by = by_user_id
                event.updated_by = by_name[:100]
            session.flush()
            session.refresh(event)
            detail = self._detail(session, event)
            labels = self._labels(event, request)
        # Labels are rewritten on every call (idempotent), so a call that found the store down
        # can simply be repeated.
        try:
            for key, text in labels.items():
                self.store.put_bytes(key, text.encode(), "text/plain")
        except StorageError as exc:
            raise Unavailable(
                "the new type is saved, but its label files could not be written; repeat the call",
                {"reason": str(exc)},
                code="STORAGE_UNAVAILABLE",
            ) from None
        if changed:
            self.invalidate_totals()
        return detail

    def _labels(self, event: DetectionEvent, request: ClassifyRequest) -> dict[str, str]:
        """YOLO label text per capture key. A false positive is a background (empty label); a
        capture without a box (see auto_collect's bbox format) gets no label."""
        if not event.images:
            return {}
        if request.false_positive:
            return {label_key(img.image_path): "" for img in event.images}
        class_id = CLASS_IDS.get(request.type)
        if class_id is None:  # relabelled back to unclassified: nothing certain to say
            return {}
        try:
            main, frames = parse_bbox(event.bbox_coordinates)
        except BoxError as exc:
            log.info("event %s: no label files (%s)", event.id, exc)
            return {}
        labels = {}
        for img in event.images:
            box = frames.get(img.sequence_number) or (main if img.sequence_number == 1 else None)
            if box is None or box.width is None or box.height is None:
                continue
            try:
                cx, cy, w, h = box.to_yolo(int(box.width), int(box.height))
            except BoxError:
                continue
            labels[label_key(img.image_path)] = f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
        return labels


def _json(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
