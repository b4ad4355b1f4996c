"""Fixtures for the pipeline tests: offline Ultralytics, a tiny random-init YOLO, synthetic videos,
a scripted detector (a test double that returns prepared boxes), a migrated database and a local
object store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from detection_service.pipeline.detector import Detection, Detector

TINY_IMGSZ = 64


@pytest.fixture(scope="session")
def offline(offline_dir: Path) -> Path:
    """Ultralytics configured offline (the session's one configuration, tests/conftest.py)."""
    return offline_dir


@pytest.fixture(scope="session")
def tiny_weights(offline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolo11n with our 4 classes, random init. The class biases are raised so the untrained
    head still produces boxes (backend parity needs something to compare)."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from detection_service.ml.classes import MODEL_CLASSES

    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.model = DetectionModel("yolo11n.yaml", nc=len(MODEL_CLASSES), verbose=False)
    model.model.names = dict(enumerate(MODEL_CLASSES))
    for branch in model.model.model[-1].cv3:
        branch[-1].bias.data[:] = torch.tensor([2.0, 0.5, -3.0, -3.0])
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    model.save(str(path))
    return path


def write_video(path: Path, frames: int, fps: float = 30.0, size: tuple[int, int] = (96, 64)) -> Path:
    """An MJPG .avi whose frame i can be read back with ``frame_index`` (a 16x16 corner patch
    encodes i; the rest is a static gradient, so the motion gate sees no motion)."""
    width, height = size
    base = np.tile(np.linspace(30, 200, width, dtype=np.uint8), (height, 1))
    base = cv2.merge([base, base, base])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        image = base.copy()
        image[:16, :16, 0] = (i % 32) * 8
        image[:16, :16, 1] = (i // 32) * 8
        writer.write(image)
    writer.release()
    return path


def frame_index(image: np.ndarray) -> int:
    patch = image[2:14, 2:14].reshape(-1, 3).mean(axis=0)
    return int(round(patch[0] / 8)) + 32 * int(round(patch[1] / 8))


def det(x1: float, y1: float, x2: float, y2: float, name: str = "person", conf: float = 0.9) -> Detection:
    from detection_service.ml.classes import CLASS_IDS

    return Detection(x1, y1, x2, y2, CLASS_IDS.get(name, 99), name, conf)


class ScriptedDetector(Detector):
    """Returns ``script(call_index, seconds_since_first_call)``; records the ``conf`` it was given."""

    def __init__(self, script: Callable[[int, float], list[Detection]], model_id: str = "scripted") -> None:
        super().__init__()
        self.backend = "scripted"
        self.model_id = model_id
        self.imgsz = 64
        self.names = {0: "person", 1: "package", 2: "delivery_food", 3: "mail"}
        self.script = script
        self.confs: list[float] = []
        self._t0: float | None = None

    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        self.confs.append(conf)
        return [d for d in self.script(self.inferences, now - self._t0) if d.confidence >= conf]


@pytest.fixture
def session_factory(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    from detection_service.database import make_engine, make_session_factory

    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path):
    from detection_service.storage import LocalObjectStore

    s = LocalObjectStore(tmp_path / "objects", "ai-door-system", "http://127.0.0.1:8000", b"test-key")
    s.ensure_bucket()
    return s


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
