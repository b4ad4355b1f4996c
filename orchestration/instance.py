"""The local Dagster instance (DAGSTER_HOME) that `aidoor run` uses. Production uses
infra/dagster.yaml (run/event/schedule storage in MySQL via dagster-mysql)."""

from __future__ import annotations

from pathlib import Path

LOCAL_INSTANCE_YAML = """\
# Written by ai-door-system (orchestration/instance.py) for the local `make run` instance.
# Storage is SQLite under this folder; for production see infra/dagster.yaml (MySQL).
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    # Training and evaluation take both CPU cores: one at a time, others queue behind.
    tag_concurrency_limits:
      - key: aidoor/heavy
        value: "true"
        limit: 1
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
"""


def ensure_local_instance(dagster_home: Path) -> Path:
    """Create DAGSTER_HOME with our dagster.yaml (rewritten only if we wrote it before), and its
    storage, once, before any Dagster process starts.

    The webserver, the daemon and their code servers all open the instance at start-up. On a new
    DAGSTER_HOME they would each create the SQLite storages at the same moment, and that race can
    stamp the schedule storage's ``alembic_version`` twice ("more than one head present"): the
    code location then never loads and no sensor ever runs. Opening the instance here first makes
    the creation serial."""
    import dagster as dg

    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    ours = not config.exists() or config.read_text().startswith("# Written by ai-door-system")
    if ours and (not config.exists() or config.read_text() != LOCAL_INSTANCE_YAML):
        config.write_text(LOCAL_INSTANCE_YAML)
    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass
    return config


def fail_interrupted_runs(dagster_home: Path) -> list[tuple[str, dict[str, str]]]:
    """Mark runs that the local instance still shows as starting or started as failed, and
    return them as (run_id, tags). Called by `aidoor run` before it starts Dagster: their run
    workers were children of the previous supervisor and died with it, and nothing else would
    ever end them. Only for the instance we wrote (a shared instance may have live runs)."""
    import dagster as dg

    config = dagster_home / "dagster.yaml"
    if not config.exists() or not config.read_text().startswith("# Written by ai-door-system"):
        return []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
        )
        for run in runs:
            instance.report_run_failed(run, message="interrupted: `aidoor run` stopped while this run was in progress")
        return [(run.run_id, dict(run.tags)) for run in runs]
