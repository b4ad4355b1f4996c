"""API structs of the data.yaml endpoints (``/api/datasets/{dataset_ref}/yaml``).

See ``docs/data_yaml.md`` for the endpoints, the validation rules and the ``changes_summary`` diff
format.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class YamlProblem(msgspec.Struct, frozen=True, kw_only=True):
    """One reason a data.yaml is not acceptable. ``field`` is the yaml key (``nc``, ``names[2]``,
    ``train``, ``path``, ...), ``yaml_content`` for the file as a whole, or ``version``."""

    field: str
    message: str


class ParsedDataYaml(msgspec.Struct, kw_only=True):
    """What a valid data.yaml says. Split paths are object-store prefixes, resolved against the
    dataset version the file refers to (``datasets/<dataset_id>/<version>/...``)."""

    dataset_version: str
    train_path: str
    val_path: str
    test_path: str | None
    nc: int
    names: list[str]
    # dataset class name -> model class (schemas: detection_service.ml.classes.MODEL_CLASSES)
    class_mapping: dict[str, str]
    download_url: str | None


class ValidationResult(msgspec.Struct, kw_only=True):
    valid: bool
    problems: list[YamlProblem]
    parsed: ParsedDataYaml | None = None  # only when valid


class DataYamlCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    yaml_content: str
    # yaml_version label; default: the next number ("1", "2", ...) for this dataset.
    version: str | None = None
    # Extension to the seed: make it the active yaml now (the first one always is).
    activate: bool = False


class DataYamlUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    yaml_content: str


class DataYamlValidate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    yaml_content: str


class DataYamlSummary(msgspec.Struct, kw_only=True):
    """A data.yaml row without its content (version lists)."""

    id: int
    dataset_id: int
    yaml_version: str | None
    train_path: str | None
    val_path: str | None
    test_path: str | None
    nc: int
    names: list[str]
    download_url: str | None
    file_hash: str | None
    is_active: bool
    created_by: int | None
    created_at: datetime
    updated_at: datetime


class DataYamlInfo(DataYamlSummary, kw_only=True):
    """A data.yaml row with its content and the dataset-name -> model-class mapping."""

    yaml_content: str
    class_mapping: dict[str, str]


class DataYamlChange(msgspec.Struct, kw_only=True):
    """A ``data_yaml_history`` row; ``changes_summary`` has the field-level diff."""

    id: int
    yaml_config_id: int
    change_type: str  # schemas.enums.YamlChangeType
    old_content: str | None
    new_content: str | None
    changes_summary: Any
    changed_by: int | None
    changed_at: datetime
