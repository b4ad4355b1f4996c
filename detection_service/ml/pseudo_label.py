"""Labels from the deployed model for captures nobody has verified (auto-collect, ``auto_label``).

They are model guesses: auto-collect keeps them in a folder of their own (``auto_labeled/``), never
listed in data.yaml, so they are neither trained on nor evaluated against as if verified.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.ml import registry
from detection_service.ml.evaluation import _stored_imgsz, map_model_classes
from detection_service.storage import ObjectStore
from schemas.db import Model

DEFAULT_CONFIDENCE = 0.5


def _thresholds(model_path: Path, names: dict[int, str]) -> dict[int, float]:
    """Raw threshold per model class id from the model's aidoor.json (its confidence threshold
    through each class's calibration), so the labels are what the model detects."""
    from detection_service.ml.training import raw_class_thresholds, read_inference_config

    # aidoor.json sits beside a .pt, or inside an export folder.
    anchor = model_path if model_path.is_file() else model_path / "aidoor.json"
    try:
        config = read_inference_config(anchor)
    except (ValueError, msgspec.DecodeError):
        config = None
    if config is None:
        return dict.fromkeys(names, DEFAULT_CONFIDENCE)
    raw = raw_class_thresholds(config, names.values())
    return {cid: raw[name] for cid, name in names.items()}


def model_labeler(model_path: Path, confidence: float | None = None) -> Callable[[bytes], str]:
    """image bytes -> YOLO label text (our class ids) of the model's boxes at its own confidence
    threshold, per class through its calibration (``confidence``: another threshold, raw, for every
    class); classes that map onto none of ours are left out."""
    import cv2
    from ultralytics import YOLO

    model = YOLO(str(model_path), task="detect")
    names = {int(k): str(v) for k, v in model.names.items()}
    mapping = map_model_classes(names)
    imgsz = _stored_imgsz(Path(model_path), model)
    per_class = dict.fromkeys(names, confidence) if confidence is not None else _thresholds(Path(model_path), names)
    conf = min(per_class.values(), default=DEFAULT_CONFIDENCE)

    def label(data: bytes) -> str:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            return ""
        [result] = model.predict(frame, imgsz=imgsz, conf=conf, verbose=False, device="cpu")
        lines = []
        for cls, score, box in zip(result.boxes.cls.tolist(), result.boxes.conf.tolist(), result.boxes.xywhn.tolist()):
            ours = mapping.get(int(cls))
            if ours is not None and score >= per_class[int(cls)]:
                lines.append(f"{ours} {box[0]:.6f} {box[1]:.6f} {box[2]:.6f} {box[3]:.6f}\n")
        return "".join(lines)

    return label


def deployed_model_labeler(
    session_factory: sessionmaker[Session], store: ObjectStore, cache_dir: Path
) -> tuple[str, Callable[[bytes], str]] | None:
    """(model_id, labeler) of the deployed model, or None when no model is deployed."""
    with session_factory() as session:
        row = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
        if row is None:
            return None
        model_id, model_path = row.model_id, row.model_path
    local = registry.fetch_model(store, model_id, model_path, Path(cache_dir))
    return model_id, model_labeler(local)
