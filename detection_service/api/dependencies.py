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
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from detection_service.config import Settings
from detection_service.orchestrator import DagsterClient
from detection_service.notifications.service import NotificationService
from detection_service.services.data_yaml import DataYamlService
from detection_service.services.events import EventService
from detection_service.services.jobs import JobService
from detection_service.services.models import ModelService
from detection_service.services.pipeline_service import PipelineService
from detection_service.services.retention import RetentionService
from detection_service.services.settings import SettingsService
from detection_service.storage import ObjectStore


def provide_settings(state: State) -> Settings:
    return state.settings


def provide_engine(state: State) -> Engine:
    return state.engine


def provide_session_factory(state: State) -> sessionmaker[Session]:
    return state.session_factory


def provide_object_store(state: State) -> ObjectStore | None:
    return getattr(state, "object_store", None)  # None only in an app that serves objects alone


def provide_dagster(state: State) -> DagsterClient:
    return state.dagster


def provide_settings_service(state: State) -> SettingsService:
    return state.settings_service


def provide_jobs(state: State) -> JobService:
    return state.jobs


def provide_event_service(state: State) -> EventService:
    return state.event_service


def provide_retention(state: State) -> RetentionService:
    return state.retention


def provide_model_service(state: State) -> ModelService:
    return state.model_service


def provide_data_yaml_service(state: State) -> DataYamlService:
    return state.data_yaml_service


def provide_pipeline_service(state: State) -> PipelineService:
    return state.pipeline_service


def provide_notification_service(state: State) -> NotificationService:
    return state.notification_service


def provide_notifier(state: State) -> Any:
    """The Telegram notifier (``notifications.worker``), or None before start-up finished."""
    return getattr(state, "notifier", None)


def provide_started_at(state: State) -> float:
    return state.started_at


def _standalone_object_store(state: State) -> ObjectStore | None:
    return provide_object_store(state)


# For ObjectController's own layer: it is also served on its own (tests/test_storage.py mounts it
# alone). A distinct provider: Litestar refuses one provider object on two layers.
STANDALONE_OBJECT_STORE = Provide(_standalone_object_store, sync_to_thread=False)


def _provide(fn: Any) -> Provide:
    return Provide(fn, sync_to_thread=False)  # attribute reads: no thread needed


DEPENDENCIES: dict[str, Provide] = {
    "settings": _provide(provide_settings),
    "engine": _provide(provide_engine),
    "session_factory": _provide(provide_session_factory),
    "object_store": _provide(provide_object_store),
    "dagster": _provide(provide_dagster),
    "settings_service": _provide(provide_settings_service),
    "jobs": _provide(provide_jobs),
    "event_service": _provide(provide_event_service),
    "retention": _provide(provide_retention),
    "model_service": _provide(provide_model_service),
    "data_yaml_service": _provide(provide_data_yaml_service),
    "pipeline_service": _provide(provide_pipeline_service),
    "notification_service": _provide(provide_notification_service),
    "notifier": _provide(provide_notifier),
    "started_at": _provide(provide_started_at),
}
