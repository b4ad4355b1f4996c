"""String enums for the coded columns of the database and the API.

Values are the exact strings stored in the VARCHAR columns (the seed's comments list them); the
columns stay plain VARCHAR rather than native ENUMs so that adding a value never needs a migration
on MySQL.
"""

from __future__ import annotations

from enum import StrEnum


class ObjectTypeCode(StrEnum):
    """``object_types.code``: what the detector recognises at the door."""

    PERSON = "person"
    PACKAGE = "package"
    DELIVERY_FOOD = "delivery_food"
    MAIL = "mail"
    UNCLASSIFIED = "unclassified"


class EventStatus(StrEnum):
    """``detection_events.status``."""

    ACTIVE = "active"
    ARCHIVED = "archived"


class ModelStatus(StrEnum):
    """``models.status``."""

    TRAINING = "training"
    READY = "ready"
    DEPLOYED = "deployed"
    DEPRECATED = "deprecated"


class JobStatus(StrEnum):
    """``model_training.status`` and ``batch_jobs.status``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class TrainingJobType(StrEnum):
    """``model_training.job_type``."""

    TRAIN = "train"
    RETRAIN = "retrain"
    UPDATE = "update"


class BatchJobType(StrEnum):
    """``batch_jobs.job_type``: the seed's values, plus the follow-up jobs Dagster runs."""

    DATASET_UPDATE = "dataset_update"
    MODEL_RETRAIN = "model_retrain"
    DATASET_MATERIALIZE = "dataset_materialize"  # a stored dataset version's assets (+ optional training)
    MODEL_EVALUATION = "model_evaluation"  # a registered model on the fixed evaluation set + gate
    STORAGE_CLEANUP = "storage_cleanup"
    LOG_ARCHIVE = "log_archive"
    REPORT_GENERATE = "report_generate"  # an analytics report partition (assets/reports.py)


class SendStatus(StrEnum):
    """``notification_history.send_status``."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Sensitivity(StrEnum):
    """Notification / training sensitivity (``model_training.sensitivity``, settings)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class SettingDataType(StrEnum):
    """``system_settings.data_type``: how ``setting_value`` (always text) is decoded."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    JSON = "json"


class YamlChangeType(StrEnum):
    """``data_yaml_history.change_type``."""

    CREATED = "created"
    UPDATED = "updated"
    ACTIVATED = "activated"
    DEACTIVATED = "deactivated"


class LogLevel(StrEnum):
    """``system_logs.level``."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"
