"""A fake Telegram Bot API on 127.0.0.1, speaking the real HTTP protocol, for
``Bot(token, base_url=f"{fake.url}/bot")`` (python-telegram-bot 22.8).

Used by the benches (``aidoor bench notify``, ``aidoor bench faults``) and the tests
(tests/test_notifications.py); it lives in the package so the benches run without the tests or pytest.

Methods: getMe, sendMessage, sendPhoto (multipart), editMessageCaption, editMessageText,
editMessageReplyMarkup, answerCallbackQuery, getUpdates (long polling, offsets), setWebhook,
deleteWebhook. Answers are ``{"ok": true, "result": ...}`` or the Bot API's error shape
``{"ok": false, "error_code", "description", "parameters": {"retry_after"}}``.

Injected failures (``fail``): a status with a description (429 + retry_after, 500, 400, 403,
401), or ``hang_s`` (no answer for that long: the client's read timeout fires; the request is NOT
processed, as when Telegram never got it). Failures are consumed in order, per method and
optionally per chat. Every accepted message is recorded with its acceptance time (``sent``);
every request with method, token and fields (``requests``). Callback presses are queued with
``press`` and served by getUpdates.

Runs a ThreadingHTTPServer in a daemon thread; ``with FakeTelegram(...) as fake:`` starts and
stops it. Bounded: a long poll waits at most ``max_poll_s``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class Failure:
    method: str
    status: int = 500
    retry_after: int | None = None
    hang_s: float | None = None
    chat_id: str | None = None  # only requests for this chat
    times: int = 1  # how many requests it hits; -1 = all


@dataclass
class Sent:
    method: str
    token: str
    chat_id: str
    message_id: int
    text: str | None
    caption: str | None
    photo: bytes | None
    reply_markup: dict[str, Any] | None
    at: float  # time.monotonic() when accepted


@dataclass
class FakeTelegram:
    tokens: dict[str, str] = field(default_factory=dict)  # token -> bot username
    host: str = "127.0.0.1"
    port: int = 0
    max_poll_s: float = 2.0
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    edits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._next_message_id = 100
        self._next_update_id = 5000
        self._updates: dict[str, list[dict[str, Any]]] = {}  # token -> pending updates
        self._messages: dict[tuple[str, int], dict[str, Any]] = {}  # (chat, message_id) -> message
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def bot_url(self) -> str:
        return f"{self.url}/bot"

    # -- test controls ------------------------------------------------------------------------

    def add_bot(self, token: str, username: str = "aidoor_test_bot") -> None:
        with self._lock:
            self.tokens[token] = username

    def fail(
        self,
        method: str,
        status: int = 500,
        *,
        retry_after: int | None = None,
        hang_s: float | None = None,
        chat_id: str | int | None = None,
        times: int = 1,
    ) -> None:
        with self._lock:
            self.failures.append(
                Failure(method, status, retry_after, hang_s, None if chat_id is None else str(chat_id), times)
            )

    def press(self, token: str, chat_id: str | int, message_id: int, data: str, user_id: int = 4242) -> int:
        """Queue a callback_query update (a user pressing an inline button under a message)."""
        with self._lock:
            message = self._messages.get((str(chat_id), message_id))
            if message is None:
                raise KeyError(f"no message {message_id} in chat {chat_id}")
            self._next_update_id += 1
            update = {
                "update_id": self._next_update_id,
                "callback_query": {
                    "id": f"cb{self._next_update_id}",
                    "from": {"id": user_id, "is_bot": False, "first_name": "Owner"},
                    "chat_instance": "ci-1",
                    "data": data,
                    "message": message,
                },
            }
            self._updates.setdefault(token, []).append(update)
            self._lock.notify_all()
            return self._next_update_id

    def sent_to(self, chat_id: str | int | None = None, method: str | None = None) -> list[Sent]:
        with self._lock:
            return [
                s
                for s in self.sent
                if (chat_id is None or s.chat_id == str(chat_id)) and (method is None or s.method == method)
            ]

    def calls(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _, _ in self.requests if m == method)

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def message(self, chat_id: str | int, message_id: int) -> dict[str, Any]:
        with self._lock:
            return dict(self._messages[(str(chat_id), message_id)])

    # -- server -------------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle + the client's
                # delayed ACK add ~40 ms to every answer (the real API has no such stall).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._handle(self.rfile.read(length) if length else b"")

            def _handle(self, body: bytes) -> None:
                status, payload = fake._dispatch(self.path, self.headers.get("Content-Type", ""), body)
                if status is None:  # hung: close without an answer
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="fake-telegram"
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            self._lock.notify_all()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- protocol -----------------------------------------------------------------------------

    def _dispatch(self, path: str, content_type: str, body: bytes) -> tuple[int | None, dict[str, Any]]:
        # /bot<token>/<method>
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return 404, _error(404, "Not Found")
        token, method = parts[0][3:], parts[1]
        fields, files = _parse_body(content_type, body)
        with self._lock:
            self.requests.append((method, token, dict(fields.items())))
            self._lock.notify_all()
            if token not in self.tokens:
                return 401, _error(401, "Unauthorized")
            failure = self._take_failure(method, fields.get("chat_id"))
        if failure is not None:
            if failure.hang_s is not None:
                time.sleep(failure.hang_s)
                return None, {}
            description = DESCRIPTIONS.get(failure.status, "Error").format(retry_after=failure.retry_after)
            params = {"retry_after": failure.retry_after} if failure.retry_after is not None else None
            return failure.status, _error(failure.status, description, params)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return 404, _error(404, "Not Found: method not found")
        try:
            return 200, {"ok": True, "result": handler(token, fields, files)}
        except _ApiError as exc:
            return exc.status, _error(exc.status, exc.description)

    def _take_failure(self, method: str, chat_id: Any) -> Failure | None:
        for failure in self.failures:
            if failure.method != method:
                continue
            if failure.chat_id is not None and failure.chat_id != str(chat_id):
                continue
            if failure.times > 0:
                failure.times -= 1
                if failure.times == 0:
                    self.failures.remove(failure)
            return failure
        return None

    def _bot_user(self, token: str) -> dict[str, Any]:
        return {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "AI Door", "username": self.tokens[token]}

    def _m_getMe(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self._bot_user(token)

    def _new_message(self, token: str, method: str, fields: dict[str, Any], photo: bytes | None) -> dict[str, Any]:
        chat_id = fields.get("chat_id")
        if chat_id in (None, ""):
            raise _ApiError(400, "Bad Request: chat_id is empty")
        markup = _json_field(fields.get("reply_markup"))
        with self._lock:
            self._next_message_id += 1
            message_id = self._next_message_id
            message: dict[str, Any] = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": int(chat_id) if str(chat_id).lstrip("-").isdigit() else 0, "type": "private"},
                "from": self._bot_user(token),
            }
            if photo is not None:
                message["photo"] = [
                    {
                        "file_id": f"ph{message_id}",
                        "file_unique_id": f"u{message_id}",
                        "width": 320,
                        "height": 240,
                        "file_size": len(photo),
                    }
                ]
                if fields.get("caption"):
                    message["caption"] = fields["caption"]
            else:
                message["text"] = fields.get("text", "")
            if markup:
                message["reply_markup"] = markup
            self._messages[(str(chat_id), message_id)] = message
            self.sent.append(
                Sent(
                    method,
                    token,
                    str(chat_id),
                    message_id,
                    fields.get("text"),
                    fields.get("caption"),
                    photo,
                    markup,
                    time.monotonic(),
                )
            )
            self._lock.notify_all()
        return message

    def _m_sendMessage(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        if not fields.get("text"):
            raise _ApiError(400, "Bad Request: message text is empty")
        return self._new_message(token, "sendMessage", fields, None)

    def _m_sendPhoto(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        photo = files.get("photo")
        if photo is None:
            attach = str(fields.get("photo", ""))
            photo = files.get(attach.removeprefix("attach://")) if attach.startswith("attach://") else None
        if not photo:
            raise _ApiError(400, "Bad Request: there is no photo in the request")
        return self._new_message(token, "sendPhoto", fields, photo)

    def _edit(self, method: str, fields: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
        key = (str(fields.get("chat_id")), int(fields.get("message_id") or 0))
        with self._lock:
            message = self._messages.get(key)
            if message is None:
                raise _ApiError(400, "Bad Request: message to edit not found")
            markup = _json_field(fields.get("reply_markup"))
            updated = {**message, **change}
            if markup:
                updated["reply_markup"] = markup
            else:
                updated.pop("reply_markup", None)
            if updated == message:
                raise _ApiError(400, "Bad Request: message is not modified")
            self._messages[key] = updated
            self.edits.append((method, dict(fields)))
            self._lock.notify_all()
            return updated

    def _m_editMessageCaption(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self._edit("editMessageCaption", fields, {"caption": fields.get("caption", "")})

    def _m_editMessageText(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self._edit("editMessageText", fields, {"text": fields.get("text", "")})

    def _m_editMessageReplyMarkup(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        return self._edit("editMessageReplyMarkup", fields, {})

    def _m_answerCallbackQuery(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> bool:
        with self._lock:
            self.answers.append(dict(fields))
            self._lock.notify_all()
        return True

    def _m_getUpdates(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> list[dict[str, Any]]:
        if token in self.webhooks:
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(fields.get("offset") or 0)
        wait = min(float(fields.get("timeout") or 0), self.max_poll_s)
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                queue = self._updates.setdefault(token, [])
                if offset:
                    queue[:] = [u for u in queue if u["update_id"] >= offset]  # confirmed ones are gone
                if queue or time.monotonic() >= deadline or self._server is None:
                    return list(queue)
                self._lock.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _m_setWebhook(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> bool:
        with self._lock:
            self.webhooks[token] = dict(fields)
        return True

    def _m_deleteWebhook(self, token: str, fields: dict[str, Any], files: dict[str, bytes]) -> bool:
        with self._lock:
            self.webhooks.pop(token, None)
        return True


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _json_field(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Form-encoded, JSON or multipart fields (python-telegram-bot sends files as multipart)."""
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if not body:
        return fields, files
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                files[str(name)] = payload
            else:
                fields[str(name)] = payload.decode()
        return fields, files
    if content_type.startswith("application/json"):
        data = json.loads(body)
        return {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in data.items()}, files
    for key, values in parse_qs(body.decode(), keep_blank_values=True).items():
        fields[key] = values[-1]
    return fields, files


@contextmanager
def fake_telegram(*tokens: str, max_poll_s: float = 2.0) -> Iterator[FakeTelegram]:
    fake = FakeTelegram(max_poll_s=max_poll_s)
    for token in tokens:
        fake.add_bot(token)
    with fake:
        yield fake
