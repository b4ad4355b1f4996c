"""API structs of accounts, sessions and API tokens (docs/security.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

RoleLiteral = Literal["viewer", "user", "admin"]
TokenRoleLiteral = Literal["viewer", "user", "admin", "camera"]

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class UserInfo(msgspec.Struct, kw_only=True):
    id: int
    username: str
    role: str
    is_active: bool
    password_change_required: bool
    created_at: datetime


class TokenInfo(msgspec.Struct, kw_only=True):
    id: int
    name: str
    role: str
    prefix: str  # the token's first characters, to tell tokens apart
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    camera_id: int | None = None  # a camera token scoped to that camera's ingest; None: every camera


class NewToken(msgspec.Struct, kw_only=True):
    token: str  # shown once, never stored
    info: TokenInfo


class Me(msgspec.Struct, kw_only=True):
    """Who the credentials belong to. ``csrf_token`` (sessions only) goes in the X-CSRF-Token
    header of every write."""

    name: str
    role: str
    via: Literal["session", "token", "off"]
    user_id: int | None
    password_change_required: bool
    csrf_token: str | None
    auth_enabled: bool


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    username: _Name
    password: _Password


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    current_password: _Password
    new_password: _Password


class UserCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    username: _Name
    password: _Password
    role: RoleLiteral = "viewer"


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: TokenRoleLiteral
    name: _Name | None = None
    # Camera tokens only: the one camera (GET /api/cameras) whose WebSocket ingest it may feed.
    camera_id: Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)] | None = None
