"""INT8 post-training quantization of a detector, with an accuracy check against FP32.

``ensure_int8(weights, imgsz, data_yaml)`` makes an OpenVINO INT8 IR of ``weights`` (NNCF
post-training quantization through Ultralytics' exporter, calibrated on up to
``CALIBRATION_IMAGES`` images of the training split of ``data_yaml``, i.e. the model's own
training images), evaluates it and the FP32 weights on an evaluation split, and caches both the
IR and the verdict beside the other exports of the model (``export_cache_dir``):

    <cache>/<stem>.exports/<imgsz>-<sha256[:12]>/model_int8_openvino_model/
    <cache>/<stem>.exports/<imgsz>-<sha256[:12]>/int8-check.json

The detector's ``backend="auto"`` uses the INT8 IR only when that verdict says ``passed``:
``fp32_map50 - int8_map50 <= INT8_MAP50_TOLERANCE`` (0.01) on the evaluation split. Which data
set the check uses is a parameter (``data_yaml`` + ``split``, and ``evaluator`` for another
evaluation module); the verdict records it.

Why NNCF through OpenVINO rather than ONNX Runtime's ``quantize_static``: measured on this
machine (docs/pipeline.md, "Where the CPU goes"), the ORT QDQ model on ONNX Runtime cost 2.5-5x
the CPU of the NNCF IR (more than OpenVINO FP32), at the same accuracy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml

from detection_service.ml import ultralytics_env

log = logging.getLogger(__name__)

INT8_MAP50_TOLERANCE = 0.01
CALIBRATION_IMAGES = 300
INT8_DIR_NAME = "model_int8_openvino_model"
CHECK_NAME = "int8-check.json"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_lock = threading.Lock()  # one quantization at a time per process (torch threads are process-global)


class Int8Check(msgspec.Struct, kw_only=True):
    """The verdict of one INT8 artifact against its FP32 weights."""

    passed: bool
    fp32_map50: float
    int8_map50: float
    map50_delta: float  # fp32 - int8 (positive: INT8 is worse)
    tolerance: float
    data_yaml: str  # the evaluation data set ...
    split: str  # ... and split
    eval_images: int
    calibration_images: int
    imgsz: int
    weights_sha256: str
    method: str = "openvino-nncf"
    quantize_s: float = 0.0
    eval_s: float = 0.0


# --------------------------------------------------------------------------- cache layout


def weights_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()[:12]


def export_cache_dir(weights: Path, imgsz: int, cache_dir: Path | None = None) -> Path:
    """``<cache_dir or weights' dir>/<stem>.exports/<imgsz>-<sha256[:12]>``: where every export of
    ``weights`` at ``imgsz`` lives (exports have static input shapes, hence imgsz in the key)."""
    weights = Path(weights).resolve()
    return Path(cache_dir or weights.parent) / f"{weights.stem}.exports" / f"{imgsz}-{weights_digest(weights)}"


def int8_artifact(weights: Path, imgsz: int, cache_dir: Path | None = None) -> Path:
    return export_cache_dir(weights, imgsz, cache_dir) / INT8_DIR_NAME


def read_check(weights: Path, imgsz: int, cache_dir: Path | None = None) -> Int8Check | None:
    """The cached verdict for ``weights`` at ``imgsz`` (None: never checked, or unreadable)."""
    path = export_cache_dir(weights, imgsz, cache_dir) / CHECK_NAME
    try:
        return msgspec.json.decode(path.read_bytes(), type=Int8Check)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def usable_int8(weights: Path, imgsz: int, cache_dir: Path | None = None) -> tuple[Path | None, str]:
    """(INT8 IR, why) if a cached INT8 artifact passed its check, else (None, why not)."""
    check = read_check(weights, imgsz, cache_dir)
    if check is None:
        return None, "no INT8 export checked for these weights at this imgsz"
    if not check.passed:
        return None, (
            f"INT8 failed its check: mAP50 {check.int8_map50:.4f} vs FP32 {check.fp32_map50:.4f} "
            f"(delta {check.map50_delta:+.4f} > {check.tolerance})"
        )
    artifact = int8_artifact(weights, imgsz, cache_dir)
    if not (artifact / "model.xml").is_file():
        return None, "INT8 check passed but the IR is missing from the cache"
    return artifact, "passed"


# --------------------------------------------------------------------------- calibration set


def _split_images(data_yaml: Path, split: str) -> list[Path]:
    config = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(config.get("path") or Path(data_yaml).parent)
    if not root.is_absolute():
        root = (Path(data_yaml).parent / root).resolve()
    entries = config.get(split)
    if entries is None:
        raise ValueError(f"{data_yaml} has no '{split}' split")
    images: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        path = Path(entry) if Path(entry).is_absolute() else root / entry
        if path.is_dir():
            images += [p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES]
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip()
                if line:
                    p = Path(line.replace("./", str(path.parent) + os.sep, 1) if line.startswith("./") else line)
                    images.append(p if p.is_absolute() else root / p)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"{split} split of {data_yaml}: {path} does not exist")
    return sorted(set(images))


def _label_of(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def calibration_dataset(
    data_yaml: Path, out_dir: Path, limit: int = CALIBRATION_IMAGES, split: str = "train"
) -> tuple[Path, int]:
    """A data.yaml in ``out_dir`` whose ``val`` split is ``limit`` images spread evenly over the
    ``split`` split of ``data_yaml`` (symlinked with their labels: Ultralytics writes a label
    cache beside the labels, which must not touch the model's own data set). Returns
    (data.yaml, image count)."""
    images = _split_images(data_yaml, split)
    if not images:
        raise ValueError(f"no images in the {split} split of {data_yaml}")
    picks = [images[i] for i in np.unique(np.linspace(0, len(images) - 1, min(limit, len(images))).round().astype(int))]
    img_dir, lbl_dir = out_dir / "images", out_dir / "labels"
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(picks):
        name = f"{n:05d}_{image.name}"
        os.symlink(image.resolve(), img_dir / name)
        label = _label_of(image)
        if label.is_file():
            os.symlink(label.resolve(), (lbl_dir / name).with_suffix(".txt"))
    names = yaml.safe_load(Path(data_yaml).read_text()).get("names")
    out = out_dir / "data.yaml"
    out.write_text(yaml.safe_dump({"path": str(out_dir), "train": "images", "val": "images", "names": names}))
    return out, len(picks)


# --------------------------------------------------------------------------- quantize + check


def _set_torch_threads(n: int) -> int:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


def quantize_openvino(
    weights: Path, imgsz: int, data_yaml: Path, out_dir: Path, *, images: int = CALIBRATION_IMAGES
) -> tuple[Path, int]:
    """INT8 OpenVINO IR of ``weights`` in ``out_dir/model_int8_openvino_model`` (NNCF, calibrated on
    up to ``images`` training images of ``data_yaml``). Returns (IR folder, calibration images)."""
    weights = Path(weights).resolve()
    if ultralytics_env.configured_data_dir() is None:
        ultralytics_env.configure_offline(out_dir / ".ultralytics")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".int8-", dir=out_dir))
    try:
        calib_yaml, count = calibration_dataset(data_yaml, work / "calibration", images)
        staged = work / "model.pt"
        try:
            os.link(weights, staged)
        except OSError:
            shutil.copyfile(weights, staged)
        from ultralytics import YOLO

        before = _set_torch_threads(2)
        try:
            exported = YOLO(str(staged), task="detect").export(
                format="openvino",
                quantize=8,
                data=str(calib_yaml),
                imgsz=imgsz,
                batch=1,
                dynamic=False,
                device="cpu",
                verbose=False,
            )
        finally:
            _set_torch_threads(before)
        exported = Path(exported)
        if not (exported / "model.xml").is_file() and not list(exported.glob("*.xml")):
            raise RuntimeError(f"INT8 export reported {exported} but it holds no IR")
        config = weights.parent / "aidoor.json"
        if config.is_file():
            shutil.copyfile(config, exported / "aidoor.json")
        target = out_dir / INT8_DIR_NAME
        shutil.rmtree(target, ignore_errors=True)
        os.rename(exported, target)
        return target, count
    finally:
        shutil.rmtree(work, ignore_errors=True)


Evaluator = Callable[[Path, Path, str, int], float]


def evaluate_map50(model: Path, data_yaml: Path, split: str, imgsz: int) -> tuple[float, int]:
    """mAP50 of ``model`` (.pt or IR folder) on ``split`` of ``data_yaml`` (ml.training.evaluate)."""
    from detection_service.ml.training import evaluate

    result = evaluate(model, data_yaml, split, imgsz)
    return float(result.metrics["map50"]), int(result.images)


def check_int8(
    weights: Path,
    artifact: Path,
    data_yaml: Path,
    imgsz: int,
    *,
    split: str = "val",
    tolerance: float = INT8_MAP50_TOLERANCE,
    evaluator: Callable[[Path, Path, str, int], tuple[float, int]] = evaluate_map50,
    calibration_images: int = 0,
) -> Int8Check:
    """Evaluate FP32 ``weights`` and the INT8 ``artifact`` on the same split; passed when INT8 loses
    at most ``tolerance`` mAP50. ``evaluator(model, data_yaml, split, imgsz) -> (map50, images)``."""
    started = time.monotonic()
    fp32, images = evaluator(Path(weights), Path(data_yaml), split, imgsz)
    int8, _ = evaluator(Path(artifact), Path(data_yaml), split, imgsz)
    delta = round(fp32 - int8, 4)
    return Int8Check(
        passed=delta <= tolerance,
        fp32_map50=round(fp32, 4),
        int8_map50=round(int8, 4),
        map50_delta=delta,
        tolerance=tolerance,
        data_yaml=str(Path(data_yaml).resolve()),
        split=split,
        eval_images=images,
        calibration_images=calibration_images,
        imgsz=imgsz,
        weights_sha256=weights_digest(weights),
        eval_s=round(time.monotonic() - started, 1),
    )


def ensure_int8(
    weights: Path,
    imgsz: int,
    data_yaml: Path,
    cache_dir: Path | None = None,
    *,
    eval_data_yaml: Path | None = None,
    split: str = "val",
    images: int = CALIBRATION_IMAGES,
    tolerance: float = INT8_MAP50_TOLERANCE,
    evaluator: Callable[[Path, Path, str, int], tuple[float, int]] = evaluate_map50,
    force: bool = False,
) -> Int8Check:
    """Quantize ``weights`` (calibration: the training split of ``data_yaml``), check it on ``split``
    of ``eval_data_yaml`` (default: ``data_yaml``), cache IR + verdict; a cached verdict is returned
    as it is unless ``force``. The verdict is written last, so a crash leaves no half-made "passed"."""
    weights = Path(weights).resolve()
    target_dir = export_cache_dir(weights, imgsz, cache_dir)
    if not force and (cached := read_check(weights, imgsz, cache_dir)) is not None:
        return cached
    with _lock:
        started = time.monotonic()
        artifact, count = quantize_openvino(weights, imgsz, data_yaml, target_dir, images=images)
        quantize_s = time.monotonic() - started
        check = check_int8(
            weights,
            artifact,
            eval_data_yaml or data_yaml,
            imgsz,
            split=split,
            tolerance=tolerance,
            evaluator=evaluator,
            calibration_images=count,
        )
        check = msgspec.structs.replace(check, quantize_s=round(quantize_s, 1))
        tmp = target_dir / f".{CHECK_NAME}.{os.getpid()}"
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(check)))
        os.replace(tmp, target_dir / CHECK_NAME)
    log.info(
        "INT8 %s at %d: mAP50 %.4f vs FP32 %.4f (%s)",
        weights.name,
        imgsz,
        check.int8_map50,
        check.fp32_map50,
        "passed" if check.passed else "failed",
    )
    return check


def to_builtins(check: Int8Check) -> dict[str, Any]:
    return msgspec.to_builtins(check)


def int8_for_registered_model(
    weights: Path, imgsz: int, data_yaml: Path, cache_root: Path, model_id: str, **kwargs: Any
) -> Int8Check | None:
    """At registration (where the training data is at hand): INT8 IR + verdict in the export cache of
    the copy the detection service will run, ``<cache_root>/models/<model_id>/best.pt``
    (``registry.fetch_model``; service and Dagster share the data dir). Never raises: a model
    whose quantization fails is registered all the same and runs FP32 (None, logged)."""
    from detection_service.ml.registry import WEIGHTS_NAME

    try:
        with tempfile.TemporaryDirectory(prefix="aidoor-int8-") as tmp:
            named = Path(tmp) / WEIGHTS_NAME  # the export cache is keyed by stem + content + imgsz
            try:
                os.link(Path(weights).resolve(), named)
            except OSError:
                shutil.copyfile(weights, named)
            config = Path(weights).parent / "aidoor.json"
            if config.is_file():
                shutil.copyfile(config, named.parent / "aidoor.json")
            return ensure_int8(named, imgsz, data_yaml, Path(cache_root) / "models" / model_id, **kwargs)
    except Exception:
        log.exception("INT8 quantization of %s failed; it runs FP32", model_id)
        return None
