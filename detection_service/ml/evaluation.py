"""One evaluation path for every model the gate compares: ours and models trained elsewhere.

``training.evaluate`` runs Ultralytics' validator, which needs the model's class list to be the
dataset's. A model from elsewhere (a COCO ``.pt``, an inference-only OpenVINO export) has other
classes, so the gate evaluates every model here instead:

1. the model's class names are mapped onto ``MODEL_CLASSES`` by name
   (``classes.map_class_name``: person -> person, box/parcel -> package, ...); a class that maps
   to nothing is *unclassified* for us: its boxes are dropped before scoring, exactly like the
   detector reports them as ``unclassified``. COCO has no parcel, mail or takeaway-food class,
   so a COCO model scores only on ``person`` and 0 on the other classes of the set;
2. each image is predicted on its own (batch 1, ``conf=0.001``, NMS IoU 0.7, at most 300 boxes:
   Ultralytics' validation settings), boxes in pixels of the original image;
3. predictions are matched to the labels at IoU 0.50:0.95 per class (Ultralytics' greedy
   ``match_predictions``), and ``ultralytics.utils.metrics.ap_per_class`` gives precision,
   recall, AP50 and AP50-95 per class (precision/recall at the max-F1 confidence);
4. **scopes**: an image may be authoritative for some classes only (a doorbell-camera frame has
   its parcels labelled but not the people in it): predictions and labels of a class are scored
   only on the images whose scope includes it. ``None`` = every class.

Overall numbers are means over the classes that have labels in the set (a class the model cannot
predict counts 0), like Ultralytics' ``mean_results``.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml

from detection_service.ml import ultralytics_env
from detection_service.ml.classes import CLASS_IDS, MODEL_CLASSES, map_class_name

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
VAL_CONF = 0.001
VAL_IOU = 0.7
MAX_DET = 300
OPENVINO_SUFFIX = "_openvino_model"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_lock = threading.RLock()  # torch's thread count is process-global: one evaluation at a time


class ModelFormatError(ValueError):
    """The path is not a model this evaluation can load (a .pt file or an OpenVINO export folder)."""


def model_kind(path: Path) -> str:
    """``pt`` for a weights file, ``openvino`` for an export folder; ModelFormatError otherwise."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        return "pt"
    if path.is_dir():
        if not path.name.endswith(OPENVINO_SUFFIX):
            raise ModelFormatError(f"{path}: a model folder must be an OpenVINO export named *{OPENVINO_SUFFIX}")
        if not any(path.glob("*.xml")) or not any(path.glob("*.bin")):
            raise ModelFormatError(f"{path}: no OpenVINO IR (.xml + .bin) in the folder")
        return "openvino"
    raise ModelFormatError(f"{path}: expected an Ultralytics .pt file or an *{OPENVINO_SUFFIX} folder")


def map_model_classes(names: Mapping[int, str] | Iterable[str]) -> dict[int, int]:
    """Model class id -> our class id, by name; classes that map to nothing are left out."""
    items = names.items() if isinstance(names, Mapping) else enumerate(names)
    mapping: dict[int, int] = {}
    for model_id, name in items:
        ours = map_class_name(str(name))
        if ours is not None:
            mapping[int(model_id)] = CLASS_IDS[ours]
    return mapping


def class_mapping_report(names: Mapping[int, str] | Iterable[str]) -> dict[str, Any]:
    """For the registry: which of the model's classes became which of ours, how many were dropped."""
    items = list(names.items() if isinstance(names, Mapping) else enumerate(names))
    mapping = map_model_classes(dict(items))
    mapped = {str(name): MODEL_CLASSES[mapping[int(i)]] for i, name in items if int(i) in mapping}
    return {"mapped": mapped, "unclassified": len(items) - len(mapped), "model_classes": len(items)}


def _stored_imgsz(path: Path, model: Any) -> int:
    """The size the model was made for: our aidoor.json, an export's metadata.yaml, the checkpoint's args."""
    for config in (path.parent / "aidoor.json", path / "aidoor.json"):
        if config.is_file():
            try:
                return int(msgspec.json.decode(config.read_bytes())["imgsz"])
            except (KeyError, ValueError, TypeError, msgspec.DecodeError):
                pass
    metadata = path / "metadata.yaml"
    if metadata.is_file():
        imgsz = (yaml.safe_load(metadata.read_text()) or {}).get("imgsz")
        if isinstance(imgsz, list) and imgsz:
            return int(imgsz[0])
        if isinstance(imgsz, int):
            return imgsz
    value = (getattr(model, "overrides", None) or {}).get("imgsz")
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return int(value) if value else 640


@dataclass(frozen=True, slots=True)
class EvalImage:
    image: Path
    label: Path | None  # YOLO label in OUR class ids; None or missing file: no object
    scope: frozenset[int] | None = None  # our class ids this image is authoritative for; None = all


class ClassEval(msgspec.Struct, kw_only=True):
    name: str
    images: int  # images in scope with at least one label of the class
    instances: int
    precision: float
    recall: float
    map50: float
    map50_95: float
    # Raw score of the class's best (smoothed) F1 on these images (``training.best_f1_thresholds``):
    # reported only; the detector calibrates with the aidoor.json of the model's own training.
    best_f1_threshold: float | None = None


class Evaluation(msgspec.Struct, kw_only=True):
    model: str
    kind: str  # pt | openvino
    imgsz: int
    images: int
    metrics: dict[str, float]  # map50, map50_95, precision, recall (means over the classes with labels)
    per_class: list[ClassEval]
    class_mapping: dict[str, Any]
    inference_ms: float  # median per image (batch 1)
    wall_s: float


def _read_labels(label: Path | None, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    if label is None or not label.is_file():
        return np.zeros(0, int), np.zeros((0, 4))
    classes, boxes = [], []
    for line in label.read_text().splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        cls = int(float(parts[0]))
        cx, cy, w, h = (float(v) for v in parts[1:5])
        classes.append(cls)
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return np.array(classes, int), np.array(boxes, float).reshape(-1, 4)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def match_predictions(pred_cls: np.ndarray, true_cls: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """(n_pred, 10) bool: prediction i is a true positive at IoU threshold j (Ultralytics' rule:
    greedy by IoU, one label per prediction and one prediction per label, same class only).
    ``iou`` is (n_true, n_pred)."""
    correct = np.zeros((len(pred_cls), len(IOU_THRESHOLDS)), bool)
    if len(pred_cls) == 0 or len(true_cls) == 0:
        return correct
    iou = iou * (true_cls[:, None] == pred_cls[None, :])
    for i, threshold in enumerate(IOU_THRESHOLDS):
        matches = np.array(np.nonzero(iou >= threshold)).T
        if matches.shape[0]:
            if matches.shape[0] > 1:
                matches = matches[iou[matches[:, 0], matches[:, 1]].argsort()[::-1]]
                matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
                matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
            correct[matches[:, 1].astype(int), i] = True
    return correct


def _in_scope(classes: np.ndarray, scope: frozenset[int] | None) -> np.ndarray:
    if scope is None:
        return np.ones(len(classes), bool)
    return np.isin(classes, sorted(scope))


def score(
    per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, frozenset[int] | None]],
) -> tuple[dict[str, float], list[ClassEval]]:
    """Metrics from per-image (pred boxes, pred conf, pred our-class, true boxes, true class, scope)."""
    from ultralytics.utils.metrics import ap_per_class

    from detection_service.ml.training import best_f1_thresholds

    tps, confs, pcls, tcls = [], [], [], []
    images_with: dict[int, int] = {}
    for boxes, conf, cls, true_boxes, true_cls, scope in per_image:
        correct = match_predictions(cls, true_cls, _box_iou(true_boxes, boxes))
        keep = _in_scope(cls, scope)
        tps.append(correct[keep])
        confs.append(conf[keep])
        pcls.append(cls[keep])
        kept_true = true_cls[_in_scope(true_cls, scope)]
        tcls.append(kept_true)
        for c in set(kept_true.tolist()):
            images_with[c] = images_with.get(c, 0) + 1
    target_cls = np.concatenate(tcls) if tcls else np.zeros(0, int)
    if len(target_cls) == 0:
        return {"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0}, []
    tp = np.concatenate(tps) if tps else np.zeros((0, 10), bool)
    _, _, p, r, _, ap, classes, _, _, f1_curve, px, _ = ap_per_class(
        tp, np.concatenate(confs), np.concatenate(pcls), target_cls, names=dict(enumerate(MODEL_CLASSES))
    )
    thresholds = best_f1_thresholds(f1_curve, px, classes, dict(enumerate(MODEL_CLASSES)))
    counts = np.bincount(target_cls, minlength=len(MODEL_CLASSES))
    per_class = [
        ClassEval(
            name=MODEL_CLASSES[c],
            images=images_with.get(int(c), 0),
            instances=int(counts[c]),
            precision=float(p[i]),
            recall=float(r[i]),
            map50=float(ap[i, 0]),
            map50_95=float(ap[i].mean()),
            best_f1_threshold=thresholds.get(MODEL_CLASSES[c]),
        )
        for i, c in enumerate(classes)
    ]
    metrics = {
        "map50": float(ap[:, 0].mean()),
        "map50_95": float(ap.mean()),
        "precision": float(p.mean()),
        "recall": float(r.mean()),
    }
    return metrics, per_class


def evaluate_model(
    model_path: Path,
    images: list[EvalImage],
    imgsz: int | None = None,
    *,
    threads: int = 2,
    device: str = "cpu",
) -> Evaluation:
    """Evaluate any Ultralytics detection model (our .pt, a foreign .pt, an OpenVINO export
    folder) on ``images``; see the module docstring."""
    import cv2

    model_path = Path(model_path)
    kind = model_kind(model_path)
    if ultralytics_env.configured_data_dir() is None:
        ultralytics_env.configure_offline(model_path.parent / ".ultralytics")
    from ultralytics import YOLO

    started = time.monotonic()
    with _lock:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            model = YOLO(str(model_path), task="detect")
            names = dict(model.names)
            mapping = map_model_classes(names)
            size = int(imgsz or _stored_imgsz(model_path, model))
            lookup = np.full(max(names) + 1 if names else 1, -1, int)
            for model_id, ours in mapping.items():
                lookup[model_id] = ours
            per_image = []
            times: list[float] = []
            for item in images:
                frame = cv2.imread(str(item.image))
                if frame is None:
                    raise ValueError(f"cannot decode {item.image}")
                [result] = model.predict(
                    frame, imgsz=size, conf=VAL_CONF, iou=VAL_IOU, max_det=MAX_DET, device=device, verbose=False
                )
                times.append(float(result.speed.get("inference", 0.0)))
                boxes = result.boxes
                cls = lookup[boxes.cls.cpu().numpy().astype(int)] if len(boxes) else np.zeros(0, int)
                known = cls >= 0
                true_cls, true_boxes = _read_labels(item.label, frame.shape[1], frame.shape[0])
                per_image.append(
                    (
                        boxes.xyxy.cpu().numpy()[known] if len(boxes) else np.zeros((0, 4)),
                        boxes.conf.cpu().numpy()[known] if len(boxes) else np.zeros(0),
                        cls[known],
                        true_boxes,
                        true_cls,
                        item.scope,
                    )
                )
        finally:
            torch.set_num_threads(before)
    metrics, per_class = score(per_image)
    return Evaluation(
        model=str(model_path),
        kind=kind,
        imgsz=size,
        images=len(images),
        metrics=metrics,
        per_class=per_class,
        class_mapping=class_mapping_report(names),
        inference_ms=round(statistics.median(times), 3) if times else 0.0,
        wall_s=round(time.monotonic() - started, 2),
    )


def split_images(
    data_yaml: Path, split: str = "val", scopes: Mapping[str, Iterable[str]] | None = None
) -> list[EvalImage]:
    """The images of one split of a prepared dataset (our class ids). ``scopes``: file-name prefix
    (``<group>__``) -> class names the images of that group are authoritative for; images of a
    group not listed, or without a ``__`` prefix, are scored on every class."""
    spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    entry = spec.get(split)
    if not entry:
        raise ValueError(f"{data_yaml} has no {split!r} split")
    root = Path(spec.get("path") or Path(data_yaml).parent)
    scope_ids = {group: frozenset(CLASS_IDS[c] for c in classes) for group, classes in (scopes or {}).items()}
    images: list[EvalImage] = []
    for item in entry if isinstance(entry, list) else [entry]:
        folder = Path(item) if Path(item).is_absolute() else root / item
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            label = image.parent.parent / "labels" / f"{image.stem}.txt"
            group = image.name.split("__", 1)[0] if "__" in image.name else None
            images.append(EvalImage(image, label, scope_ids.get(group) if group else None))
    return images


def per_class_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: one row per class, one column group per model (``rows``: model label -> Evaluation-like dict)."""
    labels = list(rows)
    classes: list[str] = []
    for label in labels:
        for entry in rows[label].get("per_class") or []:
            if entry["name"] not in classes:
                classes.append(entry["name"])
    header = "| class | instances | " + " | ".join(f"{label} mAP50 | {label} mAP50-95" for label in labels) + " |"
    lines = [header, "|---|---:|" + "---:|---:|" * len(labels)]
    for name in classes:
        cells, instances = [], ""
        for label in labels:
            entry = next((e for e in rows[label].get("per_class") or [] if e["name"] == name), None)
            if entry is None:
                cells += ["", ""]
                continue
            instances = instances or str(entry["instances"])
            cells += [f"{entry['map50']:.4f}", f"{entry['map50_95']:.4f}"]
        lines.append(f"| {name} | {instances} | " + " | ".join(cells) + " |")
    overall = []
    for label in labels:
        m = rows[label].get("metrics") or {}
        overall += [f"{m.get('map50', 0.0):.4f}", f"{m.get('map50_95', 0.0):.4f}"]
    lines.append("| **all** | | " + " | ".join(overall) + " |")
    return "\n".join(lines)
