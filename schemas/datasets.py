"""API structs of the Dataset group (``/api/datasets``) and the results of dataset imports.

A dataset version is a YOLO dataset in the object store whose labels use the fixed model class ids
(``detection_service.ml.classes.MODEL_CLASSES``); see docs/datasets.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Severity = Literal["error", "warning"]


class FileProblem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One finding about one file of an export. ``error``: the file (and its image) was not
    imported; ``warning``: imported, but something was fixed or is worth knowing."""

    file: str  # path relative to the export root ("train/labels/x.txt"), or "event 12" for auto-collect
    problem: str
    severity: Severity = "error"
    line: int | None = None


class ClassCount(msgspec.Struct, kw_only=True):
    images: int = 0  # images holding at least one box of the class
    instances: int = 0  # boxes of the class


class ClassDistribution(msgspec.Struct, kw_only=True):
    images: int = 0
    instances: int = 0
    by_split: dict[str, ClassCount] = msgspec.field(default_factory=dict)


class SplitCount(msgspec.Struct, kw_only=True):
    images: int = 0
    labels: int = 0  # boxes
    backgrounds: int = 0  # images without any box (empty label file)


class ImportResult(msgspec.Struct, kw_only=True):
    """What an import / Roboflow sync / auto-collect produced: one new dataset version."""

    dataset_id: str
    version: str
    storage_path: str  # "datasets/<dataset_id>/<version>/"
    yaml_path: str  # object key of the version's data.yaml
    total_images: int  # images in train/valid/test
    total_labels: int  # boxes
    background_images: int
    class_distribution: dict[str, ClassDistribution]  # every model class, zeros included
    splits: dict[str, SplitCount]
    rejected: int  # image files of the source that were not imported (see problems)
    problems: list[FileProblem]
    source: str  # "upload", "path", "roboflow", "auto_collect"
    class_mapping: dict[str, str] = msgspec.field(default_factory=dict)  # source class name -> model class
    base_version: str | None = None  # version whose files were carried over (merge, auto-collect)
    unlabeled_images: int = 0  # auto-collect with auto_label=False: images under unlabeled/
    auto_labeled_images: int = 0  # auto-collect: unverified captures labelled by the model, under auto_labeled/
    collected_events: list[int] = msgspec.field(default_factory=list)
    duration_s: float = 0.0


class DatasetVersionView(msgspec.Struct, kw_only=True):
    version: str
    image_count: int
    created_at: datetime
    yaml_path: str
    # Parsed dataset_versions.changes: kind, source, splits, class_distribution, class_mapping,
    # problem counts, collected event count (the ids themselves are left out).
    changes: dict[str, Any] | None = None


class DatasetView(msgspec.Struct, kw_only=True):
    id: int
    dataset_id: str
    name: str
    description: str | None
    version: str | None  # latest version; None while the dataset has none
    storage_path: str
    yaml_path: str | None
    total_images: int
    total_labels: int
    class_distribution: dict[str, Any] | None
    roboflow_project: str | None
    roboflow_version: str | None
    last_sync_at: datetime | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
    version_count: int = 0


class DatasetDetail(DatasetView, kw_only=True):
    versions: list[DatasetVersionView] = msgspec.field(default_factory=list)


class CreateDatasetRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str | None = None
    # Slug [a-z0-9_.-], at most 50, not all digits; derived from name when omitted.
    dataset_id: str | None = None


class UpdateDatasetRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /api/datasets/{id}/import`` (JSON): an export folder or zip on the server."""

    source_path: str
    version: str | None = None  # label of the new version; default the next "vN"
    class_mapping: dict[str, str | None] | None = None  # export class name -> model class (None: drop)
    strict: bool = False  # any rejected file rejects the whole import
    merge: bool = False  # carry the latest version's files over (else the export replaces them)


class AutoCollectRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    dataset_id: str
    auto_label: bool = True
    since_version: str | None = None


class RoboflowSyncRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    project_name: str
    version: int | str
    dataset_id: str | None = None  # default: the project name as a slug
    class_mapping: dict[str, str | None] | None = None
