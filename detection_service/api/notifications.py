"""Notification API (seed): settings, test message, history; plus recipients, templates and the
Telegram webhook. Bot tokens are write-only: every answer shows them masked. docs/notifications.md."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put

from detection_service.api.responses import ApiError, in_thread, ok
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


def _service(request: Request[Any, Any, Any]) -> NotificationService:
    return request.app.state.notification_service


class NotificationController(Controller):
    path = "/api/notifications"
    tags = ["Notifications"]

    @get("/settings", summary="Alert settings: enabled, sensitivity (low/medium/high), types")
    async def get_settings(self, request: Request[Any, Any, Any]) -> Response[Envelope[NotificationSettingsView]]:
        return ok(await in_thread(_service(request).settings))

    @put(
        "/settings",
        summary="Change alert settings (validated as a whole; 400 on unknown keys or values)",
        description="Body: any of `enabled` (bool), `sensitivity` ('low' | 'medium' | 'high'), `types` (object type "
        "codes). The answer adds what the sensitivity means: min_confidence, cooldown_s, unclassified_alerts.",
    )
    async def put_settings(
        self, request: Request[Any, Any, Any], data: dict[str, Any]
    ) -> Response[Envelope[NotificationSettingsView]]:
        return ok(await in_thread(_service(request).update_settings, data), message="notification settings updated")

    @post(
        "/send",
        status_code=200,
        summary="Send a test message to every recipient (through the alert queue); 400 on empty text",
        description="Waits up to `wait_s` (default 10) for the delivery result. 409 without recipients, 503 when "
        "the bot tokens cannot be decrypted.",
    )
    async def send(self, request: Request[Any, Any, Any], data: SendRequest) -> Response[Envelope[SendResult]]:
        result = await _service(request).send_test(data.text, data.wait_s)
        return ok(result, message=f"{result.sent} of {result.queued} sent")

    @get("/history", summary="Alert history, newest first: page, limit (1..100), status, event_id, kind")
    async def history(
        self,
        request: Request[Any, Any, Any],
        page: int = 1,
        limit: int = 20,
        status: str | None = None,
        event_id: int | None = None,
        kind: str | None = None,
    ) -> Response[Envelope[Page[HistoryItem]]]:
        return ok(await in_thread(_service(request).history, page, limit, status, event_id, kind))

    @get("/recipients", summary="Recipients (telegrams table); bot tokens masked")
    async def recipients(self, request: Request[Any, Any, Any]) -> Response[Envelope[list[RecipientInfo]]]:
        return ok(await in_thread(_service(request).recipients))

    @post(
        "/recipients",
        status_code=201,
        summary="Add a recipient: chat_id, bot_token (stored encrypted, never returned), user_id",
        description="With verify=true (default) the token is checked with getMe: 400 if Telegram rejects it; "
        "if Telegram cannot be reached the recipient is stored with verified=false. 409 for a known chat/user.",
    )
    async def add_recipient(
        self, request: Request[Any, Any, Any], data: RecipientCreate
    ) -> Response[Envelope[RecipientInfo]]:
        info = await _service(request).add_recipient(data)
        return ok(info, message="recipient added", status_code=201)

    @delete("/recipients/{recipient_id:int}", status_code=200, summary="Remove a recipient")
    async def remove_recipient(
        self, request: Request[Any, Any, Any], recipient_id: int
    ) -> Response[Envelope[RecipientInfo]]:
        return ok(await in_thread(_service(request).remove_recipient, recipient_id), message="recipient removed")

    @get("/templates", summary="Alert texts TEXT_0..TEXT_4 (one per object type) and TEXT_5 (package removed)")
    async def templates(self, request: Request[Any, Any, Any]) -> Response[Envelope[list[TemplateInfo]]]:
        return ok(await in_thread(_service(request).templates))

    @put(
        "/templates/{template_key:str}",
        summary="Edit an alert text (placeholders: {type} {confidence} {time} {event_id}) or (de)activate it",
    )
    async def update_template(
        self, request: Request[Any, Any, Any], template_key: str, data: TemplateUpdate
    ) -> Response[Envelope[TemplateInfo]]:
        return ok(await in_thread(_service(request).update_template, template_key, data), message="template updated")

    @post(
        "/telegram/webhook/{bot_id:str}",
        status_code=200,
        summary="Telegram's webhook (button presses) when AIDOOR_TELEGRAM_UPDATES=webhook",
        include_in_schema=False,
    )
    async def webhook(self, request: Request[Any, Any, Any], bot_id: str) -> Response[Envelope[None]]:
        notifier = _service(request).notifier
        secret = request.headers.get("x-telegram-bot-api-secret-token")
        try:
            payload = await request.json()
        except Exception:
            raise ApiError(400, "MALFORMED_BODY", "not a JSON update") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "MALFORMED_BODY", "not a JSON update")
        try:
            accepted = await _on_loop(notifier, notifier.handle_webhook(bot_id, secret, payload))
        except RuntimeError as exc:
            raise ApiError(503, "NOTIFICATIONS_DOWN", str(exc)) from None
        if not accepted:
            raise ApiError(403, "FORBIDDEN", "unknown bot or wrong secret token")
        return ok(None)


async def _on_loop(notifier: Any, coro: Any) -> Any:
    import asyncio

    return await asyncio.wrap_future(notifier.submit(coro))
