"""API structs of the Model group."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Sensitivity = Literal["low", "medium", "high"]

# A torch device as Ultralytics takes it: cpu, cuda, cuda:N, N or N,M (GPU indices), mps. Training
# requests, the training settings and the trained_model run config all check it with this.
DEVICE_PATTERN = r"^(cpu|mps|cuda(:[0-9]{1,2})?|[0-9]{1,2}(,[0-9]{1,2})*)$"
TrainDevice = Annotated[
    str,
    msgspec.Meta(
        pattern=DEVICE_PATTERN,
        max_length=32,
        description="torch device of the training: cpu, cuda, cuda:N, N or N,M (GPU indices), mps",
    ),
]


class TrainRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    dataset_id: Annotated[str, msgspec.Meta(min_length=1, max_length=50, description="dataset_id (or numeric id)")]
    version: Annotated[str | None, msgspec.Meta(description="dataset version; default: the latest")] = None
    epochs: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    imgsz: Annotated[int, msgspec.Meta(ge=32, le=1280, multiple_of=32)] | None = None
    confidence_threshold: Annotated[float, msgspec.Meta(ge=0.1, le=1.0)] = 0.5
    sensitivity: Sensitivity = "medium"
    profile: Literal["default", "tiny"] = "default"
    # None: the training settings' device (training.device), resolved when the request is queued.
    device: TrainDevice | None = None
    auto_deploy: Annotated[bool, msgspec.Meta(description="deploy when it beats the current model")] = False
    force_deploy: Annotated[bool, msgspec.Meta(description="with auto_deploy: deploy even if not better")] = False


class DeployRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    force: Annotated[bool, msgspec.Meta(description="deploy even if it does not beat the current model")] = False


class TrainingParams(msgspec.Struct, kw_only=True):
    epochs: int | None
    batch_size: int | None
    imgsz: int | None = None
    confidence_threshold: float
    sensitivity: str
    profile: str | None = None


class ModelInfo(msgspec.Struct, kw_only=True):
    id: int
    model_id: str
    model_name: str
    version: str
    status: str
    is_current: bool
    accuracy: float | None  # mAP50 on its dataset version's valid split
    map50_95: float | None
    precision: float | None
    recall: float | None
    inference_time: str | None  # "15ms", as the seed shows it
    inference_ms: float | None
    model_size: int | None
    dataset_id: str | None
    dataset_version: str | None
    data_yaml_path: str | None
    training_date: datetime
    training_params: dict[str, Any] | None
    per_class: list[dict[str, Any]] | None = None
    # Raw score of each class's best F1 on its valid split: the detector maps it to confidence 0.5.
    class_thresholds: dict[str, float] | None = None
    gate: dict[str, Any] | None = None
    weights_path: str
    onnx_path: str | None


class TrainingStatus(msgspec.Struct, kw_only=True):
    id: int
    job_name: str
    job_type: str
    status: str
    dataset_id: str | None
    model_id: str | None
    epochs: int
    current_epoch: int
    progress_percentage: int
    training_loss: float | None
    final_accuracy: float | None
    training_time: int | None
    error_message: str | None
    dagster_run_id: str | None
    batch_job_id: int | None
    current_step: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    last_epoch: dict[str, Any] | None = None


class RetrainStatus(msgspec.Struct, kw_only=True):
    """Progress toward the next automatic retraining (the retrain sensor's own count)."""

    new_verified_labels: int
    retrain_min_new_labels: int
    auto_retrain: bool
    since: datetime | None  # the newest training or auto-collection request; null: none yet
    queued: bool  # a dataset update or training is already pending or running


class DeployResult(msgspec.Struct, kw_only=True):
    model: ModelInfo
    previous_model_id: str | None
    forced: bool
    gate: dict[str, Any] | None
    detector_reloaded: bool
