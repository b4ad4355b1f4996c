"""Accounts, dashboard sessions and API tokens (docs/security.md).

- Passwords are hashed with Argon2id (``argon2.PasswordHasher``: salted, parameters kept in the hash).
- A dashboard session is a random cookie value; only its SHA-256 is stored (``auth_sessions``),
  with the session's CSRF token and its expiry.
- An API token (``aidoor_`` + 43 random URL-safe characters) is shown once; only its SHA-256 is
  stored (``api_tokens``), with a role, the time of last use (written at most once a minute) and
  revocation. SHA-256 is enough for 256 random bits: there is nothing to brute-force.
- Failed logins are counted per account and per client address (``LoginLimiter``): 5 within 15
  minutes lock that key out until the oldest failure is 15 minutes old.

The API layer (``api/auth.py``) turns credentials into a :class:`Principal` through this service
and decides what the principal may do; this module knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from detection_service.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from schemas.auth import NewToken, TokenInfo, UserInfo
from schemas.db import ApiToken, AuthSession, Camera, User, utcnow

log = logging.getLogger(__name__)

# Ranked: each role may do what the ones before it may.
ROLES = ("viewer", "user", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
# A camera token may only push frames to the WebSocket ingest.
CAMERA_ROLE = "camera"
TOKEN_ROLES = (*ROLES, CAMERA_ROLE)
TOKEN_PREFIX = "aidoor_"
FIRST_ADMIN = "admin"
MIN_PASSWORD_LENGTH = 10
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
# Tokens' last use is written at most this often per token (a camera or the MJPEG viewer would
# otherwise write a row per request).
LAST_USE_WRITE_S = 60.0
# Principals looked up by credential hash are reused this long (revocation and logout drop them).
_CACHE_S = 5.0


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``user_id`` is None for a CLI-made token and when authentication is off."""

    name: str
    role: str
    via: str  # session | token | off
    user_id: int | None = None
    csrf_token: str | None = None  # sessions only
    password_change_required: bool = False
    token_id: int | None = None
    camera_id: int | None = None  # a camera token scoped to one camera's ingest; None: every camera

    def may_feed(self, camera_id: int) -> bool:
        """Whether this caller may push frames to ``camera_id``'s WebSocket ingest."""
        return self.camera_id is None or self.camera_id == camera_id

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK.get(self.role, 0) >= ROLE_RANK[minimum]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class LoginLimiter:
    """Failed logins per key (``user:<name>``, ``addr:<ip>``) in a sliding window; thread-safe.
    In memory: one service process answers logins, and a restart forgets at most 15 minutes."""

    def __init__(self, max_failures: int = 5, window_s: float = 15 * 60, clock=time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float:
        """Seconds until every key may try again; 0 when none is locked out."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if not times:
                    continue
                while times and now - times[0] >= self.window_s:
                    times.popleft()
                if len(times) >= self.max_failures:
                    wait = max(wait, self.window_s - (now - times[0]))
        return wait

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                self._failures[key].append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class AuthService:
    def __init__(self, session_factory: sessionmaker[Session], session_ttl: timedelta = timedelta(days=7)) -> None:
        self.session_factory = session_factory
        self.session_ttl = session_ttl
        self.hasher = PasswordHasher()
        # Each Argon2 hash takes 64 MiB for ~50 ms: at most two at a time, so a burst of logins
        # queues instead of eating the box's memory.
        self._hashing = threading.BoundedSemaphore(2)
        self.limiter = LoginLimiter()
        # Verified against when the account does not exist, so both answers take as long.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._last_use_written: dict[int, float] = {}
        self._lock = threading.Lock()

    # -- users ------------------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        password: str,
        role: str,
        *,
        created_by: str | None = None,
        password_change_required: bool = False,
    ) -> UserInfo:
        username = username.strip()
        if not _USERNAME.match(username):
            raise Invalid("username: 1-100 letters, digits or . _ @ -", {"username": username}, code="INVALID_USERNAME")
        self._check_role(role, ROLES)
        self._check_password(password)
        with self.session_factory.begin() as session:
            if session.scalar(sa.select(User.id).where(User.username == username)) is not None:
                raise Conflict(f"user {username!r} exists", {"username": username}, code="USER_EXISTS")
            user = User(
                username=username,
                password_hash=self._hash(password),
                role=role,
                is_active=True,
                password_change_required=password_change_required,
                created_by=created_by,
                updated_by=created_by,
            )
            session.add(user)
            session.flush()
            return self._user_info(user)

    def users(self) -> list[UserInfo]:
        with self.session_factory() as session:
            return [self._user_info(u) for u in session.scalars(sa.select(User).order_by(User.id))]

    def has_users(self) -> bool:
        with self.session_factory() as session:
            return session.scalar(sa.select(User.id).limit(1)) is not None

    def ensure_first_admin(self) -> str | None:
        """On a fresh install (no users): create ``admin`` with a generated one-time password and
        return it (the caller shows it once); it must be changed at first login. None otherwise."""
        if self.has_users():
            return None
        password = secrets.token_urlsafe(12)
        try:
            self.create_user(FIRST_ADMIN, password, "admin", created_by="first start", password_change_required=True)
        except (Conflict, IntegrityError):  # another process created it first
            return None
        return password

    def set_password(
        self, user_id: int, current: str, new: str, *, updated_by: str, keep_session: str | None = None
    ) -> UserInfo:
        """Change a password (the current one needed). The account's other sessions end; the one
        whose cookie is ``keep_session`` (the caller's) stays."""
        self._check_password(new)
        if secrets.compare_digest(current, new):
            raise Invalid("the new password must differ from the current one", code="SAME_PASSWORD")
        with self.session_factory.begin() as session:
            user = session.get(User, user_id)
            if user is None or not user.is_active:
                raise NotFound(f"no user {user_id}", {"id": user_id}, code="USER_NOT_FOUND")
            if not self._verify(user.password_hash, current):
                raise Forbidden("the current password is wrong", code="WRONG_PASSWORD")
            user.password_hash = self._hash(new)
            user.password_change_required = False
            user.updated_by = updated_by
            ended = sa.delete(AuthSession).where(AuthSession.user_id == user_id)
            if keep_session:
                ended = ended.where(AuthSession.session_hash != _sha256(keep_session))
            session.execute(ended)
            session.flush()
            info = self._user_info(user)
        self._forget_all()
        return info

    def reset_password(self, username: str, new: str, *, updated_by: str) -> UserInfo:
        """Set a password without the current one (the CLI, run by whoever owns the machine)."""
        self._check_password(new)
        with self.session_factory.begin() as session:
            user = session.scalar(sa.select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username!r}", {"username": username}, code="USER_NOT_FOUND")
            user.password_hash = self._hash(new)
            user.password_change_required = False
            user.updated_by = updated_by
            session.execute(sa.delete(AuthSession).where(AuthSession.user_id == user.id))
            session.flush()
            info = self._user_info(user)
        self._forget_all()
        return info

    # -- sessions ---------------------------------------------------------------------------

    def login(self, username: str, password: str, address: str) -> tuple[str, Principal]:
        """A new session (cookie value, principal) for good credentials. Raises RateLimited while
        the account or the address has too many recent failures, Unauthenticated otherwise."""
        keys = (f"user:{username.strip().lower()}", f"addr:{address}")
        wait = self.limiter.retry_after(*keys)
        if wait > 0:
            raise RateLimited(
                "too many failed logins; try again later",
                {"retry_after_s": int(wait) + 1},
                code="TOO_MANY_LOGIN_ATTEMPTS",
            )
        with self.session_factory.begin() as session:
            user = session.scalar(sa.select(User).where(User.username == username.strip()))
            good = self._verify(user.password_hash if user else None, password)
            if user is None or not good or not user.is_active:
                self.limiter.failed(*keys)
                raise Unauthenticated("wrong username or password", code="BAD_CREDENTIALS")
            if user.password_hash and self.hasher.check_needs_rehash(user.password_hash):
                user.password_hash = self._hash(password)
            cookie = secrets.token_urlsafe(32)
            csrf = secrets.token_urlsafe(32)
            now = utcnow()
            session.execute(sa.delete(AuthSession).where(AuthSession.expires_at < now))  # housekeeping
            session.add(
                AuthSession(
                    session_hash=_sha256(cookie),
                    user_id=user.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + self.session_ttl,
                )
            )
            principal = Principal(
                name=user.username,
                role=user.role,
                via="session",
                user_id=user.id,
                csrf_token=csrf,
                password_change_required=user.password_change_required,
            )
        self.limiter.clear(keys[0])
        log.info("login: %s (%s) from %s", user.username, user.role, address)
        return cookie, principal

    def logout(self, cookie: str) -> None:
        digest = _sha256(cookie)
        with self.session_factory.begin() as session:
            session.execute(sa.delete(AuthSession).where(AuthSession.session_hash == digest))
        self._forget(digest)

    def session_principal(self, cookie: str) -> Principal | None:
        digest = _sha256(cookie)
        return self._cached(digest, lambda: self._load_session(digest))

    def _load_session(self, digest: str) -> Principal | None:
        with self.session_factory() as session:
            row = session.execute(
                sa.select(AuthSession, User)
                .join(User, User.id == AuthSession.user_id)
                .where(AuthSession.session_hash == digest, AuthSession.expires_at > utcnow(), User.is_active)
            ).first()
            if row is None:
                return None
            auth_session, user = row
            return Principal(
                name=user.username,
                role=user.role,
                via="session",
                user_id=user.id,
                csrf_token=auth_session.csrf_token,
                password_change_required=user.password_change_required,
            )

    # -- API tokens -------------------------------------------------------------------------

    def create_token(
        self,
        role: str,
        name: str | None = None,
        *,
        user_id: int | None = None,
        created_by: str | None = None,
        camera_id: int | None = None,
    ) -> NewToken:
        """``camera_id``: a camera token for that camera's ingest only (docs/cameras.md)."""
        self._check_role(role, TOKEN_ROLES)
        if camera_id is not None and role != CAMERA_ROLE:
            raise Invalid(
                "only a camera token is scoped to a camera",
                {"role": role, "camera_id": camera_id},
                code="INVALID_SCOPE",
            )
        name = (name or f"{role} token").strip()
        if not 1 <= len(name) <= 100:
            raise Invalid("name: 1-100 characters", {"name": name}, code="INVALID_NAME")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.session_factory.begin() as session:
            if camera_id is not None and session.get(Camera, camera_id) is None:
                raise NotFound(f"no camera {camera_id}", {"camera_id": camera_id}, code="CAMERA_NOT_FOUND")
            row = ApiToken(
                name=name,
                token_hash=_sha256(token),
                token_prefix=token[: len(TOKEN_PREFIX) + 6],
                role=role,
                user_id=user_id,
                created_by=created_by,
                created_at=utcnow(),
                camera_id=camera_id,
            )
            session.add(row)
            session.flush()
            return NewToken(token=token, info=self._token_info(row))

    def tokens(self) -> list[TokenInfo]:
        with self.session_factory() as session:
            return [self._token_info(t) for t in session.scalars(sa.select(ApiToken).order_by(ApiToken.id))]

    def revoke_token(self, token_id: int) -> TokenInfo:
        with self.session_factory.begin() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token {token_id}", {"id": token_id}, code="TOKEN_NOT_FOUND")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            session.flush()
            info = self._token_info(row)
        self._forget_all()
        log.info("token %s (%s, %s) revoked", token_id, info.name, info.role)
        return info

    def token_principal(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        principal = self._cached(_sha256(token), lambda: self._load_token(_sha256(token)))
        if principal is not None and principal.token_id is not None:
            self._record_use(principal.token_id)
        return principal

    def _load_token(self, digest: str) -> Principal | None:
        with self.session_factory() as session:
            row = session.scalar(
                sa.select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
            )
            if row is None:
                return None
            return Principal(
                name=f"token:{row.name}",
                role=row.role,
                via="token",
                user_id=row.user_id,
                token_id=row.id,
                camera_id=row.camera_id,
            )

    def _record_use(self, token_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_use_written.get(token_id)
            if last is not None and now - last < LAST_USE_WRITE_S:
                return
            self._last_use_written[token_id] = now
        with self.session_factory.begin() as session:
            session.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))

    # -- helpers ----------------------------------------------------------------------------

    def _cached(self, digest: str, load) -> Principal | None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and now - hit[0] < _CACHE_S:
                return hit[1]
        principal = load()
        with self._lock:
            if len(self._cache) > 10_000:  # a flood of made-up credentials must not grow it forever
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

    def _forget(self, digest: str) -> None:
        with self._lock:
            self._cache.pop(digest, None)

    def _forget_all(self) -> None:
        with self._lock:
            self._cache.clear()

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            with self._hashing:
                return self.hasher.verify(password_hash or self._dummy_hash, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def _hash(self, password: str) -> str:
        with self._hashing:
            return self.hasher.hash(password)

    @staticmethod
    def _check_role(role: str, allowed: tuple[str, ...]) -> None:
        if role not in allowed:
            raise Invalid(f"role must be one of {', '.join(allowed)}", {"role": role}, code="INVALID_ROLE")

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH or len(password) > 1024:
            raise Invalid(f"a password has {MIN_PASSWORD_LENGTH} to 1024 characters", code="WEAK_PASSWORD")

    @staticmethod
    def _user_info(user: User) -> UserInfo:
        return UserInfo(
            id=user.id,
            username=user.username,
            role=user.role,
            is_active=user.is_active,
            password_change_required=user.password_change_required,
            created_at=user.created_at,
        )

    @staticmethod
    def _token_info(row: ApiToken) -> TokenInfo:
        return TokenInfo(
            id=row.id,
            name=row.name,
            role=row.role,
            prefix=row.token_prefix,
            created_by=row.created_by,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            camera_id=row.camera_id,
        )
