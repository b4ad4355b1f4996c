"""API structs of the Notification group (docs/notifications.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.settings import ObjectTypeCodeLiteral, SensitivityLevel

SendStatusLiteral = Literal["pending", "sending", "sent", "failed", "skipped"]
AlertKind = Literal["event", "removed", "test"]


class NotificationSettingsView(msgspec.Struct, kw_only=True):
    """The stored settings (``enabled``, ``sensitivity``, ``types``) and what the sensitivity means."""

    enabled: bool
    sensitivity: SensitivityLevel
    types: list[ObjectTypeCodeLiteral]
    min_confidence: float  # events of a classified type below this are not alerted
    cooldown_s: int  # one alert per type within this many seconds
    unclassified_alerts: bool  # whether 'unclassified' events can alert at this sensitivity


class RecipientCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    chat_id: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$", description="Telegram chat id (or @channelname)"
        ),
    ]
    bot_token: Annotated[str, msgspec.Meta(min_length=20, max_length=100, description="Bot token from @BotFather")]
    user_id: Annotated[str, msgspec.Meta(max_length=50, description="Telegram user id; default chat_id")] | None = None
    verify: Annotated[bool, msgspec.Meta(description="Check the token with getMe before storing it")] = True


class RecipientInfo(msgspec.Struct, kw_only=True):
    id: int
    user_id: str
    chat_id: str
    bot_token: str  # always masked: "<bot id>:********"
    created_at: datetime
    bot_username: str | None = None
    verified: bool | None = None  # only on create: whether getMe accepted the token


class SendRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(max_length=4096)]
    wait_s: Annotated[float, msgspec.Meta(ge=0, le=30, description="Wait this long for the delivery result")] = 10.0


class HistoryItem(msgspec.Struct, kw_only=True):
    id: int
    event_id: int | None
    recipient_id: int | None
    chat_id: str | None
    kind: AlertKind | str
    template_key: str | None
    message_text: str
    send_status: SendStatusLiteral | str
    retry_count: int
    error_message: str | None
    sent_at: datetime | None
    created_at: datetime
    next_attempt_at: datetime | None
    telegram_message_id: int | None
    callback_result: str | None


class SendResult(msgspec.Struct, kw_only=True):
    queued: int
    sent: int
    failed: int
    pending: int
    items: list[HistoryItem]


class TemplateInfo(msgspec.Struct, kw_only=True):
    id: int
    template_key: str
    object_type: str | None  # None for TEXT_5 (package removed)
    message_text: str
    is_active: bool
    updated_at: datetime


class TemplateUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message_text: Annotated[str, msgspec.Meta(min_length=1, max_length=900)] | None = None
    is_active: bool | None = None
