"""User-tunable product settings: the single source of their defaults and valid ranges.

Each category is one msgspec struct. The ``system_settings`` table keeps one row per field
(``category``, ``setting_key`` = field name, ``setting_value`` as text, ``data_type``); the rows the
initial data migration inserts are derived from these defaults (see ``schemas.seed_data``) and a test
keeps the two in step.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

import msgspec

from schemas.detection import PipelineSettings
from schemas.enums import SettingDataType
from schemas.models import DEVICE_PATTERN

Resolution = Literal["1920x1080", "1280x720", "640x480"]
SensitivityLevel = Literal["low", "medium", "high"]
ObjectTypeCodeLiteral = Literal["person", "package", "delivery_food", "mail", "unclassified"]

ALL_OBJECT_TYPE_CODES: Final[tuple[ObjectTypeCodeLiteral, ...]] = (
    "person",
    "package",
    "delivery_food",
    "mail",
    "unclassified",
)


class CameraSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    resolution: Annotated[Resolution, msgspec.Meta(description="Capture resolution (WIDTHxHEIGHT)")] = "1280x720"
    fps: Annotated[int, msgspec.Meta(ge=10, le=60, description="Capture frames per second")] = 15
    brightness: Annotated[int, msgspec.Meta(ge=-100, le=100, description="Brightness adjustment")] = 0
    contrast: Annotated[int, msgspec.Meta(ge=-100, le=100, description="Contrast adjustment")] = 0
    source: Annotated[
        str, msgspec.Meta(description="Camera source: RTSP/HTTP URL, file path or device index; empty = none")
    ] = ""


class StorageSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_days: Annotated[int, msgspec.Meta(ge=0, le=3650, description="Retention of event images in days")] = 30
    auto_cleanup: Annotated[bool, msgspec.Meta(description="Delete expired events and images automatically")] = True
    max_size_gb: Annotated[
        float, msgspec.Meta(gt=0, le=10000, description="Largest total size of stored images in GB")
    ] = 50.0


class DetectionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    confidence_threshold: Annotated[
        float, msgspec.Meta(ge=0.1, le=1.0, description="Lowest detector confidence that counts as a detection")
    ] = 0.5
    capture_interval: Annotated[
        float, msgspec.Meta(ge=0.1, le=60, description="Seconds between the captures of one event")
    ] = 2.0
    capture_count: Annotated[int, msgspec.Meta(ge=1, le=20, description="Images captured per event")] = 5
    jpeg_quality: Annotated[int, msgspec.Meta(ge=1, le=100, description="JPEG quality of stored captures")] = 85


class NotificationSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: Annotated[bool, msgspec.Meta(description="Send Telegram alerts")] = True
    sensitivity: Annotated[SensitivityLevel, msgspec.Meta(description="Alert sensitivity")] = "medium"
    types: Annotated[list[ObjectTypeCodeLiteral], msgspec.Meta(description="Object types that trigger an alert")] = (
        msgspec.field(default_factory=lambda: list(ALL_OBJECT_TYPE_CODES))
    )


class TrainingSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    auto_retrain: Annotated[
        bool, msgspec.Meta(description="Retrain automatically when enough new verified labels arrived")
    ] = True
    retrain_min_new_labels: Annotated[
        int, msgspec.Meta(ge=1, le=100000, description="Verified labels since the last training that trigger a retrain")
    ] = 50
    auto_collect_dataset_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=50,
            pattern=r"^[a-z0-9][a-z0-9_.-]*$",
            description="Dataset that receives auto-collected (relabelled) event images",
        ),
    ] = "auto-collected"
    profile: Annotated[
        Literal["default", "tiny"], msgspec.Meta(description="Training profile of automatic retraining")
    ] = "default"
    # A GPU device only helps with a Dagster instance that routes GPU runs to a GPU worker
    # (infra/dagster-gpu.yaml, docs/training.md "Training on a GPU worker") or on a box with a GPU.
    device: Annotated[
        str,
        msgspec.Meta(
            pattern=DEVICE_PATTERN,
            max_length=32,
            description="Device of trainings that do not name one (cpu, cuda, cuda:N, mps): not cpu = GPU worker",
        ),
    ] = "cpu"


LogLevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class GeneralSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    log_level: Annotated[
        LogLevelName, msgspec.Meta(description="Lowest level of the service's own log records kept in system_logs")
    ] = "WARNING"
    performance_sample_s: Annotated[
        int,
        msgspec.Meta(ge=1, le=3600, description="Seconds between the performance sampler's system_status_logs rows"),
    ] = 10


SettingsStruct = (
    CameraSettings | StorageSettings | DetectionSettings | NotificationSettings | TrainingSettings | GeneralSettings
)

SETTINGS_CATEGORIES: Final[dict[str, type[Any]]] = {
    "camera": CameraSettings,
    "storage": StorageSettings,
    "detection": DetectionSettings,
    "notification": NotificationSettings,
    "training": TrainingSettings,
    # Tuning settings of the realtime pipeline (also changed by PUT /api/detection/config).
    "pipeline": PipelineSettings,
    # The seed's `general` category: the service as a whole (GET /api/system/logs keeps its records).
    "general": GeneralSettings,
}


def field_description(struct_type: type[msgspec.Struct], name: str) -> str | None:
    """The ``Meta(description=...)`` of one field, or None."""
    info = msgspec.inspect.type_info(struct_type)
    for field in info.fields:  # type: ignore[attr-defined]
        if field.name == name:
            field_type = field.type
            if isinstance(field_type, msgspec.inspect.Metadata):
                return (field_type.extra_json_schema or {}).get("description")
            return None
    raise KeyError(name)


def encode_setting_value(value: Any) -> tuple[str, SettingDataType]:
    """A setting's value as the text stored in ``system_settings.setting_value``, and its type."""
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return ("true" if value else "false"), SettingDataType.BOOLEAN
    if isinstance(value, int):
        return str(value), SettingDataType.INTEGER
    if isinstance(value, float):
        return json.dumps(value), SettingDataType.FLOAT
    if isinstance(value, str):
        return value, SettingDataType.STRING
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")), SettingDataType.JSON


def decode_setting_value(text: str, data_type: str) -> Any:
    """Inverse of :func:`encode_setting_value`."""
    kind = SettingDataType(data_type)
    if kind is SettingDataType.BOOLEAN:
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ValueError(f"not a boolean setting value: {text!r}")
    if kind is SettingDataType.INTEGER:
        return int(text)
    if kind is SettingDataType.FLOAT:
        return float(text)
    if kind is SettingDataType.JSON:
        return json.loads(text)
    return text
