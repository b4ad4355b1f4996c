"""Teacher labels: a model from elsewhere draws boxes for classes our data set does not label.

About a quarter of the doorbell images show people (couriers, residents) who are not labelled
there; trained as they are, they teach our model that a person is background. A COCO-trained
detector (``shared/models/yolov8n_coco_int8_openvino_model``, or any Ultralytics model a user
registers) labels them. Its boxes are a label *overlay*: a dataset version of its own (labels only
for the teacher's classes, provenance in its ``changes``), merged with the human labels at training
time (``detection_service/ml/mixing.py``), never written into them.

Class mapping of a foreign model onto ours is by name through ``map_class_name`` (COCO ``person``
-> person). COCO has no parcel, mail or take-away class, so everything else maps to nothing and is
ignored here (and reported as ``unclassified`` by the detector). Suitcases, handbags and backpacks
are carried items, not deliveries: mapping them to ``package`` would teach the model to flag
every visitor's bag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detection_service.ml.classes import CLASS_IDS, map_class_name

if TYPE_CHECKING:
    from detection_service.config import Settings

DEFAULT_THRESHOLD = 0.4  # the COCO teacher's person boxes under 0.4 are mostly reflections and posters
DEFAULT_IMGSZ = 640


def teacher_model_path(settings: Settings) -> Path | None:
    """The configured teacher (``settings.teacher_model``: ``AIDOOR_TEACHER_MODEL``, default the COCO
    model in shared/), or None when it is not there (``AIDOOR_TEACHER_MODEL=off`` disables teacher
    labelling)."""
    path = settings.teacher_model
    return path if path is not None and path.exists() else None


def class_mapping(names: dict[int, str], wanted: Iterable[str] | None = None) -> dict[int, int]:
    """Foreign class id -> our class id, for the classes that map by name (and are ``wanted``)."""
    wanted_set = set(wanted) if wanted is not None else set(CLASS_IDS)
    mapping: dict[int, int] = {}
    for cid, name in names.items():
        ours = map_class_name(str(name))
        if ours is not None and ours in wanted_set:
            mapping[int(cid)] = CLASS_IDS[ours]
    return mapping


def fingerprint(model_path: Path) -> str:
    """sha256 of the model's weight files (a .pt, or every file of an export folder)."""
    model_path = Path(model_path)
    files = sorted(p for p in model_path.rglob("*") if p.is_file()) if model_path.is_dir() else [model_path]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_teacher(model_path: Path) -> Any:
    from ultralytics import YOLO

    return YOLO(str(model_path), task="detect")


def labelling_settings(model_path: Path, model: Any) -> tuple[float, int, dict[str, float]]:
    """(confidence threshold, imgsz, per-class raw thresholds) at which ``model`` labels images as a
    teacher: for one of our models, what it reports as a detection at the size it was trained at
    (``aidoor.json``: its threshold through each class's calibration, ``raw_class_thresholds``);
    for a .pt from elsewhere, the size it was trained at; otherwise the COCO teacher's defaults.
    A class without a per-class entry is labelled at the plain threshold."""
    from detection_service.ml.training import raw_class_thresholds, read_inference_config

    config = read_inference_config(Path(model_path)) if Path(model_path).is_file() else None
    if config is not None:
        names = [str(v) for v in (getattr(model, "names", None) or {}).values()]
        return config.confidence_threshold, config.imgsz, raw_class_thresholds(config, names)
    imgsz = (getattr(model, "overrides", None) or {}).get("imgsz")
    return DEFAULT_THRESHOLD, int(imgsz) if isinstance(imgsz, int) else DEFAULT_IMGSZ, {}


def label_images(
    model: Any,
    images: list[Path],
    classes: Iterable[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    imgsz: int = DEFAULT_IMGSZ,
    class_thresholds: dict[str, float] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[Path, list[str]]:
    """YOLO label lines (our class ids, normalised cx cy w h) per image, for ``classes`` only.

    ``model`` is a loaded Ultralytics model (``load_teacher``). A box is kept at or above its
    class's entry in ``class_thresholds`` (the model's class names, raw scores), else ``threshold``.
    Images with no box get an empty list: the teacher looked and saw none of those classes, which
    is a label too.
    """
    names = {int(k): str(v) for k, v in model.names.items()}
    mapping = class_mapping(names, classes)
    if not mapping:
        raise ValueError(
            f"the teacher knows none of {sorted(set(classes))} (its classes: {list(model.names.values())[:10]}...)"
        )
    per_class = {cid: (class_thresholds or {}).get(names[cid], threshold) for cid in mapping}
    out: dict[Path, list[str]] = {}
    total = len(images)
    for done, image in enumerate(images, 1):
        result = model.predict(
            str(image), imgsz=imgsz, conf=min(per_class.values()), classes=sorted(mapping), verbose=False
        )[0]
        lines = []
        if result.boxes is not None and len(result.boxes):
            boxes = zip(result.boxes.cls.tolist(), result.boxes.conf.tolist(), result.boxes.xywhn.tolist())
            for cls, score, box in boxes:
                if score < per_class[int(cls)]:
                    continue
                cx, cy, w, h = (min(1.0, max(0.0, v)) for v in box)
                if w > 0 and h > 0:
                    lines.append(f"{mapping[int(cls)]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        out[image] = lines
        if on_progress is not None and (done % 25 == 0 or done == total):
            on_progress(done, total)
    return out


def missing_classes(data_yaml: Path) -> list[str]:
    """Our classes a prepared dataset (``prepare_yolo_dataset``) has no train box of."""
    import yaml

    spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    train = ((spec.get("aidoor") or {}).get("splits") or {}).get("train") or {}
    return [name for name in CLASS_IDS if not train.get(f"instances_{name}")]


def write_overlay(
    model: Any,
    data_yaml: Path,
    out_dir: Path,
    classes: Iterable[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    imgsz: int = DEFAULT_IMGSZ,
) -> tuple[Path, int]:
    """Teacher labels for every image of a prepared dataset folder, as a prepared folder of their own
    (same image names, symlinked; labels = teacher boxes only): a label overlay for ``merge_datasets``.
    Returns (its data.yaml, boxes drawn)."""
    import shutil

    import yaml

    from detection_service.ml.classes import MODEL_CLASSES
    from detection_service.ml.mixing import SPLIT_KEYS, split_images

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    spec: dict[str, Any] = {"path": str(out_dir.resolve())}
    boxes = 0
    for key, folder in SPLIT_KEYS:
        images = split_images(data_yaml, key)
        if not images:
            continue
        (out_dir / folder / "images").mkdir(parents=True)
        (out_dir / folder / "labels").mkdir(parents=True)
        for image, lines in label_images(model, images, classes, threshold=threshold, imgsz=imgsz).items():
            (out_dir / folder / "images" / image.name).symlink_to(image.resolve())
            (out_dir / folder / "labels" / f"{image.stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
            boxes += len(lines)
        spec[key] = f"{folder}/images"
    spec.update(
        {
            "nc": len(MODEL_CLASSES),
            "names": dict(enumerate(MODEL_CLASSES)),
            "aidoor": {"teacher": {"base": str(data_yaml), "threshold": threshold, "classes": list(classes)}},
        }
    )
    (out_dir / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out_dir / "data.yaml", boxes
