"""The Telegram notifier: one thread with its own asyncio loop that

- sends due ``notification_history`` rows (queue.py) with python-telegram-bot: the event's first
  capture as a photo with the rendered caption and an inline keyboard, or a text message;
- retries transient failures (5xx, timeouts, refused connections) with exponential backoff,
  honours ``RetryAfter`` (and pauses that bot for as long), and fails permanent ones at once
  (``BadRequest``, ``Forbidden``, ``InvalidToken``: caught before ``NetworkError``, which
  ``BadRequest`` subclasses);
- takes the buttons' callback queries (long polling ``getUpdates``, or a webhook the API
  forwards) and relabels the event through the same service as ``PUT /api/detections/{id}/classify``.

Everything the user can lose lives in the database: a crash, a kill or a restart leaves pending
rows that the next worker sends. Tokens are decrypted only here, and scrubbed from every error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from telegram import Bot, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from detection_service.bus import BusMessage, EventBus, EventCreated, PackageRemoved, Subscription
from detection_service.notifications import queue as q
from detection_service.notifications.crypto import KeyProblem, TokenCipher, bot_id, is_encrypted, scrub
from detection_service.notifications.messages import (
    CAPTION_LIMIT,
    CHOICE_CORRECT,
    CHOICE_FALSE,
    TEXT_LIMIT,
    fit,
    keyboard,
    parse_callback,
    render,
    result_line,
    template_key,
)
from detection_service.retry import Backoff
from detection_service.storage import ObjectStore
from detection_service.storage.keys import event_image_key
from schemas.db import DetectionEvent, NotificationHistory, ObjectType, Telegram

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, and a Bot API URL contains the bot token.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

Relabel = Callable[..., Any]  # EventService.classify(event_id, type_code, verified=, false_positive=)


@dataclass
class NotifierConfig:
    api_url: str = "https://api.telegram.org"  # Bot API root; tests point it at the fake
    updates: str = "polling"  # polling | webhook | off
    webhook_base: str | None = None  # public base URL (webhook mode)
    link_base: str | None = None  # public base URL for event links in captions
    timezone: str = "Asia/Seoul"
    poll_interval_s: float = 1.0  # fallback scan of the queue (wake-ups come from the bus)
    lease_s: float = 60.0  # a claimed row is someone else's after this long
    batch: int = 20
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    write_timeout_s: float = 20.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_attempts: int = 20  # transient failures, then failed (~1.2 h with the defaults)
    photo_wait_s: float = 30.0  # wait this long for capture 1 in the store, then send text only
    unclassified_hold_s: float = 3.0
    cooldown_override_s: float | None = None
    long_poll_s: int = 25  # getUpdates timeout
    recipients_refresh_s: float = 30.0
    close_grace_s: float = 3.0


@dataclass
class NotifierStats:
    sent: int = 0
    failed: int = 0
    retries: int = 0
    skipped: int = 0
    callbacks: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_sent_at: float | None = None
    consecutive_failures: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class Notifier:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        cipher: TokenCipher,
        config: NotifierConfig | None = None,
        relabel: Relabel | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.cipher = cipher
        self.config = config or NotifierConfig()
        send_budget = self.config.connect_timeout_s + self.config.write_timeout_s + self.config.read_timeout_s
        if self.config.lease_s < send_budget:
            log.warning(
                "notifier: lease_s %.0f s is shorter than one send may take (%.0f s): a slow send could "
                "be repeated by another worker",
                self.config.lease_s,
                send_budget,
            )
        self.relabel = relabel
        self.bus = bus
        self.stats = NotifierStats()
        self.key_error: str | None = None
        self.recipient_count = 0
        self.claim_token = q.new_claim_token()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._bots: dict[str, Bot] = {}
        self._paused_until: dict[str, float] = {}  # token -> monotonic time (RetryAfter)
        self._photos: OrderedDict[int, bytes] = OrderedDict()
        self._photos_lock = threading.Lock()
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._webhooks: set[str] = set()
        self._tokens: dict[str, str] = {}  # bot id -> token (for webhooks and polling)
        self._subscription: Subscription | None = None
        self._refresh_recipients = True
        # What records events queues its alerts with this (the app passes it to the pipeline):
        # captions and cooldowns follow this notifier's configuration, a commit wakes it.
        self.queue_config = q.QueueConfig(
            link_base=self.config.link_base,
            timezone=self.config.timezone,
            cooldown_override_s=self.config.cooldown_override_s,
            unclassified_hold_s=self.config.unclassified_hold_s,
            on_enqueued=[lambda _ids: self.poke()],
        )

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.prepare_tokens()
        except Exception as exc:  # the database may be down at start: the loop retries
            log.warning("notifier: could not check the stored bot tokens yet: %s", exc)
        if self.bus is not None:
            self._subscription = self.bus.subscribe_callback("telegram", self._on_bus, maxsize=100)
        self._thread = threading.Thread(target=self._run, name="telegram-notifier", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def close(self, timeout: float | None = None) -> None:
        """Stop: the send in progress may finish (``close_grace_s``); rows still pending stay
        pending in the database and are sent by the next start."""
        if self._subscription is not None:
            self._subscription.close()
        self._stopping.set()
        self.poke()
        if self._thread is not None:
            self._thread.join(self.config.close_grace_s + 2.0 if timeout is None else timeout)

    def restart(self, timeout: float | None = None) -> bool:
        """Close and start again in this process (``POST /api/system/restart``): new bots,
        recipients and pollers; queued alerts stay in the database and are sent by the new loop.
        False (not started again) if the old loop did not stop within ``timeout``."""
        self.close(timeout)
        if self._thread is not None and self._thread.is_alive():
            return False
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._paused_until.clear()
        self._refresh_recipients = True
        self.start()
        return True

    def poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def ready(self) -> bool:
        """Can send now: running, tokens readable, at least one recipient."""
        return self.running and self.key_error is None and self.recipient_count > 0

    def submit(self, coro: Any) -> Future[Any]:
        """Run a coroutine on the notifier's loop (from any thread)."""
        if self._loop is None or not self.running:
            coro.close()
            raise RuntimeError("the notifier is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- tokens -------------------------------------------------------------------------------

    def prepare_tokens(self) -> None:
        """Encrypt legacy plaintext tokens (creating the key file if no key exists yet), check
        that the key opens the encrypted ones, and learn the recipients' bots."""
        with self.session_factory.begin() as session:
            rows = session.scalars(sa.select(Telegram)).all()
            no_key = not self.cipher.has_key and not self.cipher.problem
            encrypted = [is_encrypted(r.bot_token) for r in rows]
            if no_key and encrypted and not any(encrypted):  # only plaintext tokens: safe to make a key
                self.cipher = TokenCipher.create_key_file(_key_path(self.cipher))
                log.warning("notifier: created a new bot-token key file %s (back it up)", self.cipher.source)
            tokens: dict[str, str] = {}
            problem = None
            for row in rows:
                try:
                    token = self.cipher.decrypt(row.bot_token)
                except KeyProblem as exc:
                    problem = str(exc)
                    continue
                if not is_encrypted(row.bot_token) and self.cipher.has_key:
                    row.bot_token = self.cipher.encrypt(token)
                    log.info("notifier: encrypted the plaintext bot token of recipient %s", row.id)
                ident = bot_id(token) or str(row.id)
                tokens[ident] = token
            self.recipient_count = len(rows)
        self._tokens = tokens
        if problem != self.key_error:
            if problem:
                log.error("notifications down: %s", problem)
            elif self.key_error:
                log.info("notifications: bot tokens readable again")
        self.key_error = problem
        self._refresh_recipients = False

    def recipients_changed(self) -> None:
        self._refresh_recipients = True
        self.poke()

    def known_tokens(self) -> list[str]:
        return list(self._tokens.values())

    def webhook_secret(self, token: str) -> str:
        return hmac.new(token.encode(), b"aidoor-telegram-webhook", hashlib.sha256).hexdigest()[:48]

    def token_for_bot(self, ident: str) -> str | None:
        return self._tokens.get(ident)

    # -- bus ------------------------------------------------------------------------------------

    def _on_bus(self, message: BusMessage) -> None:
        if isinstance(message, EventCreated):
            if message.snapshot_jpeg:
                with self._photos_lock:
                    self._photos[message.event_id] = message.snapshot_jpeg
                    while len(self._photos) > 64:
                        self._photos.popitem(last=False)
            self.poke()
        elif isinstance(message, PackageRemoved):
            self.poke()

    def _photo(self, event: DetectionEvent) -> bytes | None:
        with self._photos_lock:
            cached = self._photos.get(event.id)
        if cached:
            return cached
        key = event.image_path or event_image_key(event.id, event.detected_at, 1)
        try:
            return self.store.get_bytes(key)
        except Exception:
            return None

    async def _wait_photo(self, event: DetectionEvent, wait_s: float = 1.0) -> bytes | None:
        """Capture 1: the bus brings it milliseconds after the commit that woke us (then the
        store has it too); wait that long here rather than re-queue the row."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._photos_lock:
                cached = self._photos.get(event.id)
            if cached:
                return cached
            photo = await asyncio.to_thread(self._photo, event)
            if photo is not None or time.monotonic() >= deadline or self._stopping.is_set():
                return photo
            await asyncio.sleep(0.01)

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("notifier loop crashed")
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._started.set()
        refreshed = time.monotonic()
        try:
            while not self._stopping.is_set():
                if self._refresh_recipients or time.monotonic() - refreshed > self.config.recipients_refresh_s:
                    refreshed = time.monotonic()
                    try:
                        await asyncio.to_thread(self.prepare_tokens)
                        await self._sync_updates()
                    except Exception as exc:
                        self._error("recipients", exc)
                try:
                    worked = await self._send_due()
                except Exception as exc:  # database down: keep trying, slowly
                    self._error("queue", exc)
                    worked = False
                if worked:
                    continue
                wait = self.config.poll_interval_s
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for task in self._pollers.values():
            task.cancel()
        if self._pollers:
            await asyncio.gather(*self._pollers.values(), return_exceptions=True)
        self._pollers.clear()
        for bot in self._bots.values():
            with contextlib.suppress(Exception):
                await bot.shutdown()
        self._bots.clear()

    def _bot(self, token: str) -> Bot:
        bot = self._bots.get(token)
        if bot is None:
            cfg = self.config
            request = HTTPXRequest(
                connection_pool_size=8,
                connect_timeout=cfg.connect_timeout_s,
                read_timeout=cfg.read_timeout_s,
                write_timeout=cfg.write_timeout_s,
                media_write_timeout=cfg.write_timeout_s,
                pool_timeout=5.0,
            )
            updates = HTTPXRequest(
                connection_pool_size=2,
                connect_timeout=cfg.connect_timeout_s,
                read_timeout=cfg.read_timeout_s,
                write_timeout=cfg.write_timeout_s,
                pool_timeout=5.0,
            )
            base = cfg.api_url.rstrip("/")
            bot = Bot(
                token,
                base_url=f"{base}/bot",
                base_file_url=f"{base}/file/bot",
                request=request,
                get_updates_request=updates,
            )
            self._bots[token] = bot
        return bot

    # -- sending ---------------------------------------------------------------------------------

    async def _send_due(self) -> bool:
        if self.key_error is not None:
            return False
        ids = await asyncio.to_thread(
            q.claim_due, self.session_factory, self.claim_token, self.config.lease_s, self.config.batch
        )
        for row_id in ids:
            if self._stopping.is_set():
                # Not started: hand it back at once (the lease would otherwise hold it a minute).
                await asyncio.to_thread(
                    q.finish,
                    self.session_factory,
                    row_id,
                    self.claim_token,
                    send_status=q.PENDING,
                    claim_token=None,
                    next_attempt_at=None,
                )
                continue
            try:
                await self._deliver(row_id)
            except Exception as exc:  # a bug or the database: the lease brings the row back
                self._error("deliver", exc)
        return bool(ids)

    def _load(self, row_id: int) -> dict[str, Any] | None:
        with self.session_factory() as session:
            row = session.get(NotificationHistory, row_id)
            if row is None:
                return None
            recipient = session.get(Telegram, row.telegram_user_id) if row.telegram_user_id else None
            event = type_code = None
            if row.event_id is not None:
                found = session.execute(
                    sa.select(DetectionEvent, ObjectType.code)
                    .join(ObjectType, DetectionEvent.object_type_id == ObjectType.id)
                    .where(DetectionEvent.id == row.event_id)
                ).first()
                if found is not None:
                    event, type_code = found
            settings = q.load_notification_settings(session)
            template_id, template_text = q.template_for(session, template_key(row.kind, type_code or ""))
            session.expunge_all()
        return {
            "row": row,
            "recipient": recipient,
            "event": event,
            "type_code": type_code,
            "settings": settings,
            "template_id": template_id,
            "template_text": template_text,
        }

    async def _finish(self, row_id: int, **values: Any) -> bool:
        values.setdefault("claim_token", None)
        return await asyncio.to_thread(q.finish, self.session_factory, row_id, self.claim_token, **values)

    async def _deliver(self, row_id: int) -> None:
        loaded = await asyncio.to_thread(self._load, row_id)
        if loaded is None:
            return
        row: NotificationHistory = loaded["row"]
        recipient: Telegram | None = loaded["recipient"]
        event: DetectionEvent | None = loaded["event"]
        type_code: str | None = loaded["type_code"]
        if recipient is None:
            await self._fail(row_id, "recipient removed before the alert was sent")
            return
        if row.kind != q.KIND_TEST and event is None:
            await self._fail(row_id, "event deleted before the alert was sent")
            return
        text = row.message_text
        photo: bytes | None = None
        markup = None
        if event is not None and type_code is not None:
            if event.is_false_positive:
                await self._skip(row_id, "marked as a false alarm before the alert was sent")
                return
            why_not = q.wanted(loaded["settings"], row.kind, type_code, event.confidence_score)
            if why_not and row.kind == q.KIND_EVENT:
                await self._skip(row_id, f"not sent: {why_not}")
                return
            # Render again: the type may have settled (or been relabelled) since the row was queued.
            when = event.ended_at if row.kind == q.KIND_REMOVED and event.ended_at else event.detected_at
            text = render(
                loaded["template_text"],
                kind=row.kind,
                type_code=type_code,
                confidence=event.confidence_score,
                when=when,
                event_id=event.id,
                link_base=self.config.link_base,
                tz_name=self.config.timezone,
            )
            markup = keyboard(event.id, type_code)
            young = (q.utcnow() - row.created_at).total_seconds() < self.config.photo_wait_s
            photo = await self._wait_photo(event, min(1.0, self.config.photo_wait_s) if young else 0.0)
            if photo is None and young:
                # Capture 1 is still on its way to the store: look again in a second (no retry counted).
                await self._finish(row_id, send_status=q.PENDING, next_attempt_at=q.due_at(1.0))
                return
        try:
            token = self.cipher.decrypt(recipient.bot_token)
        except KeyProblem as exc:
            self.key_error = str(exc)
            await self._finish(row_id, send_status=q.PENDING, next_attempt_at=None)
            return
        paused = self._paused_until.get(token, 0.0) - time.monotonic()
        if paused > 0:
            await self._finish(row_id, send_status=q.PENDING, next_attempt_at=q.due_at(paused))
            return
        # Fencing: renew the lease right before the send. A row whose lease ran out while this
        # worker was busy may already be another worker's; then it is not ours to send.
        if not await asyncio.to_thread(q.renew, self.session_factory, row_id, self.claim_token, self.config.lease_s):
            log.warning("alert %s: claim lost before sending (lease_s too short?); left to its new owner", row_id)
            return
        bot = self._bot(token)
        chat_id = recipient.chat_id
        try:
            if photo is not None:
                message = await bot.send_photo(
                    chat_id=chat_id,
                    photo=photo,
                    caption=fit(text, CAPTION_LIMIT),
                    reply_markup=markup,
                    filename=f"event-{row.event_id}.jpg",
                )
            else:
                message = await bot.send_message(chat_id=chat_id, text=fit(text, TEXT_LIMIT), reply_markup=markup)
        except RetryAfter as exc:
            delay = _seconds(exc.retry_after)
            self._paused_until[token] = time.monotonic() + delay
            await self._retry(row, f"RetryAfter: Telegram asked to wait {delay:.0f} s", delay, token, count_limit=False)
            return
        except (BadRequest, Forbidden, InvalidToken, ChatMigrated) as exc:
            # Permanent: the chat, the bot or the request is wrong; retrying cannot help.
            await self._fail(row_id, scrub(f"{type(exc).__name__}: {exc}", [token]), row.retry_count)
            return
        except (TimedOut, NetworkError, Conflict, TelegramError) as exc:
            await self._retry(row, scrub(f"{type(exc).__name__}: {exc}", [token]), None, token)
            return
        except Exception as exc:  # anything else from the HTTP stack: treat as transient
            await self._retry(row, scrub(f"{type(exc).__name__}: {exc}", [token]), None, token)
            return
        done = await self._finish(
            row_id,
            send_status=q.SENT,
            sent_at=q.utcnow(),
            error_message=None,
            message_text=text,
            telegram_message_id=message.message_id,
            has_photo=photo is not None,
            next_attempt_at=None,
            chat_id=str(chat_id),
            template_id=loaded["template_id"] or row.template_id,
        )
        if not done:
            log.warning("alert %s was sent but its claim had expired: lease_s is shorter than a send", row_id)
        self.stats.sent += 1
        self.stats.last_sent_at = time.time()
        self.stats.consecutive_failures = 0

    async def _retry(
        self, row: NotificationHistory, error: str, delay: float | None, token: str, count_limit: bool = True
    ) -> None:
        retries = row.retry_count + 1
        self.stats.retries += 1
        self._error("send", error)
        if count_limit and retries >= self.config.max_attempts:
            await self._fail(row.id, f"gave up after {retries} attempts; last error: {error}", retries)
            return
        if delay is None:
            delay = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s).delay_for(retries)
        log.info("alert %s: %s; attempt %d again in %.0f s", row.id, error, retries + 1, delay)
        await self._finish(
            row.id, send_status=q.PENDING, retry_count=retries, error_message=error, next_attempt_at=q.due_at(delay)
        )

    async def _fail(self, row_id: int, error: str, retry_count: int | None = None) -> None:
        self.stats.failed += 1
        self.stats.consecutive_failures += 1
        self._error("send", error)
        log.warning("alert %s failed: %s", row_id, error)
        values: dict[str, Any] = {"send_status": q.FAILED, "error_message": error, "next_attempt_at": None}
        if retry_count is not None:
            values["retry_count"] = retry_count
        await self._finish(row_id, **values)

    async def _skip(self, row_id: int, reason: str) -> None:
        self.stats.skipped += 1
        await self._finish(row_id, send_status=q.SKIPPED, error_message=reason, next_attempt_at=None)

    def _error(self, where: str, exc: Any) -> None:
        text = scrub(str(exc) if not isinstance(exc, str) else exc, self.known_tokens())
        if isinstance(exc, Exception):
            text = f"{type(exc).__name__}: {text}"
            log.warning("notifier (%s): %s", where, text)
        self.stats.last_error = text
        self.stats.last_error_at = time.time()
        self.stats.errors_by_kind[where] = self.stats.errors_by_kind.get(where, 0) + 1

    # -- updates: callback queries -----------------------------------------------------------

    async def _sync_updates(self) -> None:
        mode = self.config.updates
        tokens = set(self._tokens.values()) if self.key_error is None else set()
        if mode == "polling":
            for token in list(self._pollers):
                if token not in tokens:
                    self._pollers.pop(token).cancel()
            for token in tokens - set(self._pollers):
                self._pollers[token] = asyncio.create_task(self._poll(token), name="telegram-poll")
        elif mode == "webhook" and self.config.webhook_base:
            for token in tokens - self._webhooks:
                ident = bot_id(token) or "bot"
                url = f"{self.config.webhook_base.rstrip('/')}/api/notifications/telegram/webhook/{ident}"
                try:
                    await self._bot(token).set_webhook(
                        url, allowed_updates=["callback_query"], secret_token=self.webhook_secret(token)
                    )
                    self._webhooks.add(token)
                except TelegramError as exc:
                    self._error("webhook", scrub(f"setWebhook: {exc}", [token]))

    async def _poll(self, token: str) -> None:
        bot = self._bot(token)
        offset: int | None = None
        backoff = Backoff(1.0, 60.0)
        with contextlib.suppress(TelegramError):
            await bot.delete_webhook()  # getUpdates answers 409 while a webhook is set
        while not self._stopping.is_set():
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=self.config.long_poll_s, allowed_updates=["callback_query"]
                )
                backoff.reset()
            except InvalidToken:
                self._error("polling", "InvalidToken: the bot token was rejected; polling stopped for it")
                return
            except TelegramError as exc:
                self._error("polling", scrub(f"{type(exc).__name__}: {exc}", [token]))
                await asyncio.sleep(backoff.next_delay())
                continue
            for update in updates:
                offset = update.update_id + 1
                try:
                    await self.handle_update(bot, update)
                except Exception as exc:
                    self._error("callback", exc)

    async def handle_update(self, bot: Bot, update: Update) -> str | None:
        """A button press: relabel, answer the callback, edit the alert. Returns the result text."""
        cq = update.callback_query
        if cq is None:
            return None
        self.stats.callbacks += 1
        parsed = parse_callback(cq.data)
        message = cq.message
        if parsed is None or message is None:
            await _quiet(bot.answer_callback_query(cq.id, text="알 수 없는 버튼입니다"))
            return None
        event_id, choice = parsed
        chat_id, message_id = message.chat.id, message.message_id
        row = await asyncio.to_thread(self._alert_row, str(chat_id), message_id, event_id)
        if row is None:
            await _quiet(bot.answer_callback_query(cq.id, text="이 알림을 찾을 수 없습니다"))
            return None
        current = await asyncio.to_thread(self._event_type, event_id)
        if current is None or self.relabel is None:
            await _quiet(
                bot.answer_callback_query(
                    cq.id, text="이벤트가 삭제되었습니다" if current is None else "재분류를 사용할 수 없습니다"
                )
            )
            await _quiet(bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id, reply_markup=None))
            return None
        new_type = current if choice in (CHOICE_CORRECT, CHOICE_FALSE) else choice
        try:
            await asyncio.to_thread(
                self.relabel, event_id, new_type, verified=True, false_positive=choice == CHOICE_FALSE
            )
        except Exception as exc:
            reason = getattr(exc, "message", None) or str(exc)
            self._error("relabel", f"event {event_id}: {reason}")
            await _quiet(bot.answer_callback_query(cq.id, text=f"저장하지 못했습니다: {reason}"[:190]))
            return None
        result = result_line(choice, new_type)
        await asyncio.to_thread(self._record_callback, event_id, str(chat_id), message_id, result)
        await _quiet(bot.answer_callback_query(cq.id, text=result))
        base = row["message_text"]
        markup = keyboard(event_id, new_type)
        where = {"chat_id": chat_id, "message_id": message_id, "reply_markup": markup}
        if row["has_photo"]:  # a photo's text is its caption, with Telegram's shorter limit
            await _quiet(bot.edit_message_caption(caption=fit(f"{base}\n\n{result}", CAPTION_LIMIT), **where))
        else:
            await _quiet(bot.edit_message_text(text=fit(f"{base}\n\n{result}", TEXT_LIMIT), **where))
        return result

    def _alert_row(self, chat_id: str, message_id: int, event_id: int) -> dict[str, Any] | None:
        h = NotificationHistory
        with self.session_factory() as session:
            row = session.execute(
                sa.select(h.id, h.message_text, h.has_photo).where(
                    h.chat_id == chat_id, h.telegram_message_id == message_id, h.event_id == event_id
                )
            ).first()
        return None if row is None else {"id": row.id, "message_text": row.message_text, "has_photo": row.has_photo}

    def _event_type(self, event_id: int) -> str | None:
        with self.session_factory() as session:
            return session.scalar(
                sa.select(ObjectType.code)
                .join(DetectionEvent, DetectionEvent.object_type_id == ObjectType.id)
                .where(DetectionEvent.id == event_id)
            )

    def _record_callback(self, event_id: int, chat_id: str, message_id: int, result: str) -> None:
        h = NotificationHistory
        with self.session_factory.begin() as session:
            session.execute(
                sa.update(h)
                .where(h.chat_id == chat_id, h.telegram_message_id == message_id, h.event_id == event_id)
                .values(callback_result=result[:100])
                .execution_options(synchronize_session=False)
            )

    async def handle_webhook(self, ident: str, secret: str | None, payload: dict[str, Any]) -> bool:
        token = self._tokens.get(ident)
        if token is None or not secret or not hmac.compare_digest(secret, self.webhook_secret(token)):
            return False
        bot = self._bot(token)
        update = Update.de_json(payload, bot)
        if update is not None:
            await self.handle_update(bot, update)
        return True

    # -- one-off calls (API) --------------------------------------------------------------------

    async def get_me(self, token: str) -> dict[str, Any]:
        bot = Bot(
            token,
            base_url=f"{self.config.api_url.rstrip('/')}/bot",
            request=HTTPXRequest(connect_timeout=5.0, read_timeout=5.0),
        )
        try:
            me = await bot.get_me()
            return {"id": me.id, "username": me.username}
        finally:
            await _quiet(bot.shutdown())

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> tuple[str, str]:
        """(ok | degraded | down, detail)."""
        if self.key_error:
            return "down", self.key_error
        if not self.running:
            return "down", "the notifier is not running"
        h = NotificationHistory
        with self.session_factory() as session:
            settings = q.load_notification_settings(session)
            pending = (
                session.scalar(
                    sa.select(sa.func.count()).select_from(h).where(h.send_status.in_((q.PENDING, q.SENDING)))
                )
                or 0
            )
            oldest = session.scalar(
                sa.select(sa.func.min(h.created_at)).where(h.send_status.in_((q.PENDING, q.SENDING)))
            )
        if self.recipient_count == 0:
            return "ok", "no recipients configured: alerts are off (POST /api/notifications/recipients)"
        if not settings.enabled:
            return "ok", "alerts disabled in the notification settings"
        age = (q.utcnow() - oldest).total_seconds() if oldest else 0.0
        detail = f"{self.recipient_count} recipient(s), {pending} queued, {self.stats.sent} sent since start"
        if self.stats.consecutive_failures >= 3:
            return (
                "degraded",
                f"{detail}; last {self.stats.consecutive_failures} alerts failed: {self.stats.last_error}",
            )
        if pending and age > 120:
            return "degraded", f"{detail}; oldest queued alert waits {age:.0f} s (last error: {self.stats.last_error})"
        return "ok", detail


def _seconds(value: Any) -> float:
    return float(value.total_seconds()) if hasattr(value, "total_seconds") else float(value)


async def _quiet(coro: Any) -> Any:
    """A Telegram call whose failure changes nothing (answering a stale callback, an edit that
    changes nothing): log it at debug level."""
    try:
        return await coro
    except TelegramError as exc:
        log.debug("telegram call failed: %s", scrub(str(exc)))
        return None


def _key_path(cipher: TokenCipher) -> Path:
    return Path(cipher.source)


def updates_mode(settings: Any) -> str:
    """How button presses arrive for the process settings: ``auto`` is a webhook behind an https
    public URL, else polling."""
    public = settings.public_url if settings.public_url_set else None
    if settings.telegram_updates == "auto":
        return "webhook" if public and public.startswith("https://") else "polling"
    return settings.telegram_updates


def build_notifier(
    settings: Any,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    bus: EventBus | None = None,
    relabel: Relabel | None = None,
    **overrides: Any,
) -> Notifier:
    """A notifier configured from the process settings (detection_service.config.Settings)."""
    public = settings.public_url if settings.public_url_set else None
    updates = updates_mode(settings)
    config = NotifierConfig(
        api_url=settings.telegram_api_url,
        updates=updates,
        webhook_base=public,
        link_base=public,
        timezone=settings.alert_timezone,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    cipher = TokenCipher.load(settings.telegram_key, settings.telegram_key_path)
    return Notifier(session_factory, store, cipher, config, relabel=relabel, bus=bus)
