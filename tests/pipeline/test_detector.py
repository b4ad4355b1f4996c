"""Detector backends (torch / ONNX Runtime / OpenVINO) on a tiny random-init YOLO, export cache,
``auto`` fallback, hot swap, and the class-mapping rule. Fully offline."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from detection_service.pipeline import detector as detector_mod
from detection_service.pipeline.detector import (
    UNCLASSIFIED,
    Detection,
    DetectorError,
    DetectorHolder,
    classify_detections,
    create_detector,
    object_type_for,
)
from tests.pipeline.conftest import TINY_IMGSZ

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def detectors(tiny_weights: Path, export_cache: Path) -> dict[str, detector_mod.Detector]:
    return {b: create_detector(tiny_weights, b, TINY_IMGSZ, export_cache) for b in ("torch", "onnx", "openvino")}


def _match(a: list[Detection], b: list[Detection]) -> float:
    """Share of boxes in ``a`` with a twin in ``b`` (same class, IoU > 0.95, conf within 0.01)."""
    from detection_service.pipeline.events import iou

    hits = sum(
        any(
            x.class_id == y.class_id and iou(x.xyxy, y.xyxy) > 0.95 and abs(x.confidence - y.confidence) < 0.01
            for y in b
        )
        for x in a
    )
    return hits / max(1, len(a))


def test_backends_agree(detectors: dict[str, detector_mod.Detector]) -> None:
    import torch

    x = torch.from_numpy(np.random.default_rng(1).random((1, 3, TINY_IMGSZ, TINY_IMGSZ), dtype=np.float32))
    raw = {}
    for name, det in detectors.items():
        assert det.backend == name and det.imgsz == TINY_IMGSZ and det.fallback_reason is None
        assert [det.names[i] for i in sorted(det.names)] == ["person", "package", "delivery_food", "mail"]
        out = det._model.predictor.model(x)  # the raw network output (boxes + class scores)
        raw[name] = (out[0] if isinstance(out, (list, tuple)) else out).detach().cpu().numpy()
    for name in ("onnx", "openvino"):
        assert raw[name].shape == raw["torch"].shape
        np.testing.assert_allclose(raw[name], raw["torch"], rtol=1e-3, atol=2e-2)

    image = np.random.default_rng(2).integers(0, 255, (TINY_IMGSZ, TINY_IMGSZ, 3), dtype=np.uint8)
    found = {name: det.detect(image, conf=0.25) for name, det in detectors.items()}
    assert found["torch"], "the biased head must produce boxes"
    for name in ("onnx", "openvino"):
        assert abs(len(found[name]) - len(found["torch"])) <= max(1, len(found["torch"]) // 10)
        assert _match(found["torch"], found[name]) >= 0.9
    for name, det in detectors.items():
        assert det.inferences >= 1 and det.last_inference_ms > 0
        assert det.info()["backend"] == name


def test_export_cache_and_auto_fallback(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> Path:
        raise RuntimeError("openvino export exploded")

    monkeypatch.setattr(detector_mod, "export_openvino", broken)
    det = create_detector(tiny_weights, "auto", TINY_IMGSZ, tmp_path)
    assert det.backend == "onnx"
    assert "openvino" in (det.fallback_reason or "") and "exploded" in det.fallback_reason
    exported = list(tmp_path.glob("tiny.exports/64-*/model.onnx"))
    assert len(exported) == 1
    assert not list(tmp_path.glob("tiny.exports/64-*/.staging-*"))  # staging cleaned up

    # Cached: a second build does not export again.
    monkeypatch.setattr(detector_mod, "export_onnx", broken)
    again = create_detector(tiny_weights, "onnx", TINY_IMGSZ, tmp_path)
    assert again.artifact == exported[0]
    # An explicit backend does not fall back.
    with pytest.raises(DetectorError, match="openvino"):
        create_detector(tiny_weights, "openvino", TINY_IMGSZ, tmp_path)
    # The exported file itself can be loaded directly.
    assert create_detector(exported[0], "auto", TINY_IMGSZ).backend == "onnx"


def test_holder_swaps_while_detecting(
    detectors: dict[str, detector_mod.Detector], tiny_weights: Path, export_cache: Path
) -> None:
    holder = DetectorHolder()
    assert holder.info() == {"loaded": False, "generation": 0, "load_error": None}
    first = holder.load(tiny_weights, "torch", TINY_IMGSZ, export_cache, model_id="m1")
    image = np.zeros((48, 80, 3), np.uint8)
    errors: list[BaseException] = []
    stop = threading.Event()
    calls = 0

    def loop() -> None:
        nonlocal calls
        while not stop.is_set():
            current = holder.get()
            try:
                current.detect(image, 0.25)
                calls += 1
            except DetectorError:
                if holder.get() is current:  # only the swapped-out detector may refuse
                    errors.append(AssertionError("active detector refused"))
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        second = holder.load(tiny_weights, "onnx", TINY_IMGSZ, export_cache, model_id="m2")
        with pytest.raises(DetectorError):  # the load failure leaves the active model in place
            holder.load(export_cache / "nope.pt")
        assert holder.get() is second and "not found" in (holder.info()["load_error"] or "")
    finally:
        stop.set()
        thread.join()
    assert not errors and calls > 0
    info = holder.info()
    assert info["model_id"] == "m2" and info["backend"] == "onnx" and info["generation"] == 2
    with pytest.raises(DetectorError):
        first.detect(image)


@pytest.mark.parametrize(
    ("name", "conf", "expected"),
    [
        ("person", 0.9, "person"),
        ("package", 0.5, "package"),  # at the threshold counts
        ("mail", 0.49, UNCLASSIFIED),  # between floor (0.25) and threshold
        ("delivery_food", 0.25, UNCLASSIFIED),  # at the floor counts
        ("person", 0.24, None),  # under the floor: dropped
        ("car", 0.95, UNCLASSIFIED),  # not one of our classes
        ("car", 0.1, None),
    ],
)
def test_class_mapping_rule(name: str, conf: float, expected: str | None) -> None:
    assert object_type_for(name, conf, threshold=0.5, floor=0.25) == expected


def test_classify_detections_uses_sensitivity_floor() -> None:
    dets = [Detection(0, 0, 1, 1, 0, "person", c) for c in (0.9, 0.4, 0.2, 0.1)]
    # medium: floor = 0.5 * 0.5; high: 0.125; low: floor = threshold (nothing unclassified by confidence)
    assert [d.object_type for d in classify_detections(dets, 0.5, "medium")] == ["person", UNCLASSIFIED]
    assert [d.object_type for d in classify_detections(dets, 0.5, "high")] == ["person", UNCLASSIFIED, UNCLASSIFIED]
    assert [d.object_type for d in classify_detections(dets, 0.5, "low")] == ["person"]
    # the floor never goes under MIN_FLOOR (0.05)
    low = [Detection(0, 0, 1, 1, 0, "person", c) for c in (0.2, 0.06, 0.04)]
    assert [d.object_type for d in classify_detections(low, 0.1, "high")] == ["person", UNCLASSIFIED]
