"""Dagster resources: the same database and object store the detection service uses.

Both are thin wrappers over ``detection_service.database`` and ``detection_service.storage`` so
Dagster assets and the service share one implementation (and one S3 client, tested against a
real S3 server) instead of two.
"""


from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.orm import Session

from detection_service.config import Settings
from detection_service.database import make_engine, make_session_factory
from detection_service.storage import ObjectStore
from detection_service.storage.local import LocalObjectStore
from detection_service.storage.s3 import S3ObjectStore


class DatabaseResource(dg.ConfigurableResource):
    """SQLAlchemy access to the system database (SQLite file or MySQL)."""

    url: str
    _engine: sa.Engine | None = PrivateAttr(default=None)

    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with make_session_factory(self.engine()).begin() as session:
            yield session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()


class ObjectStoreResource(dg.ConfigurableResource):
    """The object store: S3-compatible (MinIO, SeaweedFS, AWS) when ``endpoint`` is set, else
    a local directory."""

    bucket: str = "ai-door-system"
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str | None = None
    secure: bool = False
    local_dir: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    signing_key: str | None = None

    def store(self) -> ObjectStore:
        if self.endpoint:
            return S3ObjectStore(
                endpoint=self.endpoint,
                access_key=self.access_key or "",
                secret_key=self.secret_key or "",
                bucket=self.bucket,
                region=self.region,
                secure=self.secure,
            )
        if not self.local_dir:
            raise dg.DagsterInvariantViolationError("ObjectStoreResource needs endpoint or local_dir")
        return LocalObjectStore(
            root_dir=self.local_dir,
            bucket=self.bucket,
            public_url=self.public_url,
            signing_key=(self.signing_key or "").encode(),
        )


class LocalPathsResource(dg.ConfigurableResource):
    """Local working folders: the dataset/model cache and scratch space for training runs."""

    data_dir: str

    def cache_dir(self) -> Path:
        path = Path(self.data_dir) / "cache"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def work_dir(self, name: str) -> Path:
        path = Path(self.data_dir) / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def resources_from_settings(settings: Settings) -> dict[str, Any]:
    """Resources configured from the same ``AIDOOR_*`` variables the service reads. Secrets stay
    ``EnvVar`` references so the Dagster UI never shows them. ``settings`` is the ``Settings``
    itself (a plain resource, no config in the UI) for the assets that need other deployment facts
    (the teacher model, Roboflow credentials): ``settings: dg.ResourceParam[Settings]``."""
    if settings.s3_endpoint:
        store = ObjectStoreResource(
            bucket=settings.s3_bucket,
            endpoint=settings.s3_endpoint,
            access_key=dg.EnvVar("AIDOOR_S3_ACCESS_KEY"),
            secret_key=dg.EnvVar("AIDOOR_S3_SECRET_KEY"),
            region=settings.s3_region,
            secure=settings.s3_secure,
            public_url=settings.public_url,
        )
    else:
        store = ObjectStoreResource(
            bucket=settings.s3_bucket,
            local_dir=str(settings.local_store_dir),
            public_url=settings.public_url,
            signing_key=settings.signing_key().decode(),
        )
    return {
        "database": DatabaseResource(url=settings.database_url),
        "object_store": store,
        "paths": LocalPathsResource(data_dir=str(settings.data_dir)),
        "settings": settings,
    }
