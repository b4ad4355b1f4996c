"""Bot tokens at rest: Fernet (cryptography) with a key from ``AIDOOR_TELEGRAM_KEY`` or a key file.

``telegrams.bot_token`` holds ``Fernet(key).encrypt(token)`` (text starting ``gAAAAA``); a row
written before encryption existed (plaintext, ``<digits>:<secret>``) is encrypted in place when the
notifier starts with a key. Without a key, encrypted tokens cannot be used: the notifier reports
itself ``down`` with a message saying which variable or file is missing, and the service runs on.
Tokens never leave this module except to the Telegram client: the API shows :func:`mask`, and
:func:`scrub` removes them from error texts (python-telegram-bot puts the token into some
exception messages, httpx into URLs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

TOKEN_RE = re.compile(r"^(\d{3,20}):([A-Za-z0-9_-]{30,60})$")
ENCRYPTED_PREFIX = "gAAAAA"  # version byte 0x80 + timestamp: every Fernet token starts so


class KeyProblem(RuntimeError):
    """Tokens cannot be decrypted (no key, or not the key they were encrypted with)."""


def is_encrypted(stored: str) -> bool:
    return stored.startswith(ENCRYPTED_PREFIX)


def valid_token(token: str) -> bool:
    return bool(TOKEN_RE.match(token))


def bot_id(token: str) -> str | None:
    match = TOKEN_RE.match(token)
    return match.group(1) if match else None


def mask(token: str | None) -> str:
    """What the API shows instead of a token: the bot's numeric id (public) and no secret."""
    ident = bot_id(token) if token else None
    return f"{ident}:********" if ident else "********"


def scrub(text: str, tokens: list[str] | tuple[str, ...] | set[str] = ()) -> str:
    """``text`` without any of ``tokens`` and without anything shaped like a bot token."""
    for token in tokens:
        if token:
            text = text.replace(token, mask(token))
    return re.sub(r"\b(\d{3,20}):[A-Za-z0-9_-]{30,60}\b", r"\1:********", text)


class TokenCipher:
    """Encrypts / decrypts bot tokens. ``key`` None = no key configured (``problem`` says why)."""

    def __init__(self, key: bytes | None, source: str, problem: str | None = None) -> None:
        self._fernet = Fernet(key) if key else None
        self.source = source  # where the key came from / should come from (for messages)
        self.problem = problem

    @property
    def has_key(self) -> bool:
        return self._fernet is not None

    @classmethod
    def load(cls, env_key: str | None, key_file: Path) -> TokenCipher:
        """The key from the environment variable, else from ``key_file`` if it exists."""
        if env_key:
            try:
                return cls(_check_key(env_key.strip().encode()), "AIDOOR_TELEGRAM_KEY")
            except ValueError as exc:
                return cls(None, "AIDOOR_TELEGRAM_KEY", f"AIDOOR_TELEGRAM_KEY is not a Fernet key: {exc}")
        if key_file.exists():
            try:
                return cls(_check_key(key_file.read_bytes().strip()), str(key_file))
            except (OSError, ValueError) as exc:
                return cls(None, str(key_file), f"key file {key_file} is unusable: {exc}")
        return cls(None, str(key_file))

    @classmethod
    def create_key_file(cls, key_file: Path) -> TokenCipher:
        """Write a new random key to ``key_file`` (mode 0600) and use it."""
        key = Fernet.generate_key()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another thread or process was first: use its key
            return cls.load(None, key_file)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        return cls(key, str(key_file))

    def missing_message(self) -> str:
        if self.problem:
            return self.problem
        return (
            f"bot tokens are encrypted but no key is available: set AIDOOR_TELEGRAM_KEY or restore "
            f"the key file {self.source} (AIDOOR_TELEGRAM_KEY_FILE)"
        )

    def encrypt(self, token: str) -> str:
        if self._fernet is None:
            raise KeyProblem(self.missing_message())
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not is_encrypted(stored):
            return stored  # a legacy plaintext row (encrypted at the next start with a key)
        if self._fernet is None:
            raise KeyProblem(self.missing_message())
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise KeyProblem(
                f"the key from {self.source} does not decrypt the stored bot tokens (a different key was used)"
            ) from None


def _check_key(key: bytes) -> bytes:
    Fernet(key)  # ValueError if not 32 url-safe base64 bytes
    return key
