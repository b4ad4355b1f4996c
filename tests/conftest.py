"""Shared fixtures. The database is SQLite by default; set AIDOOR_TEST_DATABASE_URL to run the
whole suite against MySQL/MariaDB (CI runs it both ways)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

pytest_plugins = ["tests.fixtures.seaweedfs"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
PACKAGES = SHARED_DATASETS / "packages-v6"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory):
    url = os.environ.get("AIDOOR_TEST_DATABASE_URL")
    if not url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'aidoor-test.db'}"
        return
    if not url.startswith("mysql"):
        yield url
        return
    # Each test session gets its own database on the server, so two runs (CI and a developer,
    # or parallel sessions) never drop each other's tables. Without CREATE rights: the URL's own.
    server = sa.make_url(url)
    name = f"aidoor_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(server.set(database=server.database or "mysql"))
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    except sa.exc.DBAPIError:
        admin.dispose()
        yield url
        return
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


def drop_everything(url: str) -> None:
    """Drop every table in the test database (it is dedicated to tests), FKs included."""
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            if engine.dialect.name == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
            for table in reversed(meta.sorted_tables):
                table.drop(conn)
            if engine.dialect.name == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
    finally:
        engine.dispose()


@pytest.fixture
def clean_database_url(database_url: str) -> str:
    drop_everything(database_url)
    return database_url


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_aidoor_run(
    data_dir: Path, database_url: str, api_port: int, dagster_port: int, log_path: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    """``aidoor run --no-bootstrap`` (the service, dagster-webserver and -daemon) as a child of the
    test, on the given ports and database, its output in ``log_path``."""
    env = {
        **os.environ,
        "AIDOOR_DATA_DIR": str(data_dir),
        "AIDOOR_DATABASE_URL": database_url,
        "AIDOOR_PORT": str(api_port),
        "AIDOOR_DAGSTER_PORT": str(dagster_port),
        **extra_env,
    }
    env.pop("DAGSTER_HOME", None)  # the run writes its own instance under the data dir
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "aidoor"), "run", "--no-bootstrap"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def migrated_database_url(clean_database_url: str) -> str:
    from detection_service.database import upgrade

    upgrade(clean_database_url)
    return clean_database_url


@pytest.fixture
def settings(tmp_path: Path, migrated_database_url: str):
    """Service settings on a fresh migrated database and a local store in tmp_path. Dagster
    points at a closed port unless a test starts one."""
    from detection_service.config import Settings

    return Settings.from_env(
        environ={},
        data_dir=tmp_path / "data",
        database_url=migrated_database_url,
        dagster_port=free_port(),
    )


def api_token(app, role: str = "admin", name: str = "tests") -> str:
    """A new API token of ``role`` from a started app's AuthService (docs/security.md)."""
    return app.state.auth_service.create_token(role, name).token


def authorize(test_client, role: str = "admin"):
    """Make a started TestClient send an API token of ``role`` on every request; returns it."""
    test_client.headers["Authorization"] = f"Bearer {api_token(test_client.app, role)}"
    return test_client


class AuthedTestClient(TestClient):
    """Litestar's TestClient that, once started, sends an admin API token on every request (tests
    whose subject is not authentication; tests/test_auth.py is about it)."""

    def __enter__(self):
        return authorize(super().__enter__())


@pytest.fixture
def client(settings):
    """The service in-process, authenticated as an admin through an API token."""
    from detection_service.app import create_app

    with AuthedTestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def no_network():
    """For a whole module (opt in with ``pytestmark = pytest.mark.usefixtures("no_network")``),
    resolving a name or opening a non-local-socket connection fails and is recorded: training,
    evaluation, export and inference must not even try. The module fails if anything tried."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> object:
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        attempts.append(f"connect {address}")
        raise OSError("network disabled in tests")

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        attempts.append(f"getaddrinfo {host}")
        raise socket.gaierror("network disabled in tests")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield attempts
    assert attempts == []


@pytest.fixture(scope="session")
def packages_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """packages-v6 (26 real photos) prepared with our class ids, once per session."""
    if not (PACKAGES / "data.yaml").is_file():
        pytest.skip(f"shared dataset {PACKAGES} not available")
    from detection_service.ml.training import prepare_yolo_dataset

    return prepare_yolo_dataset(PACKAGES, tmp_path_factory.mktemp("prepared") / "packages-v6")


@pytest.fixture(scope="session")
def offline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ultralytics configured offline under a tmp dir, once per session (it must precede the first
    ultralytics import: Ultralytics reads its config dir once)."""
    from detection_service.ml.ultralytics_env import configure_offline

    data_dir = tmp_path_factory.mktemp("ml-data")
    config_dir = configure_offline(data_dir)
    assert configure_offline(data_dir) == config_dir  # idempotent
    return data_dir
