"""GET /api/system/storage: where the disk went.

Listing the object store is the expensive part (every object of every prefix), so the API serves
the latest snapshot of it: the ``storage_usage`` Dagster asset (``assets/system.py``, hourly
schedule) lists the store and writes a ``system_status_logs`` row (component ``storage``,
``metadata.by_prefix``). The database size (the SQLite file, or MySQL's information_schema) and
the free space of the data dir's disk are cheap and measured on each request.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import SystemStatusLog, utcnow
from schemas.system import DatabaseUsage, DiskUsage, ObjectStoreSnapshot, PrefixUsage, StorageReport

log = logging.getLogger(__name__)

SNAPSHOT_COMPONENT = "storage"
# The prefixes the report always names (the seed's layout of the bucket).
PREFIXES = ("events", "datasets", "models", "reports")
# A snapshot row is a `storage` row whose metadata has `by_prefix`; other writers add storage rows
# without one (the status registry's transitions, the performance sampler every few seconds), so
# the database filters on that marker instead of the service scanning the newest rows.
SNAPSHOT_SEARCH = 5


class StorageReportService:
    def __init__(self, session_factory: sessionmaker[Session], engine: sa.Engine, data_dir: Path) -> None:
        self.session_factory = session_factory
        self.engine = engine
        self.data_dir = Path(data_dir)

    def report(self) -> StorageReport:
        snapshot = self.latest_snapshot()
        if snapshot is None:
            message = (
                "no object store snapshot yet: the storage_usage asset (hourly schedule) has not run; "
                "materialize it in Dagster to get one"
            )
        else:
            message = f"object store as of {snapshot.taken_at.isoformat()}Z ({snapshot.age_s:.0f} s ago)"
        return StorageReport(
            object_store=snapshot, database=self.database_usage(), disk=self.disk_usage(), message=message
        )

    def latest_snapshot(self) -> ObjectStoreSnapshot | None:
        with self.session_factory() as session:
            rows = session.execute(
                sa.select(SystemStatusLog.logged_at, SystemStatusLog.metadata_)
                .where(
                    SystemStatusLog.component == SNAPSHOT_COMPONENT,
                    # JSON_EXTRACT is NULL where the path is missing: SQLite, MariaDB and MySQL alike.
                    sa.func.json_extract(SystemStatusLog.metadata_, "$.by_prefix").is_not(None),
                )
                .order_by(SystemStatusLog.logged_at.desc(), SystemStatusLog.id.desc())
                .limit(SNAPSHOT_SEARCH)
            ).all()
        for logged_at, metadata in rows:
            if isinstance(metadata, dict) and isinstance(metadata.get("by_prefix"), dict):
                return _snapshot(logged_at, metadata)
        return None

    def database_usage(self) -> DatabaseUsage:
        dialect = self.engine.dialect.name
        try:
            if dialect == "sqlite":
                database = self.engine.url.database
                if not database or database == ":memory:":
                    return DatabaseUsage(dialect=dialect, detail="in memory")
                path = Path(database)
                size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
                return DatabaseUsage(dialect=dialect, bytes=size, detail=str(path))
            if dialect in ("mysql", "mariadb"):
                with self.engine.connect() as conn:
                    size = conn.execute(
                        sa.text(
                            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                            "WHERE table_schema = DATABASE()"
                        )
                    ).scalar()
                return DatabaseUsage(dialect=dialect, bytes=int(size or 0), detail=self.engine.url.database)
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            log.warning("database size unknown: %s", exc)
            return DatabaseUsage(dialect=dialect, detail=f"unknown: {type(exc).__name__}")
        return DatabaseUsage(dialect=dialect, detail="size not known for this database")

    def disk_usage(self) -> DiskUsage | None:
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError as exc:
            log.warning("free space of %s unknown: %s", self.data_dir, exc)
            return None
        return DiskUsage(path=str(self.data_dir), total_bytes=usage.total, used_bytes=usage.used, free_bytes=usage.free)


def _snapshot(logged_at: Any, metadata: dict[str, Any]) -> ObjectStoreSnapshot:
    by_prefix = {name: PrefixUsage(objects=0, bytes=0) for name in PREFIXES}
    for prefix, value in metadata["by_prefix"].items():
        count, size = (value.get("objects", 0), value.get("bytes", 0)) if isinstance(value, dict) else value
        name = prefix.rstrip("/")
        by_prefix[name] = PrefixUsage(objects=int(count), bytes=int(size))
    objects = int(metadata.get("objects", sum(p.objects for p in by_prefix.values())))
    size = int(metadata.get("bytes", sum(p.bytes for p in by_prefix.values())))
    age = max((utcnow() - logged_at).total_seconds(), 0.0)
    return ObjectStoreSnapshot(taken_at=logged_at, age_s=age, objects=objects, bytes=size, by_prefix=by_prefix)
