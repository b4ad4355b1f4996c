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


def _confidence(model_path: Path) -> float:
    for config in (model_path.parent / "aidoor.json", model_path / "aidoor.json"):
        if config.is_file():
            try:
                return float(msgspec.json.decode(config.read_bytes())["confidence_threshold"])
            except (KeyError, ValueError, TypeError, msgspec.DecodeError):
                pass
    return DEFAULT_CONFIDENCE


def model_labeler(model_path: Path, confidence: float | None = None) -> Callable[[bytes], str]:
    """image bytes -> YOLO label text (our class ids) of the model's boxes at its own confidence
    threshold; classes that map onto none of ours are left out."""
    import cv2
    from ultralytics import YOLO

    model = YOLO(str(model_path), task="detect")
    mapping = map_model_classes(dict(model.names))
    imgsz = _stored_imgsz(Path(model_path), model)
    conf = confidence if confidence is not None else _confidence(Path(model_path))

    def label(data: bytes) -> str:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            return ""
        [result] = model.predict(frame, imgsz=imgsz, conf=conf, verbose=False, device="cpu")
        lines = []
        for cls, box in zip(result.boxes.cls.tolist(), result.boxes.xywhn.tolist()):
            ours = mapping.get(int(cls))
            if ours is not None:
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
