"""The persistent alert queue: ``notification_history`` rows.

``enqueue_alerts`` runs INSIDE the transaction that records an event (``InsertEvent`` in
detection_service/pipeline/events.py, the manual-detection record path) or its package-removed
transition (``UpdateEvent``): the event and its pending rows commit together or not at all. The
worker then claims due rows with a guarded ``UPDATE ... WHERE id = ? AND <still due>`` and looks
at the rowcount (portable to SQLite, MariaDB and MySQL 8; no ``UPDATE ... RETURNING`` and no
``SKIP LOCKED``): two workers never hold the same row. A claim is a lease: a worker that died
mid-send leaves a ``sending`` row that becomes due again when ``next_attempt_at`` passes.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.notifications.messages import (
    DEFAULT_TEXTS,
    SENSITIVITY,
    render,
    template_key,
)
from schemas.db import DetectionEvent, NotificationHistory, NotificationTemplate, ObjectType, SystemSetting, Telegram
from schemas.settings import NotificationSettings, decode_setting_value

log = logging.getLogger(__name__)

PENDING: Final = "pending"
SENDING: Final = "sending"
SENT: Final = "sent"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"  # not sent on purpose (type changed to one not alerted, false positive)
STATUSES: Final = (PENDING, SENDING, SENT, FAILED, SKIPPED)

KIND_EVENT: Final = "event"
KIND_REMOVED: Final = "removed"
KIND_TEST: Final = "test"


@dataclass
class QueueConfig:
    """How alerts are queued and rendered. The notifier makes one from its own configuration
    (``Notifier.queue_config``, which wakes it after each commit); the app passes that one to
    whatever records events (the pipeline, manual detection). No module-level state."""

    link_base: str | None = None  # public base URL for event links in captions; None = no link
    timezone: str = "Asia/Seoul"
    cooldown_override_s: float | None = None  # benchmarks: ignore the sensitivity's cooldown
    unclassified_hold_s: float = 3.0  # an unclassified event's alert waits this long for its type to settle
    on_enqueued: list[Any] = field(default_factory=list)  # callbacks(row_ids) after commit


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ceil_s(value: datetime) -> datetime:
    """Round up to the whole second (the column has second precision: never due early)."""
    if value.microsecond:
        return value.replace(microsecond=0) + timedelta(seconds=1)
    return value


def load_notification_settings(session: Session) -> NotificationSettings:
    rows = session.execute(
        sa.select(SystemSetting.setting_key, SystemSetting.setting_value, SystemSetting.data_type).where(
            SystemSetting.category == "notification"
        )
    ).all()
    stored: dict[str, Any] = {}
    for key, value, data_type in rows:
        try:
            stored[key] = decode_setting_value(value, data_type)
        except ValueError:
            continue
    known = set(NotificationSettings.__struct_fields__)
    merged = {**msgspec.to_builtins(NotificationSettings()), **{k: v for k, v in stored.items() if k in known}}
    try:
        return msgspec.convert(merged, NotificationSettings)
    except msgspec.ValidationError:
        return NotificationSettings()


def wanted(settings: NotificationSettings, kind: str, type_code: str, confidence: float | None) -> str | None:
    """None if an alert of this kind/type/confidence is wanted, else why not."""
    if not settings.enabled:
        return "notifications disabled"
    if type_code not in settings.types:
        return f"type {type_code} not in notification types"
    level = SENSITIVITY[settings.sensitivity]
    if kind == KIND_EVENT:
        if type_code == "unclassified":
            if not level.unclassified:
                return f"unclassified events are not alerted at sensitivity {settings.sensitivity}"
        elif (confidence or 0.0) < level.min_confidence:
            return f"confidence {confidence} under {level.min_confidence} (sensitivity {settings.sensitivity})"
    return None


def template_for(session: Session, key: str | None) -> tuple[int | None, str]:
    if key is None:
        return None, ""
    row = session.execute(
        sa.select(NotificationTemplate.id, NotificationTemplate.message_text, NotificationTemplate.is_active).where(
            NotificationTemplate.template_key == key
        )
    ).first()
    if row is None:
        return None, DEFAULT_TEXTS.get(key, "")
    # An inactive template falls back to the built-in text of its key (docs/notifications.md).
    return row.id, row.message_text if row.is_active else DEFAULT_TEXTS.get(key, row.message_text)


def enqueue_alerts(session: Session, event_id: int, config: QueueConfig, kind: str = KIND_EVENT) -> list[int]:
    """Write pending rows (one per recipient) for an event or its removal, in the caller's
    transaction. Returns the new row ids (empty when no alert is wanted)."""
    cfg = config
    row = session.execute(
        sa.select(DetectionEvent, ObjectType.code)
        .join(ObjectType, DetectionEvent.object_type_id == ObjectType.id)
        .where(DetectionEvent.id == event_id)
    ).first()
    if row is None:
        return []
    event, type_code = row
    if event.is_false_positive:
        return []
    settings = load_notification_settings(session)
    why_not = wanted(settings, kind, type_code, event.confidence_score)
    if why_not:
        log.debug("no alert for event %s (%s): %s", event_id, kind, why_not)
        return []
    recipients = session.execute(sa.select(Telegram.id, Telegram.chat_id)).all()
    if not recipients:
        return []
    key = template_key(kind, type_code)
    template_id, text = template_for(session, key)
    now = utcnow()
    if kind == KIND_EVENT:
        cooldown = cfg.cooldown_override_s
        if cooldown is None:
            cooldown = SENSITIVITY[settings.sensitivity].cooldown_s
        if cooldown > 0:
            # Measured on the events' own times at the same camera, not on when their rows were
            # written: a write delayed by a database outage (or replayed from the journal) must
            # not silence the next arrival, nor be silenced by one that came long after it.
            recent = session.scalar(
                sa.select(sa.func.count())
                .select_from(NotificationHistory)
                .join(DetectionEvent, NotificationHistory.event_id == DetectionEvent.id)
                .where(
                    NotificationHistory.kind == KIND_EVENT,
                    NotificationHistory.template_id == template_id if template_id is not None else sa.false(),
                    NotificationHistory.send_status != SKIPPED,
                    NotificationHistory.event_id != event_id,
                    DetectionEvent.camera_id == event.camera_id,
                    DetectionEvent.detected_at.between(
                        event.detected_at - timedelta(seconds=cooldown), event.detected_at
                    ),
                )
            )
            if recent:
                log.info(
                    "no alert for event %s: %s alerted within the last %d s (cooldown)",
                    event_id,
                    type_code,
                    int(cooldown),
                )
                return []
    when = event.ended_at if kind == KIND_REMOVED and event.ended_at else event.detected_at
    message = render(
        text,
        kind=kind,
        type_code=type_code,
        confidence=event.confidence_score,
        when=when,
        event_id=event_id,
        link_base=cfg.link_base,
        tz_name=cfg.timezone,
    )
    due = None
    if kind == KIND_EVENT and type_code == "unclassified" and cfg.unclassified_hold_s > 0:
        due = ceil_s(now + timedelta(seconds=cfg.unclassified_hold_s))
    # A retried transaction (commit outcome unknown) must not trip the unique index: skip
    # recipients that already have this alert.
    done = set(
        session.scalars(
            sa.select(NotificationHistory.telegram_user_id).where(
                NotificationHistory.event_id == event_id, NotificationHistory.kind == kind
            )
        ).all()
    )
    ids = []
    for recipient_id, chat_id in recipients:
        if recipient_id in done:
            continue
        item = NotificationHistory(
            event_id=event_id,
            telegram_user_id=recipient_id,
            template_id=template_id,
            message_text=message,
            send_status=PENDING,
            kind=kind,
            chat_id=chat_id,
            next_attempt_at=due,
            created_at=now.replace(microsecond=0),
        )
        session.add(item)
        session.flush()
        ids.append(item.id)
    _after_commit(session, ids, cfg)
    return ids


def enqueue_test(session: Session, text: str, config: QueueConfig) -> list[int]:
    now = utcnow()
    ids = []
    for recipient_id, chat_id in session.execute(sa.select(Telegram.id, Telegram.chat_id)).all():
        item = NotificationHistory(
            telegram_user_id=recipient_id,
            message_text=text,
            send_status=PENDING,
            kind=KIND_TEST,
            chat_id=chat_id,
            created_at=now.replace(microsecond=0),
        )
        session.add(item)
        session.flush()
        ids.append(item.id)
    _after_commit(session, ids, config)
    return ids


def _after_commit(session: Session, ids: list[int], config: QueueConfig) -> None:
    """Wake the worker once the rows are committed (a rolled-back transaction wakes nobody)."""
    if not ids or not config.on_enqueued:
        return
    callbacks = list(config.on_enqueued)

    def fire(_session: Session) -> None:
        for callback in callbacks:
            try:
                callback(ids)
            except Exception:
                log.exception("notification enqueue callback failed")

    sa.event.listen(session, "after_commit", fire, once=True)


# --- claiming ----------------------------------------------------------------------------------


def _due(now: datetime) -> Any:
    h = NotificationHistory
    return sa.or_(
        sa.and_(h.send_status == PENDING, sa.or_(h.next_attempt_at.is_(None), h.next_attempt_at <= now)),
        sa.and_(h.send_status == SENDING, h.next_attempt_at <= now),  # a dead worker's expired lease
    )


def new_claim_token() -> str:
    return uuid.uuid4().hex


def claim_due(session_factory: sessionmaker[Session], token: str, lease_s: float, limit: int = 20) -> list[int]:
    """Claim up to ``limit`` due rows for the worker ``token``; returns the claimed ids, oldest first."""
    now = utcnow().replace(microsecond=0)
    h = NotificationHistory
    with session_factory() as session:
        candidates = session.scalars(sa.select(h.id).where(_due(now)).order_by(h.id).limit(limit)).all()
    claimed = []
    lease_until = ceil_s(utcnow() + timedelta(seconds=lease_s))
    for row_id in candidates:
        with session_factory.begin() as session:
            result = session.execute(
                sa.update(h)
                .where(h.id == row_id, _due(now))
                .values(send_status=SENDING, claim_token=token, next_attempt_at=lease_until)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                claimed.append(row_id)
    return claimed


def finish(session_factory: sessionmaker[Session], row_id: int, token: str, **values: Any) -> bool:
    """Update a claimed row, only if this worker still holds it."""
    h = NotificationHistory
    with session_factory.begin() as session:
        result = session.execute(
            sa.update(h)
            .where(h.id == row_id, h.claim_token == token, h.send_status == SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        ok = result.rowcount == 1
        if ok and values.get("send_status") == SENT:
            event_id = session.scalar(sa.select(h.event_id).where(h.id == row_id))
            if event_id is not None:
                session.execute(
                    sa.update(DetectionEvent)
                    .where(DetectionEvent.id == event_id)
                    .values(notification_sent=True)
                    .execution_options(synchronize_session=False)
                )
    return ok


def renew(session_factory: sessionmaker[Session], row_id: int, token: str, lease_s: float) -> bool:
    """Extend this worker's lease on a claimed row; False if the claim is no longer ours."""
    h = NotificationHistory
    with session_factory.begin() as session:
        result = session.execute(
            sa.update(h)
            .where(h.id == row_id, h.claim_token == token, h.send_status == SENDING)
            .values(next_attempt_at=ceil_s(utcnow() + timedelta(seconds=lease_s)))
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def due_at(delay_s: float) -> datetime:
    return ceil_s(utcnow() + timedelta(seconds=max(0.0, delay_s)))


def seconds_until(when: datetime | None) -> float:
    if when is None:
        return 0.0
    return max(0.0, (when - utcnow()).total_seconds())


def next_due(session_factory: sessionmaker[Session]) -> float | None:
    """Seconds until the earliest pending/sending row becomes due (None: nothing queued)."""
    h = NotificationHistory
    with session_factory() as session:
        pending = session.scalar(
            sa.select(sa.func.count()).select_from(h).where(h.send_status == PENDING, h.next_attempt_at.is_(None))
        )
        if pending:
            return 0.0
        earliest = session.scalar(
            sa.select(sa.func.min(h.next_attempt_at)).where(h.send_status.in_((PENDING, SENDING)))
        )
    if earliest is None:
        return None
    return max(0.0, math.ceil((earliest - utcnow()).total_seconds() * 10) / 10)
