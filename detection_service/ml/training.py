"""Training, evaluation and export of our YOLO detectors: the one copy Dagster and the service use.

Everything here runs offline on a CPU: no weight downloads (models start from a YAML or from one of
our own .pt files), no font downloads, no pip auto-installs (see ``ultralytics_env``). Ultralytics
is imported lazily so that importing this module stays cheap and ``configure_offline`` can run first.

Datasets always use ``MODEL_CLASSES`` ids; ``prepare_yolo_dataset`` turns a Roboflow YOLO export
(any class names) into such a dataset. See docs/training.md for the profiles and their numbers.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec
import yaml

from detection_service.datasets.export_reader import UnknownClassesError  # noqa: F401  (raised by prepare_yolo_dataset)
from detection_service.ml import ultralytics_env
from detection_service.ml.classes import MODEL_CLASSES
from detection_service.ml.mixing import staged_folder
from schemas.models import DEVICE_PATTERN

log = logging.getLogger(__name__)

Sensitivity = Literal["low", "medium", "high"]
ProfileName = Literal["default", "tiny"]

# Sensitivity decides how far below ``confidence_threshold`` the detector still reports a box, as
# ``unclassified``: floor = max(MIN_FLOOR, threshold * factor). Boxes under the floor are dropped.
# It is an inference setting stored with the model; it does not change training.
SENSITIVITY_FLOOR_FACTOR: dict[str, float] = {"low": 1.0, "medium": 0.5, "high": 0.25}
MIN_FLOOR = 0.05

# Per-profile defaults for the fields of TrainParams left as None. "default" is tuned to finish on
# doorbell-camera-alert-v4 (593 train images) within 15 min on the 2-core dev machine; see
# docs/training.md for the runs behind these numbers. "tiny" is for tests (< 60 s).
PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        # The starter mix (doorbell parcels + person photos + teacher labels) in a 15-minute budget
        # on 2 cores; docs/training.md "The starter mix" has the runs and the mAP-vs-minutes curve.
        "epochs": 26,  # the first plan only: time_budget_s re-plans it after every epoch
        "batch_size": 8,
        "imgsz": 256,  # doorbell parcels are small (38% under 1% of the frame): 256 is the floor
        "nbs": 8,  # no gradient accumulation: one optimizer step per batch
        "patience": 100,
        "fraction": 1.0,
        "val_every_epoch": False,  # saves ~10 s/epoch; the final validation still runs
        "cache": "ram",  # mosaic decodes 4 JPEGs per sample: decode once instead
        "close_mosaic": 3,
        "lr0": 0.002,  # AdamW; 0.00125 (Ultralytics' pick) learns too slowly in 13-18 epochs
        "warmup_epochs": 1.0,  # of ~15 epochs; Ultralytics' 3 would spend a fifth of the run warming up
        "time_budget_s": 840,  # the training loop; + final validation and export stay within 15 min
        "max_train_s": 870,  # hard wall: stop gracefully (valid weights) if an epoch runs long
        "max_images_per_source": 700,  # all 593 doorbell frames, 700 of the 1201 person photos
        # Fine-tuning a model that already knows the classes (a retrain): a tenth of the LR and no
        # warm-up, or the first steps on a small mix undo what it knew (docs/training.md).
        "fine_tune_lr0": 0.0002,
    },
    "tiny": {
        "epochs": 2,
        "batch_size": 8,
        "imgsz": 64,
        "nbs": 8,
        "patience": 100,
        "fraction": 0.5,
        "val_every_epoch": True,  # exercises the per-epoch metrics path in tests
        "cache": False,
        "close_mosaic": 0,
        "lr0": None,
        "warmup_epochs": None,
        "time_budget_s": None,
        "max_train_s": 120,
        "max_images_per_source": None,
        "fine_tune_lr0": None,
    },
}

# Ultralytics arguments train() sets itself; overrides may not change them.
_RESERVED_ARGS = frozenset(
    {
        "data",
        "project",
        "name",
        "exist_ok",
        "plots",
        "amp",
        "workers",
        "resume",
        "model",
        "device",
        "time",
        "save_dir",
        "optimizer",
        "lr0",
        "warmup_epochs",
    }
)


class TrainingCancelled(Exception):
    """should_cancel() said stop; the run directory has been removed."""


def min_confidence(confidence_threshold: float, sensitivity: str) -> float:
    """The floor under which the detector discards a box (see SENSITIVITY_FLOOR_FACTOR)."""
    return round(max(MIN_FLOOR, confidence_threshold * SENSITIVITY_FLOOR_FACTOR[sensitivity]), 4)


# --------------------------------------------------------------------------- score calibration
#
# A weak class peaks in F1 at a lower raw score than a strong one (the starter model: person 0.24,
# package 0.40 on the mix's valid split, 2026-12-07), so one threshold cannot suit both. Each class
# gets its operating point t_c: the raw score of its best (smoothed) F1 on the model's valid split.
# The detector maps raw scores piecewise-linearly, 0 -> 0, t_c -> 0.5, 1 -> 1, so a confidence
# threshold of 0.5 lands on every class's best-F1 point and 0.7 is stricter for each.
# A class without t_c keeps its raw score.
#
# The range: below 0.1 the curve's maximum sits in the flood of low-score boxes (a model that
# barely separates the class on a small valid split), and mapping it to 0.5 would alert on noise;
# above 0.6 the maximum is usually a few memorised valid images scoring near 1, and mapping 0.6 to
# 0.5 already lets every box over 0.6 through at the default threshold.
CLASS_THRESHOLD_RANGE = (0.1, 0.6)
F1_SMOOTHING = 0.1  # Ultralytics smooths the mean F1 curve with this box-filter width before its argmax


def calibrate(raw: float, threshold: float | None) -> float:
    """Raw model score -> calibrated score (``threshold`` -> 0.5); identity without a threshold."""
    if threshold is None:
        return raw
    raw = min(1.0, max(0.0, raw))
    if raw <= threshold:
        return 0.5 * raw / threshold
    return 0.5 + 0.5 * (raw - threshold) / (1.0 - threshold)


def uncalibrate(score: float, threshold: float | None) -> float:
    """The inverse of ``calibrate``: the raw score that maps to ``score``."""
    if threshold is None:
        return score
    score = min(1.0, max(0.0, score))
    if score <= 0.5:
        return 2.0 * score * threshold
    return threshold + (score - 0.5) * 2.0 * (1.0 - threshold)


def raw_class_thresholds(config: InferenceConfig | None, classes: Iterable[str]) -> dict[str, float]:
    """Per class, the raw score at which the model reports a detection at its own
    ``confidence_threshold`` (calibrated units): what the model's labels (teacher, auto-label) use,
    so they mean what its detections mean. Empty without a config (a model from elsewhere)."""
    if config is None:
        return {}
    return {c: uncalibrate(config.confidence_threshold, config.class_thresholds.get(c)) for c in classes}


def best_f1_thresholds(
    f1_curve: Any, px: Any, class_index: Iterable[int], names: Mapping[int, str]
) -> dict[str, float]:
    """Per class with labels (``class_index``, aligned with the rows of ``f1_curve``), the
    confidence of its smoothed F1 maximum, clipped to CLASS_THRESHOLD_RANGE. A class whose F1 is 0
    everywhere (no correct box at any score) gets none: there is no operating point to find."""
    import numpy as np
    from ultralytics.utils.metrics import smooth

    lo, hi = CLASS_THRESHOLD_RANGE
    out: dict[str, float] = {}
    curves = np.asarray(f1_curve, dtype=float)
    px = np.asarray(px, dtype=float)
    for row, cls in zip(curves, class_index):
        if row.size == 0 or not np.any(row > 0):
            continue
        best = float(px[int(smooth(row, F1_SMOOTHING).argmax())])
        out[str(names[int(cls)])] = round(min(hi, max(lo, best)), 3)
    return out


class TrainParams(msgspec.Struct, kw_only=True):
    """What one training run does. Fields left None take the profile's value (``__post_init__``)."""

    profile: ProfileName = "default"
    # "yolo11n.yaml" (or any Ultralytics model YAML): random init. A path to one of OUR .pt files:
    # fine-tune it. Never a bare hub name like "yolo11n.pt" (that would download).
    model: str = "yolo11n.yaml"
    epochs: int | None = None
    batch_size: int | None = None
    imgsz: int | None = None
    nbs: int | None = None
    patience: int | None = None
    fraction: float | None = None
    val_every_epoch: bool | None = None
    cache: bool | str | None = None
    close_mosaic: int | None = None
    lr0: float | None = None
    warmup_epochs: float | None = None
    # Wall-clock budget of the training loop: Ultralytics' time mode re-plans the epoch count after
    # every epoch so the LR schedule and close_mosaic still end on time (``epochs`` is then ignored).
    time_budget_s: float | None = None
    max_train_s: float | None = None
    # Balance of a training mix: at most this many train images per source (deterministic sample).
    max_images_per_source: int | None = None
    confidence_threshold: float = 0.5
    sensitivity: Sensitivity = "medium"
    workers: int = 0
    threads: int = 2
    seed: int = 0
    # Passed to Ultralytics as it is; a GPU ("cuda", "cuda:0", "0,1") needs a machine that has one,
    # i.e. the GPU worker (docs/training.md "Training on a GPU worker").
    device: str = "cpu"
    # Expert Ultralytics overrides (mosaic=..., scale=...), passed through as they are.
    overrides: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; one of {sorted(PROFILES)}")
        explicit_epochs, explicit_budget = self.epochs is not None, self.time_budget_s is not None
        for key, value in PROFILES[self.profile].items():
            if key in self.__struct_fields__ and getattr(self, key) is None:
                setattr(self, key, value)
        if explicit_epochs and not explicit_budget:
            self.time_budget_s = None  # asked for N epochs: run N, not the profile's time plan
        if not 0.1 <= self.confidence_threshold <= 1.0:
            raise ValueError("confidence_threshold must be within 0.1-1.0")
        if self.sensitivity not in SENSITIVITY_FLOOR_FACTOR:
            raise ValueError("sensitivity must be low, medium or high")
        if self.epochs < 1 or self.batch_size < 1 or self.nbs < 1 or self.threads < 1 or self.workers < 0:
            raise ValueError("epochs, batch_size, nbs and threads must be >= 1, workers >= 0")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError("imgsz must be a multiple of 32 (the model stride), at least 32")
        if not 0 < self.fraction <= 1:
            raise ValueError("fraction must be within (0, 1]")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError("time_budget_s must be positive (or unset)")
        if self.max_images_per_source is not None and self.max_images_per_source < 1:
            raise ValueError("max_images_per_source must be >= 1 (or unset)")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N, N or N,M (GPU indices) or mps, got {self.device!r}")
        if bad := _RESERVED_ARGS & set(self.overrides):
            raise ValueError(f"overrides may not set {sorted(bad)}")

    @property
    def min_confidence(self) -> float:
        return min_confidence(self.confidence_threshold, self.sensitivity)

    def for_fine_tune(self, weights: str) -> TrainParams:
        """These params for fine-tuning ``weights`` (one of our .pt files): the profile's
        fine-tune LR without warm-up, unless this run set its own LR."""
        lr0 = PROFILES[self.profile].get("fine_tune_lr0")
        if lr0 is None or self.lr0 != PROFILES[self.profile]["lr0"]:
            return msgspec.structs.replace(self, model=weights)
        return msgspec.structs.replace(self, model=weights, lr0=lr0, warmup_epochs=0.0)

    @classmethod
    def for_profile(cls, profile: str = "default", **changes: Any) -> TrainParams:
        return cls(profile=profile, **changes)  # type: ignore[arg-type]


class EpochProgress(msgspec.Struct, kw_only=True):
    epoch: int  # 1-based, the epoch just finished
    epochs: int
    progress_pct: float
    losses: dict[str, float]  # box / cls / dfl, mean over the epoch's batches
    metrics: dict[str, float] | None  # map50, map50_95, precision, recall when validated this epoch
    elapsed_s: float


class ClassMetrics(NamedTuple):
    name: str
    images: int
    instances: int
    precision: float
    recall: float
    map50: float
    map50_95: float


class InferenceConfig(msgspec.Struct, kw_only=True):
    """Stored next to the weights (``aidoor.json``): what the detector needs to use the model."""

    classes: list[str]
    imgsz: int
    confidence_threshold: float
    sensitivity: str
    min_confidence: float
    # Per-class operating points (raw score of the best F1 on the valid split) the detector
    # calibrates with (see ``calibrate``); absent in files written before them: identity.
    class_thresholds: dict[str, float] = msgspec.field(default_factory=dict)


class TrainResult(msgspec.Struct, kw_only=True):
    best_weights: Path
    last_weights: Path
    run_dir: Path
    epochs_run: int
    wall_s: float
    metrics: dict[str, float]
    per_class: list[ClassMetrics]
    names: list[str]
    inference: InferenceConfig
    stopped_early: str | None = None  # "patience" or "time_limit"
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    class_thresholds: dict[str, float] = msgspec.field(default_factory=dict)  # = inference.class_thresholds


class EvalResult(msgspec.Struct, kw_only=True):
    weights: Path
    split: str
    imgsz: int
    images: int
    metrics: dict[str, float]
    per_class: list[ClassMetrics]
    inference_ms: float  # model forward per image at batch 1 (per camera frame)
    preprocess_ms: float
    postprocess_ms: float  # NMS
    wall_s: float
    class_thresholds: dict[str, float] = msgspec.field(default_factory=dict)  # best-F1 raw score per class


# --------------------------------------------------------------------------- dataset preparation

_SPLITS = (("train", "train"), ("val", "valid"), ("test", "test"))  # data.yaml key, folder we write
_MARKER = ".aidoor-prepared"


def _names_dict(names: Any) -> dict[int, str]:
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return {i: str(v) for i, v in enumerate(names)}
    raise ValueError(f"data.yaml 'names' must be a list or mapping, got {type(names).__name__}")


def prepare_yolo_dataset(export_dir: Path, out_dir: Path, mapping: Mapping[str, str | None] | None = None) -> Path:
    """Make a training copy of a Roboflow YOLO export folder with classes remapped to MODEL_CLASSES.

    The export is read by the same reader as a dataset import (``read_export``: class mapping,
    label checks, files it rejects are logged and left out). Images are symlinked (the export may
    be read-only and large), labels are written with our class ids, and data.yaml gets an
    absolute ``path:``. Raises UnknownClassesError listing every class name that maps to nothing.
    ``out_dir`` is replaced if it holds an earlier preparation; any other non-empty directory is
    refused. Returns the new data.yaml.
    """
    from detection_service.datasets.export_reader import read_export

    export_dir = Path(export_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if not export_dir.is_dir():
        raise ValueError(f"{export_dir} is not an export folder (unzip it first)")
    if out_dir == export_dir or export_dir in out_dir.parents:
        raise ValueError(f"out_dir {out_dir} must not be inside the export {export_dir}")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / _MARKER).exists():
        raise FileExistsError(f"{out_dir} is not empty and not an earlier prepared dataset")
    # Decoding every image is the import's job; training reads them anyway.
    report = read_export(export_dir, mapping, check_images=False)
    for problem in report.problems:
        log.warning("%s: %s", export_dir.name, problem)
    with staged_folder(out_dir) as staging:
        summary: dict[str, dict[str, int]] = {}
        yaml_splits: dict[str, str] = {}
        for key, folder in _SPLITS:
            items = [item for item in report.items if item.split == folder]
            if not items:
                if key in ("train", "val"):
                    raise FileNotFoundError(f"{export_dir}: no images for split '{folder}'")
                continue
            summary[folder] = _write_split(items, staging / folder)
            yaml_splits[key] = f"{folder}/images"
        out_yaml = {
            "path": str(out_dir),
            **yaml_splits,
            "nc": len(MODEL_CLASSES),
            "names": dict(enumerate(MODEL_CLASSES)),
            # Not read by Ultralytics; provenance for Dagster metadata and humans.
            "aidoor": {"source": str(export_dir), "class_mapping": report.class_mapping, "splits": summary},
        }
        (staging / "data.yaml").write_text(yaml.safe_dump(out_yaml, sort_keys=False))
        (staging / _MARKER).write_text(str(export_dir) + "\n")
    return out_dir / "data.yaml"


def _write_split(items: list[Any], dest: Path) -> dict[str, int]:
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir(parents=True)
    counts = {"images": 0, "labels": 0, "instances": 0, "backgrounds": 0}
    per_class = [0] * len(MODEL_CLASSES)
    for item in items:
        # Symlink each file, not the folder: Ultralytics resolves split folders and derives label
        # paths from image paths (/images/ -> /labels/), which must land in OUR labels folder.
        (dest / "images" / item.name).symlink_to(item.image.resolve())
        counts["images"] += 1
        (dest / "labels" / f"{item.stem}.txt").write_text(item.label)
        counts["labels"] += 1
        counts["instances"] += len(item.boxes)
        counts["backgrounds"] += not item.boxes
        for class_id in item.boxes:
            per_class[class_id] += 1
    counts.update({f"instances_{name}": c for name, c in zip(MODEL_CLASSES, per_class) if c})
    return counts


def _check_model_classes(data_yaml: Path) -> None:
    data = yaml.safe_load(Path(data_yaml).read_text()) or {}
    names = [n for _, n in sorted(_names_dict(data.get("names") or {}).items())]
    if names != list(MODEL_CLASSES):
        raise ValueError(
            f"{data_yaml} names {names} are not the model classes {list(MODEL_CLASSES)}; "
            "prepare it with prepare_yolo_dataset()"
        )


# --------------------------------------------------------------------------- ultralytics helpers

# torch's thread count is process-global: one train/evaluate/export at a time per process.
# Re-entrant so an on_epoch callback may call evaluate().
_threads_lock = threading.RLock()


def _ensure_offline(fallback_data_dir: Path) -> None:
    # configure_offline must precede the first ultralytics import; if the caller forgot, keep
    # everything under the run's own directory rather than ~/.config.
    if ultralytics_env.configured_data_dir() is None:
        log.warning("configure_offline() was not called; using %s", fallback_data_dir)
        ultralytics_env.configure_offline(fallback_data_dir)


def _metrics_from(det_metrics: Any) -> dict[str, float]:
    p, r, map50, map50_95 = (float(x) for x in det_metrics.mean_results())
    return {"map50": map50, "map50_95": map50_95, "precision": p, "recall": r}


def _metrics_from_dict(values: Mapping[str, Any]) -> dict[str, float]:
    keys = {
        "map50": "metrics/mAP50(B)",
        "map50_95": "metrics/mAP50-95(B)",
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
    }
    return {k: float(values[v]) for k, v in keys.items() if v in values}


def _class_thresholds_from(det_metrics: Any) -> dict[str, float]:
    box = det_metrics.box
    if not len(det_metrics.ap_class_index) or not len(box.f1_curve):
        return {}
    return best_f1_thresholds(box.f1_curve, box.px, det_metrics.ap_class_index, det_metrics.names)


def _per_class_from(det_metrics: Any) -> list[ClassMetrics]:
    rows = []
    for i, cls in enumerate(det_metrics.ap_class_index):
        cls = int(cls)
        p, r, map50, map50_95 = (float(x) for x in det_metrics.class_result(i))
        rows.append(
            ClassMetrics(
                name=str(det_metrics.names[cls]),
                images=int(det_metrics.nt_per_image[cls]),
                instances=int(det_metrics.nt_per_class[cls]),
                precision=p,
                recall=r,
                map50=map50,
                map50_95=map50_95,
            )
        )
    return rows


class _Threads:
    """Set torch's intra-op threads for a block and restore them after (the service shares the process)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.before: int | None = None

    def apply(self) -> None:
        import torch

        if self.before is None:
            self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def restore(self) -> None:
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)


# What optimizer="auto" picks for short runs (< 10k iterations): AdamW, lr 0.002 * 5 / (4 + nc).
AUTO_ADAMW_LR0 = round(0.002 * 5 / (4 + len(MODEL_CLASSES)), 6)


def _optimizer_args(params: TrainParams) -> dict[str, Any]:
    # Ultralytics' optimizer="auto" ignores lr0, so an explicit lr0 needs an explicit optimizer. In
    # time mode "auto" would see the placeholder epoch count, count > 10k iterations and pick MuSGD,
    # whose Newton-Schulz steps made a CPU batch 2.5x slower (measured): pin what it picks for short runs.
    if params.lr0 is not None:
        return {"lr0": params.lr0, "optimizer": "AdamW"}
    if params.time_budget_s:
        return {"lr0": AUTO_ADAMW_LR0, "optimizer": "AdamW"}
    return {}


def _model_source(model: str) -> str:
    path = Path(model)
    if path.suffix in (".yaml", ".yml"):
        return model  # Ultralytics resolves its bundled YAMLs by name; a local path works too
    if path.suffix == ".pt":
        if not path.is_file():
            # A bare "yolo11n.pt" would make Ultralytics download it: refuse instead.
            raise FileNotFoundError(f"weights {model} not found (only our own .pt files; no downloads)")
        return str(path.resolve())
    raise ValueError(f"model must be a model YAML or a .pt path, got {model!r}")


# --------------------------------------------------------------------------- train


def train(
    data_yaml: Path,
    out_dir: Path,
    params: TrainParams,
    on_epoch: Callable[[EpochProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a detector on a prepared dataset; weights and logs go to ``out_dir/train``.

    ``on_epoch`` is called once per finished epoch. ``should_cancel`` is polled between batches
    (and validation batches); when it returns True, TrainingCancelled is raised within about a
    batch and the run directory is removed. Any other failure removes it too, so ``out_dir/train``
    either holds a complete run or nothing.
    """
    data_yaml = Path(data_yaml).resolve()
    out_dir = Path(out_dir).resolve()
    _check_model_classes(data_yaml)
    source = _model_source(params.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    _ensure_offline(out_dir / ".ultralytics")

    from ultralytics import YOLO

    run_dir = out_dir / "train"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # exist_ok=True below would otherwise mix in an older run's files

    threads = _Threads(params.threads)
    started = time.monotonic()
    state: dict[str, Any] = {"done": False, "stopped": None, "metrics_id": None, "last_poll": 0.0}

    def cancel_check(_: Any = None, *, force: bool = False) -> None:
        if should_cancel is None:
            return
        now = time.monotonic()
        if not force and now - state["last_poll"] < 0.25:  # cheap even if should_cancel hits a DB
            return
        state["last_poll"] = now
        if should_cancel():
            raise TrainingCancelled("training cancelled")

    def on_pretrain_routine_start(trainer: Any) -> None:
        # Ultralytics leaves torch at OMP_NUM_THREADS=1 here; 2 threads train ~1.5x faster.
        threads.apply()
        cancel_check(force=True)

    def on_train_batch_end(trainer: Any) -> None:
        cancel_check()
        if params.max_train_s and time.monotonic() - started > params.max_train_s and not trainer.stop:
            log.warning("training hit max_train_s=%s; stopping after this batch", params.max_train_s)
            state["stopped"] = "time_limit"
            trainer.stop = True  # graceful: validates, saves and final-evaluates as usual

    def on_train_epoch_end(trainer: Any) -> None:
        state["metrics_id"] = id(trainer.metrics)  # validate() replaces the dict when it runs

    def on_fit_epoch_end(trainer: Any) -> None:
        if state["done"]:
            return  # final_eval() calls this once more for best.pt; not an epoch
        validated = id(trainer.metrics) != state["metrics_id"]
        epochs = trainer.epochs
        losses = {k.removesuffix("_loss"): float(v) for k, v in (trainer.tloss or {}).items()}
        progress = EpochProgress(
            epoch=trainer.epoch + 1,
            epochs=epochs,
            progress_pct=round(100.0 * (trainer.epoch + 1) / epochs, 2),
            losses=losses,
            metrics=_metrics_from_dict(trainer.metrics) if validated and trainer.metrics else None,
            elapsed_s=round(time.monotonic() - started, 2),
        )
        if trainer.stop:
            state["done"] = True
            if state["stopped"] is None and trainer.epoch + 1 < epochs:
                state["stopped"] = "patience"
        if on_epoch is not None:
            on_epoch(progress)

    model = YOLO(source, task="detect")
    for event, fn in (
        ("on_pretrain_routine_start", on_pretrain_routine_start),
        ("on_pretrain_routine_end", cancel_check),
        ("on_train_epoch_start", cancel_check),
        ("on_train_batch_end", on_train_batch_end),
        ("on_val_batch_end", cancel_check),
        ("on_train_epoch_end", on_train_epoch_end),
        ("on_fit_epoch_end", on_fit_epoch_end),
    ):
        model.add_callback(event, fn)

    args: dict[str, Any] = {
        "data": str(data_yaml),
        "epochs": params.epochs,
        "batch": params.batch_size,
        "imgsz": params.imgsz,
        "nbs": params.nbs,
        "patience": params.patience,
        "fraction": params.fraction,
        "val": params.val_every_epoch,
        "cache": params.cache,
        "close_mosaic": params.close_mosaic,
        "seed": params.seed,
        "device": params.device,
        "workers": params.workers,
        "project": str(out_dir),
        "name": run_dir.name,
        "exist_ok": True,
        "plots": False,  # plotting needs fonts and costs seconds per epoch
        "amp": False,  # check_amp() would download yolo26n.pt
        "pretrained": source.endswith(".pt"),
        "verbose": False,
        **_optimizer_args(params),
        **({"time": params.time_budget_s / 3600} if params.time_budget_s else {}),
        **({"warmup_epochs": params.warmup_epochs} if params.warmup_epochs is not None else {}),
        **params.overrides,
    }
    with _threads_lock:
        try:
            model.train(**args)
            trainer = model.trainer
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        finally:
            threads.restore()

    wall_s = time.monotonic() - started
    best = trainer.best if trainer.best.exists() else trainer.last
    validator_metrics = trainer.validator.metrics
    inference = InferenceConfig(
        classes=list(MODEL_CLASSES),
        imgsz=params.imgsz,
        confidence_threshold=params.confidence_threshold,
        sensitivity=params.sensitivity,
        min_confidence=params.min_confidence,
        class_thresholds=_class_thresholds_from(validator_metrics),
    )
    result = TrainResult(
        best_weights=best,
        last_weights=trainer.last,
        run_dir=run_dir,
        epochs_run=trainer.epoch + 1,
        wall_s=round(wall_s, 2),
        metrics=_metrics_from(validator_metrics),
        per_class=_per_class_from(validator_metrics),
        names=[str(trainer.data["names"][i]) for i in sorted(trainer.data["names"])],
        inference=inference,
        stopped_early=state["stopped"],
        params=msgspec.to_builtins(params),
        class_thresholds=inference.class_thresholds,
    )
    write_inference_config(best, inference)
    (run_dir / "result.json").write_bytes(_ENCODER.encode(result))
    return result


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def write_inference_config(weights: Path, config: InferenceConfig) -> Path:
    """``aidoor.json`` beside the weights: classes, imgsz and thresholds the detector must use."""
    path = Path(weights).parent / "aidoor.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(config)))
    return path


def read_inference_config(weights: Path) -> InferenceConfig | None:
    """``aidoor.json`` beside ``weights`` (any path in the model's folder), or None."""
    path = Path(weights).parent / "aidoor.json"
    return msgspec.json.decode(path.read_bytes(), type=InferenceConfig) if path.is_file() else None


# --------------------------------------------------------------------------- evaluate


def evaluate(
    weights: Path,
    data_yaml: Path,
    split: str = "val",
    imgsz: int | None = None,
    *,
    batch: int = 1,
    threads: int = 2,
    device: str = "cpu",
) -> EvalResult:
    """Validate ``weights`` on one split of a prepared dataset (the champion/challenger gate).

    ``split`` is a data.yaml key ("val" or "test"). ``imgsz`` defaults to the size the model was
    trained at. Batch 1 by default so ``inference_ms`` is the per-frame latency the camera loop
    sees; mAP does not depend on the batch size.
    """
    weights = Path(weights).resolve()
    data_yaml = Path(data_yaml).resolve()
    _check_model_classes(data_yaml)
    _ensure_offline(weights.parent / ".ultralytics")
    from ultralytics import YOLO

    started = time.monotonic()
    seen: list[int] = []
    with _threads_lock, tempfile.TemporaryDirectory(prefix="aidoor-val-") as tmp:
        threads_ctl = _Threads(threads)
        threads_ctl.apply()
        try:
            model = YOLO(str(weights), task="detect")
            if imgsz is None:
                config = read_inference_config(weights)
                imgsz = config.imgsz if config else int(model.overrides.get("imgsz") or 320)
            model.add_callback("on_val_end", lambda v: seen.append(int(v.seen)))
            metrics = model.val(
                data=str(data_yaml),
                split=split,
                imgsz=imgsz,
                batch=batch,
                device=device,
                workers=0,
                plots=False,
                save_json=False,
                project=tmp,  # Ultralytics always makes a run folder; keep it out of runs_dir
                name="val",
                verbose=False,
            )
        finally:
            threads_ctl.restore()
    speed = metrics.speed
    return EvalResult(
        weights=weights,
        split=split,
        imgsz=imgsz,
        images=seen[-1] if seen else 0,
        metrics=_metrics_from(metrics),
        per_class=_per_class_from(metrics),
        inference_ms=round(float(speed["inference"]), 3),
        preprocess_ms=round(float(speed["preprocess"]), 3),
        postprocess_ms=round(float(speed["postprocess"]), 3),
        wall_s=round(time.monotonic() - started, 2),
        class_thresholds=_class_thresholds_from(metrics),
    )


# --------------------------------------------------------------------------- export


def export_onnx(weights: Path, imgsz: int, *, simplify: bool = True) -> Path:
    """ONNX file beside the weights (static shape, onnxslim-simplified); offline."""
    return _export(weights, imgsz, "onnx", simplify=simplify, dynamic=False)


def export_openvino(weights: Path, imgsz: int) -> Path:
    """OpenVINO IR folder beside the weights (``<stem>_openvino_model/``); offline, no telemetry."""
    return _export(weights, imgsz, "openvino", dynamic=False, half=False)


def _export(weights: Path, imgsz: int, fmt: str, **kwargs: Any) -> Path:
    weights = Path(weights).resolve()
    if not weights.is_file():
        raise FileNotFoundError(weights)
    _ensure_offline(weights.parent / ".ultralytics")
    from ultralytics import YOLO

    with _threads_lock:
        threads = _Threads(2)
        threads.apply()
        try:
            out = YOLO(str(weights), task="detect").export(format=fmt, imgsz=imgsz, device="cpu", **kwargs)
        finally:
            threads.restore()
    path = Path(out)
    if not path.exists():
        raise RuntimeError(f"{fmt} export reported {out} but it does not exist")
    config = read_inference_config(weights)
    if config is not None and path.is_dir():
        write_inference_config(path / "model.xml", config)  # travels with the IR folder
    return path


# --------------------------------------------------------------------------- reporting


def per_class_markdown(result: TrainResult | EvalResult) -> str:
    """Per-class metrics as a Markdown table (Dagster ``MetadataValue.md``)."""
    lines = [
        "| class | images | instances | precision | recall | mAP50 | mAP50-95 | best-F1 raw score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    thresholds = result.class_thresholds
    for row in result.per_class:
        t = thresholds.get(row.name)
        lines.append(
            f"| {row.name} | {row.images} | {row.instances} | {row.precision:.3f} | {row.recall:.3f} "
            f"| {row.map50:.3f} | {row.map50_95:.3f} | {'' if t is None else f'{t:.3f}'} |"
        )
    m = result.metrics
    lines.append(
        f"| **all** | | {sum(r.instances for r in result.per_class)} | {m.get('precision', math.nan):.3f} "
        f"| {m.get('recall', math.nan):.3f} | {m.get('map50', math.nan):.3f} | {m.get('map50_95', math.nan):.3f} | |"
    )
    return "\n".join(lines)


def to_builtins(result: TrainResult | EvalResult) -> dict[str, Any]:
    """JSON-ready dict (paths as strings) for Dagster metadata, the database or the CLI."""
    return msgspec.to_builtins(result, enc_hook=_enc_hook)


def result_json(result: TrainResult | EvalResult) -> str:
    return json.dumps(to_builtins(result))
