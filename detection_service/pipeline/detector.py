"""Object detectors (torch, ONNX Runtime, OpenVINO), the class-mapping rule, and hot model swaps.

All three backends run through Ultralytics' ``YOLO`` so pre-processing (letterbox) and NMS are the
same code whichever runtime executes the network; only the forward pass differs. Exports are
made with ``detection_service.ml.training.export_onnx/export_openvino`` (the one export code the
Dagster assets use too) and cached beside the weights, keyed by the weights' content and imgsz
(exports have static input shapes). The INT8 backend runs an OpenVINO INT8 IR that
``detection_service.ml.quantize.ensure_int8`` made and checked (it needs the training data, so it
is made where that is at hand, not here); ``auto`` uses it only when its check passed.

Call ``ultralytics_env.configure_offline(data_dir)`` before the first detector is created.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detection_service.ml import quantize
from detection_service.ml.classes import CLASS_IDS, MODEL_CLASSES
from detection_service.ml.training import (
    calibrate,
    export_onnx,
    export_openvino,
    min_confidence,
    read_inference_config,
    uncalibrate,
)

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino", "int8"]  # int8 = OpenVINO INT8 IR (ml.quantize)
BackendChoice = Literal["auto", "torch", "onnx", "openvino", "int8"]
UNCLASSIFIED = "unclassified"
# Fastest first on this CPU (docs/pipeline.md has the numbers); "int8" goes first when a checked
# INT8 export passed (quantize.usable_int8).
AUTO_ORDER: tuple[Backend, ...] = ("openvino", "onnx", "torch")
TORCH_THREADS = 2


class DetectorError(RuntimeError):
    """No detector could be built from the given weights."""


@dataclass(frozen=True, slots=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    class_name: str
    confidence: float  # calibrated (Detector.class_thresholds); the raw score where none applies
    object_type: str | None = None  # set by classify_detections
    raw_confidence: float | None = None  # the model's own score, when calibration changed it (debugging)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


# --------------------------------------------------------------------------- class mapping


def object_type_for(class_name: str, confidence: float, threshold: float, floor: float) -> str | None:
    """The rule (docs/pipeline.md): a model class at or above ``threshold`` is that type; between
    ``floor`` and ``threshold``, or a class that is not one of ours, is ``unclassified``; below
    ``floor`` the detection is dropped (None)."""
    if confidence < floor:
        return None
    if class_name in CLASS_IDS and confidence >= threshold:
        return class_name
    return UNCLASSIFIED


def classify_detections(detections: list[Detection], threshold: float, sensitivity: str) -> list[Detection]:
    """Detections with ``object_type`` set; those under min_confidence(threshold, sensitivity) removed."""
    floor = min_confidence(threshold, sensitivity)
    out = []
    for det in detections:
        object_type = object_type_for(det.class_name, det.confidence, threshold, floor)
        if object_type == UNCLASSIFIED and det.raw_confidence is not None and det.raw_confidence < floor:
            # Calibration may promote a box to its class, never a noise box to an object: a weak
            # class's boxes under the floor in raw terms are dropped as before calibration
            # (measured: without this, person boxes down to raw 0.12 made 21 false `unclassified`
            # events in 250 s of aidoor bench events).
            continue
        if object_type is not None:
            out.append(replace(det, object_type=object_type))
    return out


# --------------------------------------------------------------------------- detectors


class Detector(ABC):
    """``detect`` is thread-safe (one inference at a time per detector).

    Scores come back calibrated per class (``class_thresholds``: class name -> the raw score of its
    best F1, from the model's ``aidoor.json``; see ``training.calibrate``): that raw score becomes
    0.5, so one confidence threshold means the same for every class. Classes without an entry, and
    detectors without any (a model from elsewhere, the truth detector), keep raw scores. Backends
    implement ``_detect`` in raw scores; the calibration lives here so every backend gets it.
    """

    backend: str
    model_id: str
    imgsz: int
    names: dict[int, str]
    weights: Path | None = None
    fallback_reason: str | None = None  # why "auto" did not get its first choice
    int8_status: str | None = None  # why auto did (not) pick INT8 (None: not considered)

    def __init__(self) -> None:
        self.last_inference_ms = 0.0
        self.inferences = 0
        self._total_ms = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self.class_thresholds: dict[str, float] = {}

    def detect(self, frame_bgr: np.ndarray, conf: float = 0.05) -> list[Detection]:
        """Boxes in frame pixels with calibrated confidence >= ``conf``, unclassified (see
        classify_detections)."""
        with self._lock:
            if self._closed:
                raise DetectorError(f"detector {self.model_id} ({self.backend}) was unloaded")
            started = time.perf_counter()
            detections = self._calibrated(self._detect(frame_bgr, self.raw_floor(conf)), conf)
            elapsed = (time.perf_counter() - started) * 1000
            self.last_inference_ms = elapsed
            self.inferences += 1
            self._total_ms += elapsed
        return detections

    def raw_floor(self, conf: float) -> float:
        """The lowest raw score that calibrates to >= ``conf`` for any of the model's classes: what
        the backend is asked for (a class without a threshold needs ``conf`` itself)."""
        if not self.class_thresholds:
            return conf
        names = set(self.names.values()) if getattr(self, "names", None) else set()
        floors = [uncalibrate(conf, self.class_thresholds.get(name)) for name in names | set(self.class_thresholds)]
        return min(floors)

    def _calibrated(self, detections: list[Detection], conf: float) -> list[Detection]:
        """Calibrated scores; boxes under ``conf`` (calibrated) dropped."""
        out = []
        for det in detections:
            threshold = self.class_thresholds.get(det.class_name)
            if threshold is not None:
                det = replace(det, confidence=calibrate(det.confidence, threshold), raw_confidence=det.confidence)
            if det.confidence >= conf - 1e-9:  # a box exactly at the floor survives the round trip
                out.append(det)
        return out

    def detect_batch(self, frames_bgr: list[np.ndarray], conf: float = 0.05) -> list[list[Detection]]:
        """``detect`` for several frames in one call (one batched forward pass where the backend
        has one: ``_detect_batch``); the boxes of each frame in order. Counts one inference per
        frame; ``last_inference_ms`` is the whole batch's time."""
        if not frames_bgr:
            return []
        with self._lock:
            if self._closed:
                raise DetectorError(f"detector {self.model_id} ({self.backend}) was unloaded")
            started = time.perf_counter()
            raw = self.raw_floor(conf)
            results = self._detect_batch(frames_bgr, raw) if len(frames_bgr) > 1 else [self._detect(frames_bgr[0], raw)]
            results = [self._calibrated(boxes, conf) for boxes in results]
            elapsed = (time.perf_counter() - started) * 1000
            self.last_inference_ms = elapsed
            self.inferences += len(frames_bgr)
            self._total_ms += elapsed
        return results

    def _detect_batch(self, frames_bgr: list[np.ndarray], conf: float) -> list[list[Detection]]:
        """One frame after the other; backends with a batched forward pass override this."""
        return [self._detect(frame, conf) for frame in frames_bgr]

    @property
    def mean_inference_ms(self) -> float:
        return self._total_ms / self.inferences if self.inferences else 0.0

    def close(self) -> None:
        """Release the model; waits for a running ``detect`` to finish first."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "imgsz": self.imgsz,
            "weights": str(self.weights) if self.weights else None,
            "classes": [self.names[i] for i in sorted(self.names)],
            "class_thresholds": dict(self.class_thresholds),
            "fallback_reason": self.fallback_reason,
            "int8_status": self.int8_status,
            "last_inference_ms": round(self.last_inference_ms, 2),
            "mean_inference_ms": round(self.mean_inference_ms, 2),
            "inferences": self.inferences,
        }

    @abstractmethod
    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]: ...

    def _release(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing to release
        pass


class UltralyticsDetector(Detector):
    def __init__(
        self,
        artifact: Path,
        backend: Backend,
        imgsz: int,
        *,
        model_id: str,
        weights: Path | None = None,
        iou: float = 0.7,
        max_det: int = 100,
    ) -> None:
        super().__init__()
        from ultralytics import YOLO

        self.backend = backend
        self.imgsz = imgsz
        self.model_id = model_id
        self.weights = weights or artifact
        self.artifact = artifact
        self.iou = iou
        self.max_det = max_det
        if backend == "torch":
            _torch_threads()
        self._model: Any = YOLO(str(artifact), task="detect")
        # Warm-up: builds the predictor (and compiles OpenVINO / ORT graphs) before the first frame.
        self._detect(np.zeros((imgsz, imgsz, 3), np.uint8), 0.5)
        self.names = {int(k): str(v) for k, v in self._model.names.items()}

    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]:
        if self.backend == "torch":
            _torch_threads()  # cheap; training code in this process may have changed it
        result = self._model.predict(
            frame_bgr, imgsz=self.imgsz, conf=conf, iou=self.iou, max_det=self.max_det, device="cpu", verbose=False
        )[0]
        return _boxes_of(result)

    def _detect_batch(self, frames_bgr: list[np.ndarray], conf: float) -> list[list[Detection]]:
        # Exports are made with a static batch of 1: only torch gets the list as one batch.
        if self.backend != "torch":
            return super()._detect_batch(frames_bgr, conf)
        _torch_threads()
        results = self._model.predict(
            frames_bgr, imgsz=self.imgsz, conf=conf, iou=self.iou, max_det=self.max_det, device="cpu", verbose=False
        )
        return [_boxes_of(result) for result in results]

    def _release(self) -> None:
        self._model = None


def _boxes_of(result: Any) -> list[Detection]:
    """One Ultralytics result's boxes as Detections (frame pixels)."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return []
    xyxy = boxes.xyxy.cpu().numpy()
    confs = boxes.conf.cpu().numpy()
    classes = boxes.cls.cpu().numpy().astype(int)
    names = result.names
    return [
        Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(c), str(names.get(int(c), c)), float(s))
        for b, s, c in zip(xyxy, confs, classes)
    ]


def _torch_threads() -> None:
    import torch

    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


# --------------------------------------------------------------------------- building


def export_cached(weights: Path, backend: Backend, imgsz: int, cache_dir: Path | None = None) -> Path:
    """The ``backend`` artifact for ``weights`` at ``imgsz``, exported on first use.

    Cache layout: ``<cache_dir or weights' dir>/<stem>.exports/<imgsz>-<sha256[:12]>/model.onnx``
    (or ``model_openvino_model/``). Exports happen in a private staging dir and are renamed into
    place, so two processes exporting at once both end up with a complete artifact.
    """
    weights = Path(weights).resolve()
    if backend == "torch":
        return weights
    target_dir = quantize.export_cache_dir(weights, imgsz, cache_dir)
    if backend == "int8":
        artifact = quantize.int8_artifact(weights, imgsz, cache_dir)
        if not (artifact / "model.xml").is_file():
            raise DetectorError(
                f"no INT8 export of {weights.name} at imgsz {imgsz} in {target_dir} "
                "(made by ml.quantize.ensure_int8 where the training data is)"
            )
        return artifact
    name = "model.onnx" if backend == "onnx" else "model_openvino_model"
    target = target_dir / name
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target_dir))
    try:
        staged = staging / "model.pt"
        try:
            os.link(weights, staged)
        except OSError:
            shutil.copyfile(weights, staged)
        config = weights.parent / "aidoor.json"
        if config.is_file():
            shutil.copyfile(config, staging / "aidoor.json")
        started = time.perf_counter()
        out = export_onnx(staged, imgsz) if backend == "onnx" else export_openvino(staged, imgsz)
        log.info("exported %s to %s in %.1f s", weights.name, backend, time.perf_counter() - started)
        try:
            os.rename(out, target)
        except OSError:
            if not target.exists():  # lost a race to another exporter: theirs is as good as ours
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _backend_of(weights: Path) -> Backend:
    if weights.is_dir() and weights.name.endswith("_openvino_model"):
        return "openvino"
    if weights.suffix == ".onnx":
        return "onnx"
    if weights.suffix == ".pt":
        return "torch"
    raise DetectorError(f"unsupported weights {weights}: need a .pt, .onnx or *_openvino_model directory")


def create_detector(
    weights: Path,
    backend: BackendChoice = "auto",
    imgsz: int | None = None,
    cache_dir: Path | None = None,
    *,
    model_id: str | None = None,
) -> Detector:
    """Build a detector for ``weights`` (a .pt; an .onnx or OpenVINO dir is used as it is).

    ``imgsz`` defaults to the model's ``aidoor.json`` (``read_inference_config``), else 640.
    ``auto`` tries the INT8 IR if its accuracy check passed (``quantize.usable_int8``), then
    OpenVINO, then ONNX Runtime, then torch, logging why a choice failed; an explicit backend fails
    with DetectorError instead of falling back (explicit ``int8`` runs a cached INT8 IR even if it
    failed its check, with a warning).
    """
    weights = Path(weights).resolve()
    if not weights.exists():
        raise DetectorError(f"weights not found: {weights}")
    native = _backend_of(weights)
    config_anchor = weights / "model.xml" if native == "openvino" else weights
    config = read_inference_config(config_anchor)
    imgsz = imgsz or (config.imgsz if config else 640)
    model_id = model_id or (weights.name.removesuffix("_openvino_model") if native == "openvino" else weights.stem)
    int8_status = None
    if native == "torch":
        order: tuple[Backend, ...] = AUTO_ORDER if backend == "auto" else (backend,)
        if backend in ("auto", "int8"):
            usable, int8_status = quantize.usable_int8(weights, imgsz, cache_dir)
            if backend == "auto" and usable is not None:
                order = ("int8", *AUTO_ORDER)
            elif backend == "int8" and usable is None:
                log.warning("running %s on INT8 although: %s", weights.name, int8_status)
    elif backend in ("auto", native):
        order = (native,)
    else:
        raise DetectorError(f"{weights.name} is a {native} model; it cannot run on {backend}")
    failures: list[str] = []
    for choice in order:
        try:
            artifact = export_cached(weights, choice, imgsz, cache_dir) if native == "torch" else weights
            detector = UltralyticsDetector(artifact, choice, imgsz, model_id=model_id, weights=weights)
        except Exception as exc:  # import errors, export errors, runtime load errors alike
            reason = f"{choice}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("detector backend unavailable for %s (%s)", weights.name, reason)
            failures.append(reason)
            continue
        if failures:
            detector.fallback_reason = "; ".join(failures)
        detector.int8_status = int8_status
        # Calibration travels in aidoor.json (exports carry a copy); a model without one is raw.
        detector.class_thresholds = dict(config.class_thresholds) if config else {}
        unknown = sorted(set(detector.names.values()) - set(MODEL_CLASSES))
        if unknown:
            log.warning(
                "model %s has classes outside %s; they will be reported as unclassified: %s",
                model_id,
                MODEL_CLASSES,
                unknown[:10],
            )
        log.info("detector %s ready: backend=%s imgsz=%d", model_id, choice, imgsz)
        return detector
    raise DetectorError(f"no backend could load {weights}: " + "; ".join(failures))


class DetectorHolder:
    """The active detector, swappable while the pipeline runs (deploy without restart).

    ``load`` builds (and exports) the new detector first, while the old one keeps serving; the
    swap itself is a pointer change under a lock; the old detector is closed after any inference
    in progress on it has finished.
    """

    def __init__(self, detector: Detector | None = None) -> None:
        self._detector = detector
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one build at a time
        self.generation = 0
        self.load_error: str | None = None

    def get(self) -> Detector | None:
        return self._detector

    def swap(self, detector: Detector | None) -> Detector | None:
        """Make ``detector`` active; returns (after closing it) the one it replaced."""
        with self._lock:
            old, self._detector = self._detector, detector
            self.generation += 1
        if old is not None and old is not detector:
            old.close()
        return old

    def load(
        self,
        weights: Path,
        backend: BackendChoice = "auto",
        imgsz: int | None = None,
        cache_dir: Path | None = None,
        *,
        model_id: str | None = None,
    ) -> Detector:
        with self._load_lock:
            try:
                detector = create_detector(weights, backend, imgsz, cache_dir, model_id=model_id)
            except Exception as exc:
                self.load_error = str(exc)
                raise
            self.load_error = None
            self.swap(detector)
            return detector

    def unload(self) -> None:
        self.swap(None)

    def info(self) -> dict[str, Any]:
        detector = self._detector
        base: dict[str, Any] = {
            "loaded": detector is not None,
            "generation": self.generation,
            "load_error": self.load_error,
        }
        return {**base, **detector.info()} if detector is not None else base
