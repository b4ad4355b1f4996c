"""A run launcher that sends GPU runs to a GPU worker and keeps every other run on the box.

A Dagster instance has exactly one run launcher (dagster-io/dagster#11709 asks for more), and
DockerRunLauncher / K8sRunLauncher put *every* run in a container or pod. The training jobs are the
only ones that gain from a GPU; sensors, reports, clean-ups and dataset imports are small and belong
next to the database. So this launcher holds two launchers, each configured exactly as Dagster's
own ``run_launcher`` block (module / class / config, rehydrated and validated by Dagster), and picks
one per run by a run tag:

    run_launcher:
      module: orchestration.launchers
      class: TagRoutingRunLauncher
      config:
        tag: aidoor/gpu                  # runs tagged aidoor/gpu=true ...
        routed:                          # ... go here (e.g. dagster_docker.DockerRunLauncher)
          {module: ..., class: ..., config: {...}}
        default:                         # every other run (omitted: DefaultRunLauncher)
          {module: ..., class: ..., config: {...}}

infra/dagster-gpu.yaml is the configuration we ship; docs/training.md "Training on a GPU worker".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import yaml
from dagster._core.instance.config import configurable_class_schema
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, ResumeRunContext, RunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClass, ConfigurableClassData

DEFAULT_LAUNCHER = {"module": "dagster", "class": "DefaultRunLauncher", "config": {}}


def _rehydrate(spec: Mapping[str, Any]) -> RunLauncher:
    """A launcher from a ``{module, class, config}`` block, as the instance builds its own."""
    data = ConfigurableClassData(spec["module"], spec["class"], yaml.dump(dict(spec.get("config") or {})))
    return data.rehydrate(as_type=RunLauncher)


class TagRoutingRunLauncher(RunLauncher, ConfigurableClass):
    """Launches a run with ``tag`` = ``value`` on the ``routed`` launcher, any other on ``default``."""

    def __init__(
        self,
        routed: Mapping[str, Any],
        default: Mapping[str, Any] | None = None,
        tag: str = "aidoor/gpu",
        value: str = "true",
        inst_data: ConfigurableClassData | None = None,
    ):
        self._inst_data = inst_data
        self.tag, self.value = tag, value
        self.routed = _rehydrate(routed)
        self.default = _rehydrate(default or DEFAULT_LAUNCHER)
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {
            "routed": dg.Field(configurable_class_schema(), description="Launcher of the runs that carry the tag"),
            "default": dg.Field(configurable_class_schema(), is_required=False, description="Every other run"),
            "tag": dg.Field(str, default_value="aidoor/gpu", is_required=False),
            "value": dg.Field(str, default_value="true", is_required=False),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        self.routed.register_instance(instance)
        self.default.register_instance(instance)

    def launcher_for(self, run: dg.DagsterRun) -> RunLauncher:
        """The launcher that launches (and so terminates, checks, resumes) ``run``."""
        return self.routed if run.tags.get(self.tag) == self.value else self.default

    def launch_run(self, context: LaunchRunContext) -> None:
        launcher = self.launcher_for(context.dagster_run)
        if launcher is self.routed:
            self._instance.report_engine_event(
                f"{self.tag}={self.value}: launching with {type(launcher).__name__}",
                context.dagster_run,
                cls=self.__class__,
            )
        launcher.launch_run(context)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            return False
        return self.launcher_for(run).terminate(run_id)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return self.routed.supports_check_run_worker_health or self.default.supports_check_run_worker_health

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        launcher = self.launcher_for(run)
        if launcher.supports_check_run_worker_health:
            return launcher.check_run_worker_health(run)
        # A launcher without health checks (DefaultRunLauncher): run monitoring then does what it
        # does when the instance's launcher has none, i.e. only the start/cancel timeouts.
        return CheckRunHealthResult(WorkerStatus.RUNNING, msg=f"{type(launcher).__name__} has no health check")

    def get_run_worker_debug_info(self, run: dg.DagsterRun, include_container_logs: bool | None = True) -> str | None:
        return self.launcher_for(run).get_run_worker_debug_info(run, include_container_logs)

    @property
    def supports_resume_run(self) -> bool:
        return self.routed.supports_resume_run or self.default.supports_resume_run

    def resume_run(self, context: ResumeRunContext) -> None:
        self.launcher_for(context.dagster_run).resume_run(context)

    def join(self, timeout: int = 30) -> None:
        self.default.join(timeout)
        self.routed.join(timeout)

    def dispose(self) -> None:
        self.default.dispose()
        self.routed.dispose()
