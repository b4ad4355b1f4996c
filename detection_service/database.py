"""Engines, sessions and migrations for SQLite (default) and MySQL 8 / MariaDB.

Schema changes go through Alembic only (``schemas/migrations``); nothing here calls
``create_all``.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

import schemas

MIGRATIONS_DIR = Path(schemas.__file__).resolve().parent / "migrations"

_MYSQL_DIALECTS = ("mysql", "mariadb")


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in _MYSQL_DIALECTS


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a file-backed SQLite URL, else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def normalize_url(url: str | URL) -> URL:
    """The URL as the engine will use it: MySQL connections get ``charset=utf8mb4``."""
    parsed = make_url(url)
    if _is_mysql(parsed) and "charset" not in parsed.query:
        # Without it PyMySQL may talk latin1/utf8mb3 and mangle Korean text and emoji.
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine with the per-backend settings this project relies on.

    SQLite: foreign keys enforced, WAL journal (readers do not block the writer), a busy timeout,
    usable from several threads. MySQL/MariaDB: pre-ping and recycle (the server drops idle
    connections), utf8mb4, session time zone UTC (so ``CURRENT_TIMESTAMP`` defaults are UTC like
    everything else), and ONLY_FULL_GROUP_BY as MySQL 8 has it, so MariaDB also rejects loose
    GROUP BY.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        db_file = sqlite_file(parsed)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect(wal=db_file is not None))
        return engine
    if _is_mysql(parsed):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_recycle", 1800)
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _mysql_on_connect)
        sa.event.listen(engine, "handle_error", _mysql_check_violation_is_integrity_error)
        return engine
    return sa.create_engine(parsed, **kwargs)


def _sqlite_on_connect(*, wal: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def _mysql_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(
            "SET SESSION sql_mode = IF(FIND_IN_SET('ONLY_FULL_GROUP_BY', @@SESSION.sql_mode) > 0, "
            "@@SESSION.sql_mode, CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'ONLY_FULL_GROUP_BY'))"
        )
    finally:
        cursor.close()


# ER_CHECK_CONSTRAINT_VIOLATED (MySQL 8) and ER_CONSTRAINT_FAILED (MariaDB): drivers report them
# as OperationalError; callers should see the IntegrityError that SQLite raises.
_CHECK_VIOLATION_ERRNOS = (3819, 4025)


def _mysql_check_violation_is_integrity_error(ctx: sa.engine.ExceptionContext) -> BaseException | None:
    orig = ctx.original_exception
    errno = getattr(orig, "errno", None)
    if errno is None and orig.args and isinstance(orig.args[0], int):
        errno = orig.args[0]
    if errno in _CHECK_VIOLATION_ERRNOS and not isinstance(ctx.sqlalchemy_exception, sa.exc.IntegrityError):
        return sa.exc.IntegrityError(ctx.statement or "", ctx.parameters, orig)  # type: ignore[arg-type]
    return None


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after commit (e.g. when serialising a
    # response after the transaction).
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    sa.event.listen(factory, "before_flush", _fill_audit_columns)
    return factory


# --- audit columns -------------------------------------------------------------------------------

# Who the current API request acts for (set by the route guard, api/auth.py): (users.id or None,
# a name). Unset in the pipeline, the notifier, Dagster and the CLI: their rows keep what the code
# wrote. Each request runs in its own context, so it never leaks into another one.
current_actor: ContextVar[tuple[int | None, str] | None] = ContextVar("current_actor", default=None)
_CREATED = ("created_by", "changed_by")


def _fill_audit_columns(session: Session, flush_context: Any, instances: Any) -> None:
    """Name the request's user in the audit columns (docs/security.md): ``created_by`` /
    ``changed_by`` of new rows and ``updated_by`` of new and changed rows, where the code left
    them unset. INTEGER columns get ``users.id``, VARCHAR ones the account or token name."""
    actor = current_actor.get()
    if actor is None:
        return
    for obj, is_new in [*((o, True) for o in session.new), *((o, False) for o in session.dirty)]:
        table = getattr(type(obj), "__table__", None)
        if table is None or (not is_new and not session.is_modified(obj)):
            continue
        state = sa.inspect(obj)
        for column_name in (*(_CREATED if is_new else ()), "updated_by"):
            column = table.c.get(column_name)
            if column is None or column_name not in state.attrs:
                continue
            if is_new and getattr(obj, column_name) is not None:
                continue
            if not is_new and state.attrs[column_name].history.has_changes():
                continue
            value = actor[0] if isinstance(column.type, sa.Integer) else actor[1][: column.type.length or 100]
            if value is not None:
                setattr(obj, column_name, value)


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer ``SELECT 1``."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1")).scalar_one()


# --- migrations --------------------------------------------------------------------------------


def alembic_config(url: str | URL) -> Config:
    """An Alembic config for ``url``, independent of the working directory.

    Built in code rather than from ``alembic.ini`` so that running migrations from the service
    does not reconfigure the process's logging.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    rendered = normalize_url(url).render_as_string(hide_password=False)
    # ConfigParser interpolates "%": URL-encoded passwords must be escaped.
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def upgrade(url: str | URL, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def check(url: str | URL) -> None:
    """Raise ``alembic.util.exc.AutogenerateDiffsDetected`` if the database differs from
    ``schemas.db`` (or ``CommandError`` if it is not at the head revision)."""
    command.check(alembic_config(url))


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at; None for an unmigrated database."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
