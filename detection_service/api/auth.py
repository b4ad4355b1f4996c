"""Authentication and the one guard every route passes (docs/security.md).

``AuthGuard`` is registered on the app (``create_app(guards=[...])``) and so runs before every
HTTP and WebSocket handler, before its body is read. It finds the caller's credentials (an
``Authorization: Bearer aidoor_...`` token, else the ``aidoor_session`` cookie), and checks the
route's minimum role, resolved by :func:`required_role`:

1. the handler's ``opt={"role": ...}`` (``"public"`` for no credentials at all),
2. else ``ROUTE_ROLES`` below (admin-only writes, public pages, the camera ingest),
3. else by method: GET/HEAD need ``viewer``, every other method ``user``.

Cookie sessions must send their CSRF token in ``X-CSRF-Token`` on every write (token requests
are exempt: a browser never adds a bearer token by itself). A principal whose password must be
changed may use ``/api/auth/*`` only. With ``AIDOOR_AUTH=off`` (loopback only, ``config.py``)
every request acts as a local admin.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Any

from anyio import to_thread
from litestar import Controller, MediaType, Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.exc import SQLAlchemyError

from detection_service.api.dashboard import WEB_DIR
from detection_service.api.params import RowId
from detection_service.api.responses import ok
from detection_service.config import Settings
from detection_service.database import current_actor
from detection_service.errors import Invalid, Unavailable
from detection_service.services.auth import CAMERA_ROLE, AuthService, Principal
from schemas.auth import LoginRequest, Me, NewToken, PasswordChange, TokenCreate, TokenInfo, UserCreate, UserInfo
from schemas.envelope import Envelope

SESSION_COOKIE = "aidoor_session"
CSRF_HEADER = "x-csrf-token"
PUBLIC = "public"
CAMERA = CAMERA_ROLE  # the ingest: a camera token, or a user/admin
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_ADMIN = Principal(name="local (auth off)", role="admin", via="off")

# (method, path template) -> minimum role, where it differs from the default by method. Path
# templates are Litestar's (``scope["path_template"]``). Keep docs/security.md's table in step.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    # No credentials: health for probes; the dashboard's static shell and login page (the page
    # itself asks the API, which needs a session); signed object links carry their own signature
    # (they are sent to Telegram); Telegram's webhook checks its secret-token header.
    ("GET", "/api/system/health"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("GET", "/web/{file_path}"): PUBLIC,
    ("HEAD", "/web/{file_path}"): PUBLIC,
    ("GET", "/api/storage/objects/{key}"): PUBLIC,
    ("POST", "/api/notifications/telegram/webhook/{bot_id}"): PUBLIC,
    # A camera pushing frames.
    ("WEBSOCKET", "/api/stream/ingest"): CAMERA,
    # Admin only: what changes the whole system or deletes data.
    ("PUT", "/api/settings"): "admin",
    ("PUT", "/api/settings/{category}"): "admin",
    ("POST", "/api/system/restart"): "admin",
    ("POST", "/api/system/cleanup"): "admin",
    ("POST", "/api/models/{model_ref}/deploy"): "admin",
    ("POST", "/api/notifications/recipients"): "admin",
    ("DELETE", "/api/notifications/recipients/{recipient_id}"): "admin",
}


def required_role(handler: BaseRouteHandler, method: str, path_template: str) -> str:
    if method == "OPTIONS":  # CORS preflights never carry credentials; they answer headers only
        return PUBLIC
    declared = handler.opt.get("role")
    if declared:
        return str(declared)
    role = ROUTE_ROLES.get((method, path_template.rstrip("/") or "/"))
    if role:
        return role
    return "viewer" if method in SAFE_METHODS else "user"


class AuthGuard:
    """The app's one guard. ``service`` is set by the lifespan once the database is open."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: AuthService | None = None

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        method = connection.scope.get("method") or "WEBSOCKET"
        path_template = connection.scope.get("path_template") or connection.scope["path"]
        minimum = required_role(handler, method, path_template)
        principal = await self._principal(connection) if minimum != PUBLIC else None
        connection.scope["user"] = principal
        # The audit columns of what this request writes name this principal (database.py).
        current_actor.set((principal.user_id, principal.name) if principal else None)
        if minimum == PUBLIC:
            return
        if principal is None:
            raise NotAuthorizedException("sign in or send an API token (Authorization: Bearer ...)")
        if principal.password_change_required and not path_template.startswith("/api/auth/"):
            raise PermissionDeniedException("change your password first: POST /api/auth/password")
        if minimum == CAMERA:
            allowed = principal.role == CAMERA_ROLE or principal.has_role("user")
        else:
            allowed = principal.role != CAMERA_ROLE and principal.has_role(minimum)
        if not allowed:
            raise PermissionDeniedException(f"this needs the {minimum!r} role; you are {principal.role!r}")
        writes = method not in SAFE_METHODS and method != "WEBSOCKET"
        if (writes or method == "WEBSOCKET") and connection.headers.get("sec-fetch-site") == "cross-site":
            # A browser says another site made this request: refused whatever the credentials (with
            # AIDOOR_AUTH=off there are none, and a form post to 127.0.0.1 would otherwise pass).
            raise PermissionDeniedException("cross-site writes are refused")
        if principal.via == "session" and writes:
            sent = connection.headers.get(CSRF_HEADER) or ""
            if not (principal.csrf_token and secrets.compare_digest(sent, principal.csrf_token)):
                raise PermissionDeniedException("missing or wrong X-CSRF-Token header (GET /api/auth/me has it)")

    async def _principal(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        if not self.settings.auth_enabled:
            return LOCAL_ADMIN
        service = self.service
        if service is None:  # before start-up finished
            return None
        scheme, _, credential = (connection.headers.get("authorization") or "").partition(" ")
        cookie = connection.cookies.get(SESSION_COOKIE)
        try:
            if scheme.lower() == "bearer" and credential.strip():
                return await to_thread.run_sync(service.token_principal, credential.strip())
            if cookie:
                return await to_thread.run_sync(service.session_principal, cookie)
        except SQLAlchemyError as exc:
            # Credentials cannot be checked while the database is down: 503, not 500 (health stays public).
            raise Unavailable(
                "credentials cannot be checked now: the database is unavailable", code="AUTH_UNAVAILABLE"
            ) from exc
        return None


def current_principal(request: Request[Any, Any, Any]) -> Principal:
    """The principal the guard found (never None past the guard on a non-public route)."""
    principal = request.scope.get("user")
    if principal is None:  # a public route that asks who is calling: nobody
        raise NotAuthorizedException("sign in or send an API token")
    return principal


def _me(principal: Principal, settings: Settings) -> Me:
    return Me(
        name=principal.name,
        role=principal.role,
        via=principal.via,  # type: ignore[arg-type]
        user_id=principal.user_id,
        password_change_required=principal.password_change_required,
        csrf_token=principal.csrf_token,
        auth_enabled=settings.auth_enabled,
    )


class AuthController(Controller):
    path = "/api/auth"
    tags = ["Auth"]

    @post(
        "/login",
        status_code=200,
        sync_to_thread=True,
        opt={"role": PUBLIC},
        summary="Sign in: sets the HTTP-only session cookie; answers the CSRF token for writes",
        description="5 failed logins within 15 minutes for one account or from one address answer 429 "
        "TOO_MANY_LOGIN_ATTEMPTS (details.retry_after_s) until the oldest is 15 minutes old.",
    )
    def login(
        self, request: Request[Any, Any, Any], auth_service: AuthService, settings: Settings, data: LoginRequest
    ) -> Response[Envelope[Me]]:
        address = request.client.host if request.client else "unknown"
        cookie, principal = auth_service.login(data.username, data.password, address)
        response = ok(_me(principal, settings), message=f"signed in as {principal.name}")
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(auth_service.session_ttl.total_seconds()),
            path="/",
            httponly=True,
            samesite="lax",
            secure=settings.public_url.startswith("https://"),
        )
        return response

    @post("/logout", status_code=200, sync_to_thread=True, summary="Sign out: ends this session")
    def logout(self, request: Request[Any, Any, Any], auth_service: AuthService) -> Response[Envelope[None]]:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            auth_service.logout(cookie)
        response = ok(None, message="signed out")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @get("/me", summary="Who the credentials belong to, the role, and (sessions) the CSRF token")
    async def me(self, request: Request[Any, Any, Any], settings: Settings) -> Response[Envelope[Me]]:
        return ok(_me(current_principal(request), settings))

    @post(
        "/password",
        status_code=200,
        sync_to_thread=True,
        summary="Change your own password (required after the first-start password); your other sessions end",
    )
    def change_password(
        self, request: Request[Any, Any, Any], auth_service: AuthService, data: PasswordChange
    ) -> Response[Envelope[UserInfo]]:
        principal = current_principal(request)
        if principal.user_id is None or principal.via != "session":
            raise Invalid("sign in with a password to change it", code="NOT_A_USER_SESSION")
        info = auth_service.set_password(
            principal.user_id,
            data.current_password,
            data.new_password,
            updated_by=principal.name,
            keep_session=request.cookies.get(SESSION_COOKIE),
        )
        return ok(info, message="password changed")

    @get("/users", sync_to_thread=True, opt={"role": "admin"}, summary="Accounts (admin)")
    def users(self, auth_service: AuthService) -> Response[Envelope[list[UserInfo]]]:
        return ok(auth_service.users())

    @post("/users", status_code=201, sync_to_thread=True, opt={"role": "admin"}, summary="Create an account (admin)")
    def create_user(
        self, request: Request[Any, Any, Any], auth_service: AuthService, data: UserCreate
    ) -> Response[Envelope[UserInfo]]:
        info = auth_service.create_user(
            data.username, data.password, data.role, created_by=current_principal(request).name
        )
        return ok(info, message=f"user {info.username} ({info.role}) created", status_code=201)

    @get("/tokens", sync_to_thread=True, opt={"role": "admin"}, summary="API tokens (admin); never the tokens")
    def tokens(self, auth_service: AuthService) -> Response[Envelope[list[TokenInfo]]]:
        return ok(auth_service.tokens())

    @post(
        "/tokens",
        status_code=201,
        sync_to_thread=True,
        opt={"role": "admin"},
        summary="Create an API token (admin): role viewer, user, admin or camera; the token is shown once",
        description="camera_id (camera tokens only): the token may feed that camera's WebSocket ingest only "
        "(docs/cameras.md); left out: every camera. Unknown camera: 404 CAMERA_NOT_FOUND; another role: 400 "
        "INVALID_SCOPE.",
    )
    def create_token(
        self, request: Request[Any, Any, Any], auth_service: AuthService, data: TokenCreate
    ) -> Response[Envelope[NewToken]]:
        principal = current_principal(request)
        new = auth_service.create_token(
            data.role, data.name, user_id=principal.user_id, created_by=principal.name, camera_id=data.camera_id
        )
        return ok(new, message="token created; it is shown only now", status_code=201)

    @delete(
        "/tokens/{token_id:int}",
        status_code=200,
        sync_to_thread=True,
        opt={"role": "admin"},
        summary="Revoke an API token (admin)",
    )
    def revoke_token(self, auth_service: AuthService, token_id: RowId) -> Response[Envelope[TokenInfo]]:
        return ok(auth_service.revoke_token(token_id), message=f"token {token_id} revoked")


@lru_cache(maxsize=1)
def _login_page() -> bytes:
    return (WEB_DIR / "login.html").read_bytes()


class LoginPageController(Controller):
    path = "/login"
    include_in_schema = False  # a page, not an API

    @get("/", media_type=MediaType.HTML, opt={"role": PUBLIC})
    async def page(self) -> Response[bytes]:
        return Response(_login_page(), media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})
