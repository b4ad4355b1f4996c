"""What the Notification API does: settings, recipients (tokens encrypted, never shown), the
templates, test messages through the queue, and the history."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from telegram.error import InvalidToken, TelegramError

from detection_service.errors import Conflict, Invalid, NotFound, Unavailable
from detection_service.notifications import queue as q
from detection_service.notifications.crypto import KeyProblem, TokenCipher, is_encrypted, mask, scrub, valid_token
from detection_service.notifications.messages import SENSITIVITY
from detection_service.notifications.worker import Notifier
from detection_service.services.settings import InvalidSettings, SettingsService
from schemas.db import NotificationHistory, NotificationTemplate, ObjectType, Telegram
from schemas.envelope import Page
from schemas.notifications import (
    HistoryItem,
    NotificationSettingsView,
    RecipientCreate,
    RecipientInfo,
    SendResult,
    TemplateInfo,
    TemplateUpdate,
)
from schemas.settings import NotificationSettings

MAX_LIMIT = 100


class NotificationService:
    def __init__(
        self, session_factory: sessionmaker[Session], settings_service: SettingsService, notifier: Notifier
    ) -> None:
        self.session_factory = session_factory
        self.settings_service = settings_service
        self.notifier = notifier

    # -- settings ---------------------------------------------------------------------------

    def settings(self) -> NotificationSettingsView:
        stored: NotificationSettings = self.settings_service.get("notification")  # type: ignore[assignment]
        return _view(stored)

    def update_settings(self, changes: Any) -> NotificationSettingsView:
        try:
            updated: NotificationSettings = self.settings_service.update("notification", changes)  # type: ignore[assignment]
        except InvalidSettings as exc:
            raise Invalid(str(exc), exc.details, code="INVALID_SETTINGS") from None
        return _view(updated)

    # -- recipients ---------------------------------------------------------------------------

    def _cipher_for_write(self, session: Session) -> TokenCipher:
        cipher = self.notifier.cipher
        if cipher.has_key:
            return cipher
        if cipher.problem:
            raise Unavailable(cipher.problem, code="TELEGRAM_KEY_UNUSABLE")
        stored = session.scalars(sa.select(Telegram.bot_token)).all()
        if any(is_encrypted(t) for t in stored):
            raise Unavailable(cipher.missing_message(), code="TELEGRAM_KEY_MISSING")
        # First recipient and no key anywhere: create the key file (docs/notifications.md).
        self.notifier.cipher = TokenCipher.create_key_file(_path(cipher.source))
        return self.notifier.cipher

    async def add_recipient(self, data: RecipientCreate) -> RecipientInfo:
        token = data.bot_token.strip()
        if not valid_token(token):
            raise Invalid("bot_token does not look like a bot token (<digits>:<secret>)", code="INVALID_BOT_TOKEN")
        verified: bool | None = None
        username = None
        if data.verify:
            try:
                me = await asyncio.wrap_future(self.notifier.submit(self.notifier.get_me(token)))
                verified, username = True, me.get("username")
            except InvalidToken:
                raise Invalid(
                    "Telegram rejected the bot token (getMe: unauthorized)", code="BOT_TOKEN_REJECTED"
                ) from None
            except (TelegramError, RuntimeError) as exc:
                # Telegram unreachable (or the notifier stopped): store it anyway, say so.
                verified = False
                _ = scrub(str(exc), [token])
        return await asyncio.to_thread(self._store_recipient, data, token, verified, username)

    def _store_recipient(
        self, data: RecipientCreate, token: str, verified: bool | None, username: str | None
    ) -> RecipientInfo:
        try:
            with self.session_factory.begin() as session:
                cipher = self._cipher_for_write(session)
                row = Telegram(
                    user_id=data.user_id or data.chat_id,
                    chat_id=data.chat_id,
                    bot_token=cipher.encrypt(token),
                    created_by="api",
                )
                session.add(row)
                session.flush()
                info = RecipientInfo(
                    id=row.id,
                    user_id=row.user_id,
                    chat_id=row.chat_id,
                    bot_token=mask(token),
                    created_at=row.created_at,
                    bot_username=username,
                    verified=verified,
                )
        except IntegrityError:
            raise Conflict(
                "a recipient with this chat_id or user_id exists",
                {"chat_id": data.chat_id, "user_id": data.user_id or data.chat_id},
                code="RECIPIENT_EXISTS",
            ) from None
        except KeyProblem as exc:
            raise Unavailable(str(exc), code="TELEGRAM_KEY_MISSING") from None
        self.notifier.recipients_changed()
        return info

    def recipients(self) -> list[RecipientInfo]:
        with self.session_factory() as session:
            rows = session.scalars(sa.select(Telegram).order_by(Telegram.id)).all()
            return [
                RecipientInfo(
                    id=r.id,
                    user_id=r.user_id,
                    chat_id=r.chat_id,
                    bot_token=self._masked(r.bot_token),
                    created_at=r.created_at,
                )
                for r in rows
            ]

    def _masked(self, stored: str) -> str:
        try:
            return mask(self.notifier.cipher.decrypt(stored))
        except KeyProblem:
            return mask(None)

    def remove_recipient(self, recipient_id: int) -> RecipientInfo:
        with self.session_factory.begin() as session:
            row = session.get(Telegram, recipient_id)
            if row is None:
                raise NotFound(f"recipient {recipient_id} not found")
            info = RecipientInfo(
                id=row.id,
                user_id=row.user_id,
                chat_id=row.chat_id,
                bot_token=self._masked(row.bot_token),
                created_at=row.created_at,
            )
            session.delete(row)
        self.notifier.recipients_changed()
        return info

    # -- templates ----------------------------------------------------------------------------

    def templates(self) -> list[TemplateInfo]:
        with self.session_factory() as session:
            rows = session.execute(
                sa.select(NotificationTemplate, ObjectType.code)
                .outerjoin(ObjectType, NotificationTemplate.object_type_id == ObjectType.id)
                .order_by(NotificationTemplate.template_key)
            ).all()
            return [_template(t, code) for t, code in rows]

    def update_template(self, key: str, data: TemplateUpdate) -> TemplateInfo:
        if data.message_text is not None and not data.message_text.strip():
            raise Invalid("message_text must not be blank", code="EMPTY_TEXT")
        with self.session_factory.begin() as session:
            row = session.scalar(sa.select(NotificationTemplate).where(NotificationTemplate.template_key == key))
            if row is None:
                raise NotFound(f"template {key!r} not found")
            if data.message_text is not None:
                row.message_text = data.message_text.strip()
            if data.is_active is not None:
                row.is_active = data.is_active
            session.flush()
            code = session.scalar(sa.select(ObjectType.code).where(ObjectType.id == row.object_type_id))
            return _template(row, code)

    # -- sending / history -------------------------------------------------------------------

    async def send_test(self, text: str, wait_s: float) -> SendResult:
        if not text.strip():
            raise Invalid("text must not be empty", code="EMPTY_TEXT")
        if self.notifier.key_error:
            raise Unavailable(self.notifier.key_error, code="NOTIFICATIONS_DOWN")
        ids = await asyncio.to_thread(self._enqueue_test, text.strip())
        if not ids:
            raise Conflict("no recipients: add one with POST /api/notifications/recipients", code="NO_RECIPIENTS")
        self.notifier.poke()
        deadline = time.monotonic() + wait_s
        while True:
            items = await asyncio.to_thread(self._items, ids)
            settled = all(i.send_status in (q.SENT, q.FAILED, q.SKIPPED) for i in items)
            if settled or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        counts = {s: sum(1 for i in items if i.send_status == s) for s in (q.SENT, q.FAILED)}
        return SendResult(
            queued=len(ids),
            sent=counts[q.SENT],
            failed=counts[q.FAILED],
            pending=len(items) - counts[q.SENT] - counts[q.FAILED],
            items=items,
        )

    def _enqueue_test(self, text: str) -> list[int]:
        with self.session_factory.begin() as session:
            return q.enqueue_test(session, text, self.notifier.queue_config)

    def _items(self, ids: list[int]) -> list[HistoryItem]:
        with self.session_factory() as session:
            rows = session.execute(
                _history_select().where(NotificationHistory.id.in_(ids)).order_by(NotificationHistory.id)
            ).all()
            return [_item(h, key) for h, key in rows]

    def history(
        self,
        page: int = 1,
        limit: int = 20,
        status: str | None = None,
        event_id: int | None = None,
        kind: str | None = None,
    ) -> Page[HistoryItem]:
        if page < 1 or not 1 <= limit <= MAX_LIMIT:
            raise Invalid(
                f"page must be >= 1 and limit 1..{MAX_LIMIT}", {"page": page, "limit": limit}, code="INVALID_PAGING"
            )
        if status is not None and status not in q.STATUSES:
            raise Invalid(f"status must be one of {', '.join(q.STATUSES)}", {"status": status}, code="INVALID_STATUS")
        h = NotificationHistory
        conditions = []
        if status is not None:
            conditions.append(h.send_status == status)
        if event_id is not None:
            conditions.append(h.event_id == event_id)
        if kind is not None:
            conditions.append(h.kind == kind)
        with self.session_factory() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(h).where(*conditions)) or 0
            rows = session.execute(
                _history_select().where(*conditions).order_by(h.id.desc()).offset((page - 1) * limit).limit(limit)
            ).all()
            return Page(items=[_item(r, key) for r, key in rows], total=total, page=page, limit=limit)


def _view(stored: NotificationSettings) -> NotificationSettingsView:
    level = SENSITIVITY[stored.sensitivity]
    return NotificationSettingsView(
        **msgspec.to_builtins(stored),
        min_confidence=level.min_confidence,
        cooldown_s=level.cooldown_s,
        unclassified_alerts=level.unclassified,
    )


def _template(row: NotificationTemplate, code: str | None) -> TemplateInfo:
    return TemplateInfo(
        id=row.id,
        template_key=row.template_key,
        object_type=code,
        message_text=row.message_text,
        is_active=row.is_active,
        updated_at=row.updated_at,
    )


def _history_select() -> Any:
    return sa.select(NotificationHistory, NotificationTemplate.template_key).outerjoin(
        NotificationTemplate, NotificationHistory.template_id == NotificationTemplate.id
    )


def _item(h: NotificationHistory, key: str | None) -> HistoryItem:
    return HistoryItem(
        id=h.id,
        event_id=h.event_id,
        recipient_id=h.telegram_user_id,
        chat_id=h.chat_id,
        kind=h.kind,
        template_key=key,
        message_text=h.message_text,
        send_status=h.send_status,
        retry_count=h.retry_count,
        error_message=h.error_message,
        sent_at=h.sent_at,
        created_at=h.created_at,
        next_attempt_at=h.next_attempt_at,
        telegram_message_id=h.telegram_message_id,
        callback_result=h.callback_result,
    )


def _path(source: str) -> Any:
    from pathlib import Path

    return Path(source)
