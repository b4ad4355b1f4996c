"""Typed parameters of the ``batch_jobs`` rows: one Struct per ``BatchJobType``, as a tagged union.

The tag is the row's ``job_type`` column: ``parameters`` (JSON) holds the Struct's fields without
it, exactly as the rows always held them. ``detection_service.batch_jobs`` (the owner of the
table) decodes them with :func:`parse_parameters` and stores them with :func:`encode_parameters`;
whatever does not fit (an unknown job type, a missing or unknown field, a wrong type, a field that
does not belong to a ``dataset_update`` source) is refused before a row exists.

Fields typed ``... | UnsetType = UNSET`` are left out of the stored JSON when not given, while an
explicit ``None`` is kept: a ``dataset_update`` row of each source stores just its own keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from schemas.enums import BatchJobType, TrainingJobType
from schemas.models import TrainDevice
from schemas.reports import REPORT_CADENCE, ReportType, period_key

if TYPE_CHECKING:
    from schemas.db import BatchJob


class TrainParameters(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A training (and gated deploy) that follows a dataset job: the ``train`` block of
    ``dataset_update`` / ``dataset_materialize`` parameters (TrainRequest-like fields)."""

    training_id: int | UnsetType = UNSET  # the model_training row, once queue_dataset_materialize made it
    job_type: TrainingJobType | UnsetType = UNSET  # model_training.job_type (train / retrain)
    profile: str | UnsetType = UNSET
    epochs: int | None | UnsetType = UNSET
    batch_size: int | None | UnsetType = UNSET
    imgsz: int | None | UnsetType = UNSET
    base_model_id: str | None | UnsetType = UNSET  # fine-tune this model (retraining)
    mix: list[str] | UnsetType = UNSET  # "dataset_id[@version]" refs trained on together with the version
    confidence_threshold: float | UnsetType = UNSET
    sensitivity: str | UnsetType = UNSET
    device: TrainDevice | UnsetType = UNSET  # unset: the training settings' device when queued
    auto_deploy: bool | UnsetType = UNSET
    force_deploy: bool | UnsetType = UNSET


class ExtraExport(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An export folder imported as its own dataset before a ``path`` import (the training mix)."""

    path: str
    dataset_id: str


class _Job(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="job_type"):
    """Base of the union members (the tag is the job type)."""


# Which fields each dataset_update source takes (required, optional); "source" and "train" always.
DATASET_UPDATE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "roboflow": (("project_name", "version", "dataset_id"), ("workspace", "class_mapping")),
    "auto_collect": (("dataset_id",), ("auto_label", "since_version")),
    "path": (("path", "dataset_id"), ("name", "description", "with_paths", "class_mapping")),
}


class DatasetUpdate(_Job, tag=BatchJobType.DATASET_UPDATE.value):
    """A new dataset version from ``source`` (``datasets.run_dataset_update``): a Roboflow version,
    the verified events (auto-collection) or an export folder on this machine; with ``train``, the
    new version's materialization trains (and deploys) a model on it."""

    source: Literal["roboflow", "auto_collect", "path"]
    dataset_id: str | None | UnsetType = UNSET
    # roboflow (no API key here: the job reads it from the settings)
    workspace: str | None | UnsetType = UNSET
    project_name: str | UnsetType = UNSET
    version: int | UnsetType = UNSET
    class_mapping: dict[str, str | None] | None | UnsetType = UNSET  # roboflow, path
    # auto_collect
    auto_label: bool | UnsetType = UNSET
    since_version: str | None | UnsetType = UNSET
    # path
    path: str | UnsetType = UNSET
    name: str | None | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    with_paths: list[ExtraExport] | UnsetType = UNSET
    train: TrainParameters | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        required, optional = DATASET_UPDATE_FIELDS[self.source]
        given = {name for name in self.__struct_fields__ if getattr(self, name) is not UNSET}
        missing = [name for name in required if getattr(self, name) in (UNSET, None)]
        if missing:
            raise ValueError(f"{self.source} dataset_update needs {', '.join(missing)}")
        foreign = sorted(given - {"source", "train", *required, *optional})
        if foreign:
            raise ValueError(f"{self.source} dataset_update does not take {', '.join(foreign)}")


class ModelRetrain(_Job, tag=BatchJobType.MODEL_RETRAIN.value):
    """A training on a stored dataset version (``POST /api/models/train``): the TrainRequest's
    fields, the resolved version and the model_training row it drives."""

    dataset_id: str
    version: str
    training_id: int
    base_model_id: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    imgsz: int | None = None
    confidence_threshold: float = 0.5
    sensitivity: str = "medium"
    profile: str = "default"
    device: TrainDevice = "cpu"  # the run's trained_model device; not "cpu": the GPU worker's run
    auto_deploy: bool = False
    force_deploy: bool = False


class DatasetMaterialize(_Job, tag=BatchJobType.DATASET_MATERIALIZE.value):
    """A stored dataset version's assets (statistics, data.yaml); with ``train``: teacher labels,
    training, gate and deploy in the same run."""

    dataset_id: str
    version: str
    train: TrainParameters | UnsetType = UNSET


class ModelEvaluation(_Job, tag=BatchJobType.MODEL_EVALUATION.value):
    """A registered model on the fixed evaluation set, gated against the champion."""

    model_id: str


class StorageCleanup(_Job, tag=BatchJobType.STORAGE_CLEANUP.value):
    """Retention clean-up now (``storage_cleanup_job``; also nightly by schedule), old logs archived first."""


class LogArchive(_Job, tag=BatchJobType.LOG_ARCHIVE.value):
    """Old ``system_logs`` rows to the object store, then deleted (``log_archive_job``; also nightly)."""


class ReportGenerate(_Job, tag=BatchJobType.REPORT_GENERATE.value):
    """One analytics report partition (``GET /api/analytics/reports`` for a period with no report
    yet): ``period`` is its partition key, a local day or the Monday of a local week."""

    report_type: ReportType
    period: str

    def __post_init__(self) -> None:
        if period_key(REPORT_CADENCE[self.report_type], self.period) != self.period:
            raise ValueError(f"{self.report_type} period must be its partition key, got {self.period!r}")


JobParameters = (
    DatasetUpdate | ModelRetrain | DatasetMaterialize | ModelEvaluation | StorageCleanup | LogArchive | ReportGenerate
)
PARAMETER_TYPES: dict[BatchJobType, type[_Job]] = {
    BatchJobType(cls.__struct_config__.tag): cls
    for cls in (
        DatasetUpdate,
        ModelRetrain,
        DatasetMaterialize,
        ModelEvaluation,
        StorageCleanup,
        LogArchive,
        ReportGenerate,
    )
}


def parse_parameters(job_type: str, parameters: dict[str, Any] | None) -> JobParameters:
    """The typed parameters of a ``job_type`` row. Raises ``msgspec.ValidationError`` (the owner
    turns it into the domain error ``Invalid``)."""
    if isinstance(parameters, dict) and "job_type" in parameters:
        raise msgspec.ValidationError("parameters must not carry job_type (it is the row's column)")
    return msgspec.convert({**(parameters or {}), "job_type": str(job_type)}, JobParameters)


def encode_parameters(parameters: JobParameters) -> dict[str, Any]:
    """What ``batch_jobs.parameters`` stores: the fields without the tag, unset ones left out."""
    data = msgspec.to_builtins(parameters)
    data.pop("job_type", None)
    return data


def job_type_of(parameters: JobParameters) -> BatchJobType:
    return BatchJobType(type(parameters).__struct_config__.tag)


def train_config(train: TrainParameters | ModelRetrain) -> dict[str, Any]:
    """The given training fields as a plain dict (unset and ``None`` left out)."""
    return {key: value for key, value in msgspec.to_builtins(train).items() if value is not None and key != "job_type"}


class BatchJobView(msgspec.Struct, kw_only=True):
    """A ``batch_jobs`` row as the API and the CLI show it."""

    id: int
    job_type: str
    job_name: str
    status: str
    priority: int
    parameters: dict[str, Any] | None
    progress_percentage: int
    current_step: str | None
    result: Any
    error_message: str | None
    dagster_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, job: BatchJob) -> BatchJobView:
        return cls(
            id=job.id,
            job_type=job.job_type,
            job_name=job.job_name,
            status=job.status,
            priority=job.priority,
            parameters=job.parameters,
            progress_percentage=job.progress_percentage,
            current_step=job.current_step,
            result=job.result,
            error_message=job.error_message,
            dagster_run_id=job.dagster_run_id,
            created_at=job.created_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
        )
