"""Per-class score calibration (issue #9): one confidence threshold means the same for every class.

The map (raw 0 -> 0, t_c -> 0.5, 1 -> 1) and its inverse; the best-F1 operating point per class;
the detector base class reporting calibrated scores (and asking its backend for the right raw
floor) on fixed boxes; and a real memorised model (eight single-person photos from shared/, no
augmentation, fully offline) whose ``train()``/``evaluate()`` find the person operating point,
write it to ``aidoor.json``, and whose detector and labels use it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from detection_service.ml.classes import CLASS_IDS, MODEL_CLASSES
from detection_service.ml.training import (
    CLASS_THRESHOLD_RANGE,
    InferenceConfig,
    best_f1_thresholds,
    calibrate,
    raw_class_thresholds,
    read_inference_config,
    uncalibrate,
    write_inference_config,
)
from detection_service.pipeline.batching import BatchingDetector
from detection_service.pipeline.detector import UNCLASSIFIED, Detection, Detector, classify_detections
from tests.conftest import SHARED_DATASETS

# Ultralytics configured offline first: importing it otherwise checks the network.
pytestmark = pytest.mark.usefixtures("offline_dir", "no_network")
PERSONS = SHARED_DATASETS / "person-capston2-v11"
needs_persons = pytest.mark.skipif(not PERSONS.is_dir(), reason="shared person dataset missing")


# --------------------------------------------------------------------------- the map


@pytest.mark.parametrize("t", [0.1, 0.27, 0.5, 0.6])
def test_map_is_monotone_with_fixed_points_and_inverts(t: float) -> None:
    assert calibrate(0.0, t) == 0.0 and calibrate(t, t) == pytest.approx(0.5) and calibrate(1.0, t) == 1.0
    raw = np.linspace(0, 1, 401)
    cal = np.array([calibrate(float(r), t) for r in raw])
    assert np.all(np.diff(cal) > 0)  # strictly monotone: the ranking of boxes is unchanged
    for r, c in zip(raw, cal):
        assert uncalibrate(float(c), t) == pytest.approx(float(r), abs=1e-9)
    assert calibrate(1.7, t) == 1.0 and calibrate(-0.2, t) == 0.0  # out-of-range scores clip


def test_no_threshold_is_the_identity() -> None:
    for v in (0.0, 0.05, 0.3, 0.5, 0.99):
        assert calibrate(v, None) == v and uncalibrate(v, None) == v


def test_weak_class_below_half_raw_passes_half_calibrated() -> None:
    # The starter model: a courier at raw 0.28 with person t=0.27 is over 0.5 calibrated; a parcel
    # at raw 0.47 with package t=0.48 is just under it.
    assert calibrate(0.28, 0.27) > 0.5 > calibrate(0.47, 0.48)
    assert calibrate(0.28, 0.27) < 0.7  # a stricter user threshold still drops it


def test_best_f1_threshold_per_class_clipped_and_only_with_evidence() -> None:
    px = np.linspace(0, 1, 1000)

    def peak(at: float, width: float = 0.08) -> np.ndarray:
        return np.exp(-(((px - at) / width) ** 2))

    curves = np.stack([peak(0.27), peak(0.9), peak(0.02), np.zeros(1000), peak(0.48)])
    names = dict(enumerate(["a", "b", "c", "d", "e"]))
    found = best_f1_thresholds(curves, px, [0, 1, 2, 3, 4], names)
    lo, hi = CLASS_THRESHOLD_RANGE
    assert found["a"] == pytest.approx(0.27, abs=0.01) and found["e"] == pytest.approx(0.48, abs=0.01)
    assert found["b"] == hi and found["c"] == lo  # clipped into the sane range
    assert "d" not in found  # F1 0 everywhere: no operating point
    # Rows follow the class index, not the row number.
    assert best_f1_thresholds(curves[:1], px, [3], names) == {"d": pytest.approx(0.27, abs=0.01)}


def test_raw_class_thresholds_go_through_the_model_threshold() -> None:
    config = InferenceConfig(
        classes=list(MODEL_CLASSES),
        imgsz=64,
        confidence_threshold=0.5,
        sensitivity="medium",
        min_confidence=0.25,
        class_thresholds={"person": 0.27},
    )
    assert raw_class_thresholds(config, ["person", "package"]) == {"person": 0.27, "package": 0.5}
    stricter = msgspec.structs.replace(config, confidence_threshold=0.7)
    assert raw_class_thresholds(stricter, ["person"])["person"] == pytest.approx(0.27 + 0.4 * 0.73)
    assert raw_class_thresholds(None, ["person"]) == {}


def test_old_aidoor_json_without_class_thresholds_still_loads(tmp_path: Path) -> None:
    old = {"classes": list(MODEL_CLASSES), "imgsz": 256, "confidence_threshold": 0.5, "sensitivity": "medium"}
    (tmp_path / "aidoor.json").write_text(msgspec.json.encode({**old, "min_confidence": 0.25}).decode())
    config = read_inference_config(tmp_path / "best.pt")
    assert config is not None and config.imgsz == 256 and config.class_thresholds == {}
    write_inference_config(tmp_path / "best.pt", msgspec.structs.replace(config, class_thresholds={"person": 0.3}))
    assert read_inference_config(tmp_path / "best.pt").class_thresholds == {"person": 0.3}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the detector base class


class FixedBoxes(Detector):
    """A backend that answers fixed raw boxes at or above the raw floor it is asked for."""

    def __init__(self, boxes: list[Detection], thresholds: dict[str, float]) -> None:
        super().__init__()
        self.backend, self.model_id, self.imgsz = "fixed", "fixed", 64
        self.names = dict(enumerate(MODEL_CLASSES))
        self.boxes = boxes
        self.class_thresholds = thresholds
        self.asked: list[float] = []

    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]:
        self.asked.append(conf)
        return [d for d in self.boxes if d.confidence >= conf]


def _box(name: str, raw: float) -> Detection:
    return Detection(0, 0, 10, 10, CLASS_IDS[name], name, raw)


FRAME = np.zeros((64, 64, 3), np.uint8)
BOXES = [_box("person", 0.30), _box("person", 0.10), _box("package", 0.47), _box("mail", 0.40)]


def test_detector_reports_calibrated_scores_and_the_right_object_type() -> None:
    detector = FixedBoxes(BOXES, {"person": 0.27, "package": 0.48})
    floor = 0.25  # medium sensitivity at threshold 0.5
    found = detector.detect(FRAME, conf=floor)
    # The backend is asked for the lowest raw score any class needs: person's 2 * 0.25 * 0.27.
    assert detector.asked == [pytest.approx(0.135)]
    by_raw = {d.raw_confidence if d.raw_confidence is not None else d.confidence: d for d in found}
    assert set(by_raw) == {0.30, 0.47, 0.40}  # the person at raw 0.10 is under the floor (0.185)
    person, package, mail = by_raw[0.30], by_raw[0.47], by_raw[0.40]
    assert person.confidence == pytest.approx(calibrate(0.30, 0.27)) and person.raw_confidence == 0.30
    assert package.confidence == pytest.approx(calibrate(0.47, 0.48))
    assert mail.confidence == 0.40 and mail.raw_confidence is None  # no threshold: raw, unchanged

    types = {d.raw_confidence or d.confidence: d.object_type for d in classify_detections(found, 0.5, "medium")}
    # Raw 0.30 is under 0.5 but over person's best-F1 point: a person, not "unclassified".
    assert types == {0.30: "person", 0.47: UNCLASSIFIED, 0.40: UNCLASSIFIED}
    strict = {d.raw_confidence: d.object_type for d in classify_detections(found, 0.7, "medium")}
    # 0.7 is stricter for every class: the courier is no person, and at raw 0.30 it is under that
    # threshold's floor (0.35) in raw terms, so it is dropped rather than unclassified.
    assert 0.30 not in strict and strict[0.47] == UNCLASSIFIED
    assert detector.info()["class_thresholds"] == {"person": 0.27, "package": 0.48}

    # Without calibration the same boxes are what they were: the courier is unclassified.
    plain = FixedBoxes(BOXES, {})
    raw = classify_detections(plain.detect(FRAME, conf=floor), 0.5, "medium")
    assert plain.asked == [floor] and {d.confidence: d.object_type for d in raw}[0.30] == UNCLASSIFIED


def test_calibration_never_turns_a_raw_noise_box_into_an_unclassified_object() -> None:
    detector = FixedBoxes(
        [_box("person", 0.20), _box("person", 0.26), _box("package", 0.30)], {"person": 0.27, "package": 0.48}
    )
    found = detector.detect(FRAME, conf=0.25)
    # Raw 0.20 calibrates to 0.37, over the floor, but is under the floor raw: dropped, not
    # unclassified. Raw 0.26 (calibrated 0.48) and the package at raw 0.30 stay unclassified.
    types = {d.raw_confidence: d.object_type for d in classify_detections(found, 0.5, "medium")}
    assert types == {0.26: UNCLASSIFIED, 0.30: UNCLASSIFIED}
    # The same raw 0.20 box is a person once its class's point is lower (calibrated >= 0.5).
    promoted = FixedBoxes([_box("person", 0.20)], {"person": 0.18}).detect(FRAME, conf=0.25)
    assert [d.object_type for d in classify_detections(promoted, 0.5, "medium")] == ["person"]


def test_batched_paths_calibrate_too() -> None:
    detector = FixedBoxes(BOXES, {"person": 0.27, "package": 0.48})
    single = detector.detect(FRAME, conf=0.5)
    assert [d.raw_confidence for d in single] == [0.30]  # only the courier is at 0.5 calibrated
    assert detector.detect_batch([FRAME, FRAME], conf=0.5) == [single, single]
    batcher = BatchingDetector(max_batch=2, gather_s=0.0)
    try:
        assert batcher.detect(1, detector, FRAME, 0.5) == single
    finally:
        batcher.close()


# --------------------------------------------------------------------------- a real memorised model


@pytest.fixture(scope="module")
def memorised(offline_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A person model memorised on eight single-person photos (train = valid): (TrainResult, data.yaml)."""
    from detection_service.ml.training import TrainParams, train
    from tests.test_fine_tune import NO_AUGMENTATION, _label, _prepared, _single_person_photos

    people = [(image, _label(PERSONS, image)) for image in _single_person_photos(8)]
    root = tmp_path_factory.mktemp("calibration")
    data_yaml = _prepared(root / "people", {"train": people, "valid": people})
    params = TrainParams(
        profile="tiny",
        imgsz=128,
        batch_size=4,
        nbs=4,
        fraction=1.0,
        epochs=80,
        lr0=0.01,
        warmup_epochs=1.0,
        val_every_epoch=False,
        max_train_s=300,
        overrides=NO_AUGMENTATION,
    )
    return train(data_yaml, root / "run", params), data_yaml


@needs_persons
@pytest.mark.timeout(600)
def test_training_and_evaluation_find_the_operating_point(memorised, tmp_path: Path) -> None:
    from detection_service.ml.training import evaluate, per_class_markdown
    from detection_service.pipeline.detector import create_detector

    result, data_yaml = memorised
    lo, hi = CLASS_THRESHOLD_RANGE
    # Only person has valid instances: only person gets an operating point.
    assert set(result.class_thresholds) == {"person"} and lo <= result.class_thresholds["person"] <= hi
    assert result.inference.class_thresholds == result.class_thresholds
    stored = read_inference_config(result.best_weights)
    assert stored is not None and stored.class_thresholds == result.class_thresholds
    table = per_class_markdown(result)
    person_row = next(line for line in table.splitlines() if line.startswith("| person |"))
    assert person_row.endswith(f"| {result.class_thresholds['person']:.3f} |")

    evaluation = evaluate(result.best_weights, data_yaml, "val", 128)
    assert set(evaluation.class_thresholds) == {"person"}
    assert lo <= evaluation.class_thresholds["person"] <= hi

    # The detector built from those weights calibrates with aidoor.json's operating point.
    t = result.class_thresholds["person"]
    detector = create_detector(result.best_weights, "torch", 128, tmp_path / "exports")
    try:
        assert detector.class_thresholds == {"person": t}
        photos = sorted((data_yaml.parent / "valid" / "images").iterdir())
        import cv2

        found = [d for p in photos for d in detector.detect(cv2.imread(str(p)), conf=0.05)]
        people = [d for d in found if d.class_name == "person"]
        assert len(people) >= 6
        for d in people:
            assert d.raw_confidence is not None and d.confidence == pytest.approx(calibrate(d.raw_confidence, t))
    finally:
        detector.close()

    # An old model folder (aidoor.json without the key) still builds, with raw scores.
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    shutil.copyfile(result.best_weights, old_dir / "best.pt")
    config = msgspec.to_builtins(stored)
    del config["class_thresholds"]
    (old_dir / "aidoor.json").write_text(msgspec.json.encode(config).decode())
    old = create_detector(old_dir / "best.pt", "torch", cache_dir=tmp_path / "exports-old")
    try:
        assert old.class_thresholds == {} and old.imgsz == 128
        image = cv2.imread(str(photos[0]))
        assert all(d.raw_confidence is None for d in old.detect(image, conf=0.05))
    finally:
        old.close()


@needs_persons
def test_the_model_labels_each_class_at_its_operating_point(memorised) -> None:
    from detection_service.ml import teacher
    from detection_service.ml.pseudo_label import model_labeler

    result, data_yaml = memorised
    model = teacher.load_teacher(result.best_weights)
    threshold, imgsz, per_class = teacher.labelling_settings(result.best_weights, model)
    t = result.class_thresholds["person"]
    assert threshold == 0.5 and imgsz == 128 and per_class["person"] == pytest.approx(t)
    assert per_class["package"] == 0.5  # no operating point: the plain threshold
    photos = sorted((data_yaml.parent / "valid" / "images").iterdir())

    def count(thresholds: dict[str, float]) -> int:
        labels = teacher.label_images(
            model, photos, ["person"], threshold=threshold, imgsz=imgsz, class_thresholds=thresholds
        )
        return sum(len(lines) for lines in labels.values())

    at_t = count(per_class)
    assert at_t >= 6
    assert count({"person": 0.999}) < at_t  # the per-class threshold is what filters the boxes

    labeler = model_labeler(result.best_weights)
    auto = [labeler(p.read_bytes()) for p in photos]
    assert sum(len(text.splitlines()) for text in auto) == at_t  # auto-label = teacher labels = detections
