"""Dagster: the code location loads, and a real asset materializes against both store backends."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from assets.resources import DatabaseResource, ObjectStoreResource
from assets.system import storage_usage
from orchestration.resources import resources_from_settings
from schemas.db import SystemStatusLog
from tests.conftest import REPO_ROOT


def test_workspace_definitions_validate(tmp_path: Path, migrated_database_url: str):
    env = {
        **os.environ,
        "AIDOOR_DATA_DIR": str(tmp_path),
        "AIDOOR_DATABASE_URL": migrated_database_url,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _materialize(resources: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize([storage_usage], resources=resources, instance=dg.DagsterInstance.ephemeral())


def _check_snapshot(result: dg.ExecuteInProcessResult, database_url: str, objects: int, size: int) -> None:
    assert result.success
    [materialization] = result.asset_materializations_for_node("storage_usage")
    metadata = materialization.metadata
    assert metadata["objects"].value == objects
    assert metadata["bytes"].value == size
    assert "`events/`" in metadata["by_prefix"].value
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(SystemStatusLog.component, SystemStatusLog.disk_usage).order_by(SystemStatusLog.id.desc())
        ).first()
    engine.dispose()
    assert row is not None and row.component == "storage"


def test_storage_usage_asset_on_local_store(settings):
    resources = resources_from_settings(settings)
    store = resources["object_store"].store()
    store.ensure_bucket()
    store.put_bytes("events/2026/11/29/1/1.jpg", b"x" * 1000, "image/jpeg")
    store.put_bytes("models/m1/best.pt", b"y" * 500)
    _check_snapshot(_materialize(resources), settings.database_url, objects=2, size=1500)


@pytest.mark.s3
def test_storage_usage_asset_on_s3(s3_server, migrated_database_url):
    resource = ObjectStoreResource(
        bucket=f"usage-{uuid.uuid4().hex[:12]}",
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    store = resource.store()
    store.ensure_bucket()
    store.put_bytes("events/a/1.jpg", b"z" * 2048, "image/jpeg")
    result = _materialize({"database": DatabaseResource(url=migrated_database_url), "object_store": resource})
    _check_snapshot(result, migrated_database_url, objects=1, size=2048)


def test_local_instance_storage_is_created_before_dagster_starts(tmp_path: Path):
    """Webserver, daemon and code servers starting together on a new DAGSTER_HOME raced to create
    the SQLite storages; a doubly stamped alembic_version kept the code location from loading
    (no sensor ever ran). ensure_local_instance creates them once, first."""
    import sqlite3

    from orchestration.instance import ensure_local_instance

    home = tmp_path / "dagster"
    config = ensure_local_instance(home)
    assert config.read_text().startswith("# Written by ai-door-system")
    for db in ("schedules/schedules.db", "history/runs.db"):
        with sqlite3.connect(home / db) as conn:
            assert len(conn.execute("select version_num from alembic_version").fetchall()) == 1, db
    ensure_local_instance(home)  # idempotent


def test_runs_cut_off_by_a_shutdown_are_failed_at_the_next_start(settings):
    """A run worker dies with `aidoor run`; at the next start its run and batch job are failed (so
    a new request or the starter training is not stuck behind a 'running' job forever)."""
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRun

    from detection_service.database import make_engine, make_session_factory
    from detection_service.services.job_queue import JobService, queue_dataset_materialize
    from detection_service.supervisor import _close_interrupted_runs
    from orchestration.instance import ensure_local_instance
    from orchestration.sensors import BATCH_JOB_TAG
    from schemas.db import Dataset, ModelTraining

    session_factory = make_session_factory(make_engine(settings.database_url))
    jobs = JobService(session_factory)
    with session_factory.begin() as session:
        session.add(
            Dataset(
                dataset_id="d", name="d", version="1", storage_path="datasets/d/1/", yaml_path="datasets/d/1/data.yaml"
            )
        )
    job = jobs.get(queue_dataset_materialize(session_factory, "d", "1", train={"profile": "tiny"}))
    ensure_local_instance(settings.dagster_home)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        run = instance.add_run(
            DagsterRun(
                job_name="train_model_job", status=dg.DagsterRunStatus.STARTED, tags={BATCH_JOB_TAG: str(job.id)}
            )
        )
    _close_interrupted_runs(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    closed = jobs.get(job.id)
    assert closed.status == "failed" and "interrupted" in closed.error_message
    assert closed.dagster_run_id == run.run_id
    with session_factory() as session:  # the training it drove, too (it lives under parameters["train"])
        training = session.get(ModelTraining, closed.parameters["train"]["training_id"])
        assert training.status == "failed" and "interrupted" in training.error_message
    _close_interrupted_runs(settings)  # nothing left to do


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_assets_never_import_orchestration():
    """One-way: orchestration/ (definitions, jobs, sensors, schedules) assembles assets/; assets/
    and their resources (assets/resources.py) never import orchestration/."""
    imports = {path.name: _imported_modules(path) for path in sorted((REPO_ROOT / "assets").rglob("*.py"))}
    offenders = {
        name: sorted(m for m in modules if m == "orchestration" or m.startswith("orchestration."))
        for name, modules in imports.items()
    }
    assert not {name: found for name, found in offenders.items() if found}
    assert "assets.resources" in imports["system.py"]  # the walk sees the imports


def test_database_resource_caches_its_session_factory(migrated_database_url: str):
    database = DatabaseResource(url=migrated_database_url)
    factory = database.session_factory()
    assert database.session_factory() is factory and factory.kw["bind"] is database.engine()
    seen: list = []

    @dg.asset
    def probe(database: DatabaseResource) -> None:
        seen.append((database, database.session_factory(), database.session_factory()))
        with database.session() as session:
            session.execute(sa.text("select 1"))

    assert dg.materialize([probe], resources={"database": database}, instance=dg.DagsterInstance.ephemeral()).success
    [(initialized, first, second)] = seen
    assert first is second  # one engine and session factory per run's resource
    assert initialized._engine is None and initialized._session_factory is None  # disposed after the run


def _shown_in_ui(defs: dg.Definitions) -> str:
    """The code location as the Dagster UI gets it (the repository snapshot), serialized."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    return serialize_value(RepositorySnap.from_def(defs.get_repository_def()))


@pytest.mark.parametrize(
    ("environ", "secrets"),
    [
        ({"AIDOOR_URL_SIGNING_KEY": " local-url-signing-secret "}, ["local-url-signing-secret"]),
        (
            {
                "AIDOOR_S3_ENDPOINT": "http://127.0.0.1:9",
                "AIDOOR_S3_ACCESS_KEY": "s3-access-secret",
                "AIDOOR_S3_SECRET_KEY": "s3-secret-secret",
            },
            ["s3-access-secret", "s3-secret-secret"],
        ),
    ],
    ids=["local", "s3"],
)
def test_code_location_secrets_reach_dagster_as_env_vars(
    environ, secrets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The code location (orchestration/definitions.py) gives its resources every secret as a
    dg.EnvVar: the UI shows the AIDOOR_* name, never the value. Explicit values (tests) would show."""
    import importlib.util

    from detection_service.config import Settings

    others = {"AIDOOR_TELEGRAM_KEY": "telegram-secret", "AIDOOR_ROBOFLOW_API_KEY": "roboflow-secret"}
    for name, value in {
        "AIDOOR_DATA_DIR": str(tmp_path),
        "AIDOOR_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        **others,
        **environ,
    }.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("_definitions_probe", REPO_ROOT / "orchestration" / "definitions.py")
    definitions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definitions)

    shown = _shown_in_ui(definitions.defs)
    assert not [s for s in [*secrets, *others.values()] if s in shown]
    assert all(name in shown for name in environ if name != "AIDOOR_S3_ENDPOINT")
    explicit = _shown_in_ui(
        dg.Definitions(assets=[storage_usage], resources=resources_from_settings(Settings.from_env()))
    )
    assert all(s in explicit for s in secrets)  # the check would see them
    store = definitions.defs.resources["object_store"]
    if not store.endpoint:  # used directly, outside a run, the EnvVar is read (and stripped), not taken for the key
        assert store.store()._signing_key == b"local-url-signing-secret"


def test_env_var_secrets_resolve_in_a_run(settings, monkeypatch: pytest.MonkeyPatch):
    import msgspec

    monkeypatch.setenv("AIDOOR_URL_SIGNING_KEY", "run-signing-key")
    keyed = msgspec.structs.replace(settings, url_signing_key="run-signing-key")
    resources = resources_from_settings(keyed, secrets_from_env=True)
    assert isinstance(resources["object_store"].signing_key, dg.EnvVar)
    seen: list = []

    @dg.asset
    def probe(object_store: ObjectStoreResource) -> None:
        seen.append(object_store.store()._signing_key)

    assert dg.materialize([probe], resources=resources, instance=dg.DagsterInstance.ephemeral()).success
    assert seen == [b"run-signing-key"] and keyed.signing_key() == b"run-signing-key"
    # without AIDOOR_URL_SIGNING_KEY the key file is the resource's (a path, not a secret), shared with the service
    plain = resources_from_settings(settings, secrets_from_env=True)["object_store"]
    assert plain.signing_key is None and plain.store()._signing_key == settings.signing_key()
