"""The API's providers: every service a handler may ask for, by parameter name.

The app's lifespan (``detection_service/app.py``) builds the long-lived objects and keeps them on
``app.state``; this module is the one place that reads them from there. A handler declares what it
needs as a typed parameter (``def get_all(self, settings_service: SettingsService)``) and Litestar
injects it. Registered on the app in ``create_app(dependencies=DEPENDENCIES)``.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

# Parameter name = the ``app.state`` attribute the lifespan stores it under. Types, as handlers
# declare them: Settings, Engine, sessionmaker, DagsterClient, SettingsService, JobService,
# EventService, RetentionService, ModelService, DataYamlService, PipelineService, ManualDetector,
# NotificationService, SystemLogService, StorageReportService, float (started_at), EventBus (bus),
# SystemRestart (system_restart), ComponentStatusRegistry (component_status), PerformanceService
# (performance), prometheus_client CollectorRegistry (metrics_registry), AuthService (auth_service).
_ALWAYS_THERE = (
    "settings",
    "engine",
    "session_factory",
    "dagster",
    "settings_service",
    "jobs",
    "event_service",
    "retention",
    "model_service",
    "data_yaml_service",
    "pipeline_service",
    "manual_detection",
    "notification_service",
    "system_logs",
    "storage_report",
    "started_at",
    "bus",
    "system_restart",
    "component_status",
    "performance",
    "metrics_registry",
    "auth_service",
)
# None until start-up made them: the store in an app that serves objects alone, the Telegram
# notifier (``notifications.worker``) before start-up finished.
_MAYBE_THERE = ("object_store", "notifier")


def _from_state(name: str, optional: bool = False) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state, name, None) if optional else getattr(state, name)

    return Provide(provide, sync_to_thread=False)  # an attribute read: no thread needed


def _batch_service(jobs: Any, dagster: Any, model_service: Any, session_factory: Any, settings: Any) -> Any:
    from detection_service.services.batch import BatchService

    # Built per request from the providers above (cheap: it only holds them).
    return BatchService(jobs, dagster, model_service, session_factory, settings)


def _camera_service(pipeline_service: Any, session_factory: Any) -> Any:
    from detection_service.services.cameras import CameraService

    # The pipeline service's own, so a change reaches the running pipelines (docs/cameras.md);
    # a fresh one where the pipelines run in another process.
    return getattr(pipeline_service, "camera_service", None) or CameraService(session_factory)


DEPENDENCIES: dict[str, Provide] = {
    **{name: _from_state(name) for name in _ALWAYS_THERE},
    **{name: _from_state(name, optional=True) for name in _MAYBE_THERE},
    "batch": Provide(_batch_service, sync_to_thread=False),  # BatchService (api/batch.py)
    "camera_service": Provide(_camera_service, sync_to_thread=False),  # CameraService (api/cameras.py)
}

# For ObjectController's own layer: it is also served on its own (tests/test_storage.py mounts it
# alone). A distinct provider: Litestar refuses one provider object on two layers.
STANDALONE_OBJECT_STORE = _from_state("object_store", optional=True)
