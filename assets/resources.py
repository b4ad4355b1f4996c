"""Dagster resources the assets use: the same database and object store the detection service uses.

Thin wrappers over ``detection_service.database`` and ``detection_service.storage`` so Dagster
assets and the service share one implementation (and one S3 client, tested against a real S3
server) instead of two. How the code location configures them from ``Settings`` (secrets as
``dg.EnvVar``) is orchestration/resources.py: assets/ never imports orchestration/.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.orm import Session, sessionmaker

from detection_service.config import load_signing_key
from detection_service.database import make_engine, make_session_factory
from detection_service.storage import ObjectStore
from detection_service.storage.local import LocalObjectStore
from detection_service.storage.s3 import S3ObjectStore


class DatabaseResource(dg.ConfigurableResource):
    """SQLAlchemy access to the system database (SQLite file or MySQL). One engine and one
    session factory per initialized resource (Dagster builds one per run or sensor tick),
    disposed after execution."""

    url: str
    _engine: sa.Engine | None = PrivateAttr(default=None)
    _session_factory: sessionmaker[Session] | None = PrivateAttr(default=None)

    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def session_factory(self) -> sessionmaker[Session]:
        """The session factory the services take (``EventService(database.session_factory())``)."""
        if self._session_factory is None:
            self._session_factory = make_session_factory(self.engine())
        return self._session_factory

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.session_factory().begin() as session:
            yield session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = self._session_factory = None


class ObjectStoreResource(dg.ConfigurableResource):
    """The object store: S3-compatible (MinIO, SeaweedFS, AWS) when ``endpoint`` is set, else
    a local directory. The local store's URL-signing key is ``signing_key`` (a ``dg.EnvVar`` in
    the code location) or else the key file ``signing_key_file`` (created when missing), so the
    key itself never is a config value the Dagster UI shows."""

    bucket: str = "ai-door-system"
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str | None = None
    secure: bool = False
    local_dir: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    signing_key: str | None = None
    signing_key_file: str | None = None

    def store(self) -> ObjectStore:
        if self.endpoint:
            return S3ObjectStore(
                endpoint=self.endpoint,
                access_key=_plain(self.access_key),
                secret_key=_plain(self.secret_key),
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
            signing_key=self._signing_key(),
        )

    def _signing_key(self) -> bytes:
        if key := _plain(self.signing_key):
            return key.encode()
        if self.signing_key_file:
            return load_signing_key(Path(self.signing_key_file))
        return b""  # LocalObjectStore refuses an empty key


def _plain(value: str | None) -> str:
    """A secret config value, stripped as Settings strips AIDOOR_* values; a ``dg.EnvVar`` still
    unresolved (the resource used directly, outside a run) is read now, not taken for the key."""
    if isinstance(value, dg.EnvVar):
        value = value.get_value()
    return (value or "").strip()


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
