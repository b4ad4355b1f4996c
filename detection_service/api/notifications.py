"""Notification API (seed): settings, test message, history; plus recipients, templates and the
Telegram webhook. Bot tokens are write-only: every answer shows them masked. docs/notifications.md."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put

from detection_service.api.params import OptionalRowId, RowId
from detection_service.api.responses import ok
from detection_service.errors import Forbidden, Invalid, Unavailable
from detection_service.notifications.service import NotificationService
from schemas.envelope import Envelope, Page
from schemas.notifications import (
    HistoryItem,
    NotificationSettingsView,
    RecipientCreate,
    RecipientInfo,
    SendRequest,
    SendResult,
    TemplateInfo,
    TemplateUpdate,
)


class NotificationController(Controller):
    path = "/api/notifications"
    tags = ["Notifications"]

    @get("/settings", sync_to_thread=True, summary="Alert settings: enabled, sensitivity (low/medium/high), types")
    def get_settings(self, notification_service: NotificationService) -> Response[Envelope[NotificationSettingsView]]:
        return ok(notification_service.settings())

    @put(
        "/settings",
        sync_to_thread=True,
        summary="Change alert settings (validated as a whole; 400 on unknown keys or values)",
        description="Body: any of `enabled` (bool), `sensitivity` ('low' | 'medium' | 'high'), `types` (object type "
        "codes). The answer adds what the sensitivity means: min_confidence, cooldown_s, unclassified_alerts.",
    )
    def put_settings(
        self, notification_service: NotificationService, data: dict[str, Any]
    ) -> Response[Envelope[NotificationSettingsView]]:
        return ok(notification_service.update_settings(data), message="notification settings updated")

    @post(
        "/send",
        status_code=200,
        summary="Send a test message to every recipient (through the alert queue); 400 on empty text",
        description="Waits up to `wait_s` (default 10) for the delivery result. 409 without recipients, 503 when "
        "the bot tokens cannot be decrypted.",
    )
    async def send(
        self, notification_service: NotificationService, data: SendRequest
    ) -> Response[Envelope[SendResult]]:
        result = await notification_service.send_test(data.text, data.wait_s)
        return ok(result, message=f"{result.sent} of {result.queued} sent")

    @get(
        "/history",
        sync_to_thread=True,
        summary="Alert history, newest first: page, limit (1..100), status, event_id, kind",
    )
    def history(
        self,
        notification_service: NotificationService,
        page: int = 1,
        limit: int = 20,
        status: str | None = None,
        event_id: OptionalRowId = None,
        kind: str | None = None,
    ) -> Response[Envelope[Page[HistoryItem]]]:
        return ok(notification_service.history(page, limit, status, event_id, kind))

    @get("/recipients", sync_to_thread=True, summary="Recipients (telegrams table); bot tokens masked")
    def recipients(self, notification_service: NotificationService) -> Response[Envelope[list[RecipientInfo]]]:
        return ok(notification_service.recipients())

    @post(
        "/recipients",
        status_code=201,
        summary="Add a recipient: chat_id, bot_token (stored encrypted, never returned), user_id",
        description="With verify=true (default) the token is checked with getMe: 400 if Telegram rejects it; "
        "if Telegram cannot be reached the recipient is stored with verified=false. 409 for a known chat/user.",
    )
    async def add_recipient(
        self, notification_service: NotificationService, data: RecipientCreate
    ) -> Response[Envelope[RecipientInfo]]:
        info = await notification_service.add_recipient(data)
        return ok(info, message="recipient added", status_code=201)

    @delete("/recipients/{recipient_id:int}", sync_to_thread=True, status_code=200, summary="Remove a recipient")
    def remove_recipient(
        self, notification_service: NotificationService, recipient_id: RowId
    ) -> Response[Envelope[RecipientInfo]]:
        return ok(notification_service.remove_recipient(recipient_id), message="recipient removed")

    @get(
        "/templates",
        sync_to_thread=True,
        summary="Alert texts TEXT_0..TEXT_4 (one per object type) and TEXT_5 (package removed)",
    )
    def templates(self, notification_service: NotificationService) -> Response[Envelope[list[TemplateInfo]]]:
        return ok(notification_service.templates())

    @put(
        "/templates/{template_key:str}",
        sync_to_thread=True,
        summary="Edit an alert text (placeholders: {type} {confidence} {time} {event_id}) or (de)activate it",
    )
    def update_template(
        self, notification_service: NotificationService, template_key: str, data: TemplateUpdate
    ) -> Response[Envelope[TemplateInfo]]:
        return ok(notification_service.update_template(template_key, data), message="template updated")

    @post(
        "/telegram/webhook/{bot_id:str}",
        status_code=200,
        summary="Telegram's webhook (button presses) when AIDOOR_TELEGRAM_UPDATES=webhook",
        include_in_schema=False,
    )
    async def webhook(
        self, request: Request[Any, Any, Any], notification_service: NotificationService, bot_id: str
    ) -> Response[Envelope[None]]:
        notifier = notification_service.notifier
        secret = request.headers.get("x-telegram-bot-api-secret-token")
        try:
            payload = await request.json()
        except Exception:
            raise Invalid("not a JSON update", code="MALFORMED_BODY") from None
        if not isinstance(payload, dict):
            raise Invalid("not a JSON update", code="MALFORMED_BODY")
        try:
            accepted = await _on_loop(notifier, notifier.handle_webhook(bot_id, secret, payload))
        except RuntimeError as exc:
            raise Unavailable(str(exc), code="NOTIFICATIONS_DOWN") from None
        if not accepted:
            raise Forbidden("unknown bot or wrong secret token", code="FORBIDDEN")
        return ok(None)


async def _on_loop(notifier: Any, coro: Any) -> Any:
    import asyncio

    return await asyncio.wrap_future(notifier.submit(coro))
