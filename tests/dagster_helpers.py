"""Driving our Dagster sensors from a test, the way the daemon would: tick, then materialize."""

from __future__ import annotations

import dagster as dg

from assets.partitions import dataset_versions
from assets.resources import DatabaseResource
from orchestration.sensors import batch_job_sensor


def ephemeral_instance():
    """An ephemeral Dagster instance for in-process runs, without compute-log capture. Capture
    mirrors stdout/stderr through a ``tail -F`` child per step and, at the step's end, waits up to
    30 s for it to exit after SIGTERM; in the full suite that child was seen to outlive the
    SIGTERM (a cancelled run's thread stayed alive 30+ s after its step had failed). The run's
    events and logs stay in the instance as usual."""
    return dg.instance_for_test(
        overrides={
            "compute_logs": {
                "module": "dagster._core.storage.noop_compute_log_manager",
                "class": "NoOpComputeLogManager",
            }
        }
    )


def tick(sensor, settings, instance, cursor: str | None = None):
    """One sensor evaluation against the test database: (its result, the cursor it left)."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": DatabaseResource(url=settings.database_url)}
    ) as ctx:
        return sensor(ctx), ctx.cursor


def next_batch_run(settings, instance) -> dg.RunRequest:
    """The one run ``batch_job_sensor`` requests now, its dynamic partitions added as the daemon would."""
    result, _ = tick(batch_job_sensor, settings, instance)
    assert isinstance(result, dg.SensorResult), result
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(dataset_versions.name, list(request.partition_keys))
    [run] = result.run_requests
    return run
