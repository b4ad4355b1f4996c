"""Alembic environment: the URL the caller configured, else the service's AIDOOR_* settings."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from logging.config import fileConfig
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import NullPool

from detection_service.database import make_engine, normalize_url
from schemas.db import Base, UTCDateTime

config = context.config

# Only when run from the alembic CLI: the service builds its Config in code (no ini file) and
# keeps its own logging.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from detection_service.config import Settings

    return Settings.from_env().database_url


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # Compare only the tables this project owns, so that other tools sharing the database
    # (e.g. Dagster's storage) do not show up as drift.
    if type_ == "table":
        return name in target_metadata.tables
    return True


def _compare_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    meta_type = metadata_type.impl_instance if isinstance(metadata_type, sa.TypeDecorator) else metadata_type
    # MariaDB implements JSON as LONGTEXT + CHECK (json_valid(..)), and reflects LONGTEXT.
    if isinstance(meta_type, sa.JSON) and isinstance(inspected_type, (mysql.LONGTEXT, sa.JSON)):
        return False
    return None  # Alembic's own comparison (it already equates BOOLEAN with TINYINT(1))


_NOW = {"current_timestamp", "current_timestamp()", "now()", "localtimestamp", "localtimestamp()"}


def _normalize_default(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    while len(text) >= 2 and text[0] == "(" and text[-1] == ")":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    lowered = text.lower()
    if lowered == "null":
        return None
    if re.sub(r"\(\d*\)$", "()", lowered) in _NOW or lowered in _NOW:
        return "current_timestamp"
    if lowered in ("true", "false"):
        return "1" if lowered == "true" else "0"
    try:
        return str(Decimal(text).normalize())
    except InvalidOperation:
        return text


def _compare_server_default(
    ctx: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    # Each backend spells the same default differently ('user' / user, 1 / true,
    # current_timestamp() / CURRENT_TIMESTAMP, 0.50 / '0.50'): compare the meaning.
    return _normalize_default(inspected_default) != _normalize_default(rendered_metadata_default)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # New migrations get plain sa.DateTime(), so they never import the models.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=_compare_type,
        compare_server_default=_compare_server_default,
        include_name=_include_name,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = normalize_url(_database_url())
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: sa.Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = make_engine(_database_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run_with(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
