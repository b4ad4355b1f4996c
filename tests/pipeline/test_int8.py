"""INT8 post-training quantization (ml.quantize) and ``backend="auto"`` preferring it only when
its accuracy check passed. A tiny random-init YOLO at imgsz 64, calibrated on a few training
images of the shared packages-v6 export; fully offline."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
import yaml

from detection_service.ml import quantize
from detection_service.pipeline import detector as detector_mod
from detection_service.pipeline.detector import DetectorError, create_detector
from tests.conftest import PACKAGES
from tests.pipeline.conftest import TINY_IMGSZ

pytestmark = [
    pytest.mark.skipif(not (PACKAGES / "data.yaml").is_file(), reason=f"{PACKAGES} not available"),
    pytest.mark.usefixtures("no_network", "offline"),
]
CALIBRATION = 8


@pytest.fixture(scope="module")
def int8_cache(tiny_weights: Path, packages_yaml: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("int8-cache")
    check = quantize.ensure_int8(tiny_weights, TINY_IMGSZ, packages_yaml, cache, images=CALIBRATION)
    return cache, check


def test_calibration_set_is_spread_over_the_training_split(packages_yaml: Path, tmp_path: Path) -> None:
    train = sorted(p.name for p in (packages_yaml.parent / "train" / "images").iterdir())
    caches = set((packages_yaml.parent / "train").glob("*.cache"))  # a training in this session may have made one
    calib_yaml, count = quantize.calibration_dataset(packages_yaml, tmp_path / "calib", limit=5)
    assert count == 5
    picked = sorted((tmp_path / "calib" / "images").iterdir())
    originals = [p.name.split("_", 1)[1] for p in picked]
    assert all(name in train for name in originals)  # training images only, never valid/test
    assert originals[0] == train[0] and originals[-1] == train[-1]  # spread, not the first five
    assert all((tmp_path / "calib" / "labels" / p.with_suffix(".txt").name).exists() for p in picked)
    config = yaml.safe_load(calib_yaml.read_text())
    assert config["val"] == "images" and config["names"] == yaml.safe_load(packages_yaml.read_text())["names"]
    # The model's own data set is left alone (Ultralytics writes label caches beside the labels).
    assert set((packages_yaml.parent / "train").glob("*.cache")) == caches
    # More than there are: all of them, once.
    _, everything = quantize.calibration_dataset(packages_yaml, tmp_path / "all", limit=10_000)
    assert everything == len(train)


def test_ensure_int8_quantizes_checks_and_caches(
    int8_cache, tiny_weights: Path, packages_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, check = int8_cache
    artifact = quantize.int8_artifact(tiny_weights, TINY_IMGSZ, cache)
    xml = (artifact / "model.xml").read_text()
    assert "FakeQuantize" in xml  # really quantized, not an FP32 copy
    assert (artifact / "metadata.yaml").is_file()
    assert check.calibration_images == CALIBRATION and check.imgsz == TINY_IMGSZ
    assert check.split == "val" and check.eval_images == 4 and check.data_yaml == str(packages_yaml)
    assert check.map50_delta == pytest.approx(check.fp32_map50 - check.int8_map50, abs=1e-4)
    assert check.passed == (check.map50_delta <= quantize.INT8_MAP50_TOLERANCE)
    assert check.weights_sha256 == quantize.weights_digest(tiny_weights)
    assert quantize.read_check(tiny_weights, TINY_IMGSZ, cache) == check
    # The recorded INT8 figure is that of the cached IR itself.
    from detection_service.ml.training import evaluate

    again = evaluate(artifact, packages_yaml, "val", TINY_IMGSZ)
    assert round(again.metrics["map50"], 4) == check.int8_map50

    # Cached: a second call neither quantizes nor evaluates.
    def boom(*_: object, **__: object) -> object:
        raise AssertionError("re-quantized a cached model")

    monkeypatch.setattr(quantize, "quantize_openvino", boom)
    assert quantize.ensure_int8(tiny_weights, TINY_IMGSZ, packages_yaml, cache) == check
    # Another imgsz is another export (static shapes): nothing cached for it.
    assert quantize.read_check(tiny_weights, 96, cache) is None


def test_int8_detector_runs_like_fp32(int8_cache, tiny_weights: Path) -> None:
    cache, check = int8_cache
    if not check.passed:
        pytest.fail(f"tiny INT8 model failed its own check: {check}")
    det = create_detector(tiny_weights, "auto", TINY_IMGSZ, cache)
    assert det.backend == "int8" and det.int8_status == "passed"
    assert det.artifact == quantize.int8_artifact(tiny_weights, TINY_IMGSZ, cache)
    fp32 = create_detector(tiny_weights, "openvino", TINY_IMGSZ, cache)
    image = np.random.default_rng(2).integers(0, 255, (TINY_IMGSZ, TINY_IMGSZ, 3), dtype=np.uint8)
    a, b = det.detect(image, 0.25), fp32.detect(image, 0.25)
    assert b, "the biased head must produce boxes"
    assert abs(len(a) - len(b)) <= max(2, len(b) // 4)
    assert det.info()["backend"] == "int8"
    det.close()
    fp32.close()


def _write_check(cache: Path, weights: Path, check: quantize.Int8Check) -> None:
    path = quantize.export_cache_dir(weights, TINY_IMGSZ, cache) / quantize.CHECK_NAME
    path.write_bytes(msgspec.json.encode(check))


def test_auto_prefers_int8_only_when_its_check_passed(
    int8_cache, tiny_weights: Path, packages_yaml: Path, tmp_path: Path
) -> None:
    cache, _ = int8_cache
    artifact = quantize.int8_artifact(tiny_weights, TINY_IMGSZ, cache)
    original = quantize.read_check(tiny_weights, TINY_IMGSZ, cache)
    try:
        # A real check of the same IR that cannot pass (INT8 would have to beat FP32 by > 1 mAP50).
        strict = quantize.check_int8(tiny_weights, artifact, packages_yaml, TINY_IMGSZ, tolerance=-1.0)
        assert not strict.passed and strict.int8_map50 == original.int8_map50
        _write_check(cache, tiny_weights, strict)
        det = create_detector(tiny_weights, "auto", TINY_IMGSZ, cache)
        assert det.backend == "openvino"
        assert det.int8_status is not None and det.int8_status.startswith("INT8 failed its check")
        det.close()
        # Explicitly asked for, a failed INT8 still runs (with a warning).
        assert create_detector(tiny_weights, "int8", TINY_IMGSZ, cache).backend == "int8"

        # A passing verdict whose IR went missing: auto falls back, and says why.
        lenient = quantize.check_int8(tiny_weights, artifact, packages_yaml, TINY_IMGSZ, tolerance=1.0)
        assert lenient.passed
        _write_check(cache, tiny_weights, lenient)
        hidden = artifact.with_name("hidden")
        artifact.rename(hidden)
        try:
            det = create_detector(tiny_weights, "auto", TINY_IMGSZ, cache)
            assert det.backend == "openvino" and "missing" in (det.int8_status or "")
            det.close()
            with pytest.raises(DetectorError, match="no INT8 export"):
                create_detector(tiny_weights, "int8", TINY_IMGSZ, cache)
        finally:
            hidden.rename(artifact)
        assert create_detector(tiny_weights, "auto", TINY_IMGSZ, cache).backend == "int8"
    finally:
        _write_check(cache, tiny_weights, original)

    # Never checked (another cache): no INT8, FP32 OpenVINO as before.
    det = create_detector(tiny_weights, "auto", TINY_IMGSZ, tmp_path)
    assert det.backend == "openvino" and "no INT8 export checked" in (det.int8_status or "")
    det.close()


def test_detector_module_uses_the_shared_cache_layout(tiny_weights: Path, tmp_path: Path) -> None:
    onnx = detector_mod.export_cached(tiny_weights, "onnx", TINY_IMGSZ, tmp_path)
    assert onnx.parent == quantize.export_cache_dir(tiny_weights, TINY_IMGSZ, tmp_path)


def test_int8_made_at_registration_is_found_by_the_service(
    tiny_weights: Path, packages_yaml: Path, tmp_path: Path
) -> None:
    import shutil

    cache_root = tmp_path / "cache"
    check = quantize.int8_for_registered_model(
        tiny_weights, TINY_IMGSZ, packages_yaml, cache_root, "yolo_v7", images=4, tolerance=1.0
    )
    assert check is not None and check.passed and check.calibration_images == 4
    # What registry.fetch_model later puts there for the detection service (same content, best.pt):
    fetched = cache_root / "models" / "yolo_v7" / "best.pt"
    shutil.copyfile(tiny_weights, fetched)
    det = create_detector(fetched, "auto", TINY_IMGSZ)  # default cache: beside the weights
    assert det.backend == "int8"
    det.close()
    # A failure does not break registration: None, and the model runs FP32.
    assert (
        quantize.int8_for_registered_model(tiny_weights, TINY_IMGSZ, tmp_path / "missing.yaml", cache_root, "yolo_v8")
        is None
    )
    assert create_detector(tiny_weights, "auto", TINY_IMGSZ, cache_root / "models" / "yolo_v8").backend == "openvino"
