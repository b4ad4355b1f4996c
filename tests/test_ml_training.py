"""Training / evaluation / export code on real data (packages-v6, 26 images), fully offline.

Everything Ultralytics writes goes under tmp dirs: configure_offline() points its config, settings,
caches and runs there, once per session (Ultralytics reads YOLO_CONFIG_DIR once, at import).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from detection_service.ml.classes import MODEL_CLASSES, map_class_name
from tests.conftest import PACKAGES

pytestmark = pytest.mark.usefixtures("no_network")

needs_packages = pytest.mark.skipif(
    not (PACKAGES / "data.yaml").is_file(), reason=f"shared dataset {PACKAGES} not available"
)


# --------------------------------------------------------------------------- class mapping


def test_model_classes_are_fixed() -> None:
    assert MODEL_CLASSES == ("person", "package", "delivery_food", "mail")
    assert "unclassified" not in MODEL_CLASSES


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Box", "package"),
        ("box", "package"),
        ("PACKAGE", "package"),
        ("parcel", "package"),
        ("packages", "package"),
        ("person", "person"),
        ("People", "person"),
        ("human", "person"),
        ("food", "delivery_food"),
        ("delivery_food", "delivery_food"),
        ("Delivery", "delivery_food"),
        ("mail", "mail"),
        ("Letter", "mail"),
        ("envelope", "mail"),
        (" Box ", "package"),
        ("car", None),
        ("unclassified", None),
    ],
)
def test_map_class_name(name: str, expected: str | None) -> None:
    assert map_class_name(name) == expected


def test_map_class_name_extra_mapping() -> None:
    assert map_class_name("Courier", {"courier": "person"}) == "person"
    assert map_class_name("box", {"BOX": "mail"}) == "mail"  # extra mapping wins over defaults
    with pytest.raises(ValueError):
        map_class_name("courier", {"courier": "unclassified"})


# --------------------------------------------------------------------------- params


def test_train_params_profiles_and_validation() -> None:
    import msgspec

    from detection_service.ml.training import PROFILES, TrainParams

    default = TrainParams()
    assert default.epochs == PROFILES["default"]["epochs"] and default.imgsz == PROFILES["default"]["imgsz"]
    tiny = TrainParams(profile="tiny", epochs=3)
    assert tiny.epochs == 3 and tiny.imgsz == PROFILES["tiny"]["imgsz"]
    # Decoding (e.g. a Dagster config or API body) fills in the profile the same way.
    decoded = msgspec.json.decode(b'{"profile": "tiny", "sensitivity": "high"}', type=TrainParams)
    assert decoded.batch_size == PROFILES["tiny"]["batch_size"]
    assert decoded.min_confidence == pytest.approx(0.125)
    assert TrainParams(confidence_threshold=0.5, sensitivity="low").min_confidence == 0.5
    assert TrainParams(confidence_threshold=0.1, sensitivity="high").min_confidence == 0.05
    for device in ("cpu", "cuda", "cuda:1", "0", "0,1", "mps"):
        assert TrainParams(device=device).device == device
    bad_values = ({"confidence_threshold": 0.05}, {"imgsz": 100}, {"profile": "huge"}, {"overrides": {"amp": True}})
    for bad in (*bad_values, {"device": "gpu"}, {"device": "cuda:"}, {"device": "cpu; rm -rf /"}):
        with pytest.raises(ValueError):
            TrainParams(**bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"sensitivity": "extreme"}', type=TrainParams)


# --------------------------------------------------------------------------- offline environment


def test_configure_offline(offline_dir: Path) -> None:
    import os

    import ultralytics.utils as uu

    from detection_service.ml.ultralytics_env import configure_offline

    configure_offline(offline_dir)  # an app created by an earlier test may have pointed it at its own data dir

    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"
    assert uu.ONLINE is False and uu.AUTOINSTALL is False
    assert uu.SETTINGS["sync"] is False and uu.SETTINGS["runs_dir"] == str(offline_dir / "runs")
    font_dir = Path(uu.USER_CONFIG_DIR)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert (font_dir / name).stat().st_size > 10_000
    from ultralytics.utils.checks import check_font

    assert Path(check_font("Arial.ttf")).parent == font_dir  # found locally: no download


# --------------------------------------------------------------------------- dataset preparation


@needs_packages
def test_prepare_yolo_dataset(packages_yaml: Path) -> None:
    root = packages_yaml.parent
    data = yaml.safe_load(packages_yaml.read_text())
    assert data["path"] == str(root) and Path(data["path"]).is_absolute()
    assert data["names"] == dict(enumerate(MODEL_CLASSES)) and data["nc"] == 4
    assert (data["train"], data["val"], data["test"]) == ("train/images", "valid/images", "test/images")
    counts = {split: len(list((root / split / "images").iterdir())) for split in ("train", "valid", "test")}
    assert counts == {"train": 19, "valid": 4, "test": 3}
    assert sum(data["aidoor"]["splits"][s]["images"] for s in counts) == 26
    assert data["aidoor"]["class_mapping"] == {"package": "package"}

    image = next((root / "train" / "images").iterdir())
    assert image.is_symlink() and image.resolve().parent == (PACKAGES / "train" / "images").resolve()
    # packages-v6 class 0 ("package") becomes our id 1; the rest of each line is unchanged.
    instances = 0
    for split in counts:
        for label in (root / split / "labels").glob("*.txt"):
            source = (PACKAGES / split / "labels" / label.name).read_text().split("\n")
            for ours, theirs in zip(label.read_text().splitlines(), source):
                assert ours.split()[0] == str(MODEL_CLASSES.index("package"))
                assert [float(v) for v in ours.split()[1:]] == pytest.approx([float(v) for v in theirs.split()[1:]])
                instances += 1
    assert instances == sum(data["aidoor"]["splits"][s]["instances"] for s in counts) > 26

    # Re-preparing into the same folder replaces it; an unrelated folder is refused.
    from detection_service.ml.training import prepare_yolo_dataset

    assert prepare_yolo_dataset(PACKAGES, root) == packages_yaml
    other = root.parent / "not-ours"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        prepare_yolo_dataset(PACKAGES, other)
    assert (other / "keep.txt").exists()


@needs_packages
def test_prepare_rejects_unknown_classes(tmp_path: Path) -> None:
    from detection_service.ml.training import UnknownClassesError, prepare_yolo_dataset

    export = tmp_path / "export"
    export.mkdir()
    for split in ("train", "valid"):
        shutil.copytree(PACKAGES / split, export / split)  # the reader refuses folders linked from outside
    label = next((export / "train" / "labels").glob("*.txt"))
    label.write_text(label.read_text().rstrip("\n") + "\n1 0.5 0.5 0.2 0.2\n2 0.4 0.4 0.1 0.1\n")  # a car and a dog
    (export / "data.yaml").write_text(
        yaml.safe_dump({"train": "train/images", "val": "valid/images", "names": ["package", "Car", "dog"]})
    )
    with pytest.raises(UnknownClassesError) as err:
        prepare_yolo_dataset(export, tmp_path / "out")
    assert err.value.unknown == ["Car", "dog"]
    assert not (tmp_path / "out").exists()
    # An explicit mapping makes them known.
    out = prepare_yolo_dataset(export, tmp_path / "out", mapping={"car": "package", "dog": "person"})
    assert yaml.safe_load(out.read_text())["aidoor"]["class_mapping"]["dog"] == "person"


# --------------------------------------------------------------------------- train / evaluate / export


@pytest.fixture(scope="module")
def tiny_run(offline_dir: Path, packages_yaml: Path, tmp_path_factory: pytest.TempPathFactory, no_network: list[str]):
    from detection_service.ml.training import TrainParams, train

    progress = []
    out = tmp_path_factory.mktemp("tiny-run")
    params = TrainParams(profile="tiny", epochs=3, fraction=1.0, imgsz=64)
    result = train(packages_yaml, out, params, on_epoch=progress.append)
    return result, progress, params


@needs_packages
def test_tiny_training_end_to_end(tiny_run, no_network: list[str]) -> None:
    result, progress, params = tiny_run
    assert result.best_weights.is_file() and result.last_weights.is_file()
    assert result.best_weights.is_relative_to(result.run_dir)
    assert result.epochs_run == 3 and result.stopped_early is None
    assert set(result.metrics) == {"map50", "map50_95", "precision", "recall"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.names == list(MODEL_CLASSES)
    assert [row.name for row in result.per_class] == ["package"]  # only classes with instances
    assert result.per_class[0].images == 4 and result.per_class[0].instances > 0
    assert result.inference.min_confidence == params.min_confidence
    assert (result.best_weights.parent / "aidoor.json").is_file()
    assert (result.run_dir / "result.json").is_file()

    # One progress report per epoch, in order, with losses; validated epochs carry metrics.
    assert [p.epoch for p in progress] == [1, 2, 3]
    assert [p.progress_pct for p in progress][-1] == 100.0
    assert all(set(p.losses) == {"box", "cls", "dfl"} for p in progress)
    assert all(p.metrics is not None and "map50" in p.metrics for p in progress)
    assert progress[-1].elapsed_s <= result.wall_s + 1

    from detection_service.ml.training import per_class_markdown

    table = per_class_markdown(result)
    assert table.splitlines()[0].startswith("| class |") and "| package |" in table and "**all**" in table
    assert no_network == []


@needs_packages
def test_evaluate_and_export_offline(tiny_run, packages_yaml: Path, no_network: list[str]) -> None:
    import numpy as np
    import onnxruntime as ort

    from detection_service.ml.training import evaluate, export_onnx

    result, _, params = tiny_run
    evaluation = evaluate(result.best_weights, packages_yaml, split="test", imgsz=params.imgsz)
    assert evaluation.images == 3 and evaluation.split == "test"
    assert set(evaluation.metrics) == {"map50", "map50_95", "precision", "recall"}
    assert evaluation.inference_ms > 0

    onnx_path = export_onnx(result.best_weights, params.imgsz)
    assert onnx_path.suffix == ".onnx" and onnx_path.is_file()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape == [1, 3, params.imgsz, params.imgsz]
    (out,) = session.run(None, {inp.name: np.zeros((1, 3, params.imgsz, params.imgsz), np.float32)})
    assert out.shape[1] == 4 + len(MODEL_CLASSES)  # xywh + one score per model class
    assert no_network == []


@needs_packages
def test_cancel_stops_quickly_and_cleans_up(
    offline_dir: Path, packages_yaml: Path, tmp_path: Path, no_network: list[str]
) -> None:
    from detection_service.ml.training import TrainingCancelled, TrainParams, train

    progress = []
    asked_at: list[float] = []

    def should_cancel() -> bool:
        # Let the first epoch finish, then ask to stop (and remember when we first asked).
        if progress and not asked_at:
            asked_at.append(time.monotonic())
        return bool(progress)

    import torch

    threads_before = torch.get_num_threads()
    params = TrainParams(profile="tiny", epochs=50, fraction=1.0, batch_size=4, nbs=4)
    with pytest.raises(TrainingCancelled):
        train(packages_yaml, tmp_path, params, on_epoch=progress.append, should_cancel=should_cancel)
    assert len(progress) == 1  # stopped within the second epoch, not after 50
    # Latency from the first "stop" to the exception (clean-up included), not the whole test.
    assert time.monotonic() - asked_at[0] < 10
    assert not (tmp_path / "train").exists()  # no half run left behind
    assert torch.get_num_threads() == threads_before  # the process-wide setting is restored

    assert no_network == []


@needs_packages
def test_time_limit_stops_gracefully(offline_dir: Path, packages_yaml: Path, tmp_path: Path) -> None:
    from detection_service.ml.training import TrainParams, train

    progress = []
    params = TrainParams(profile="tiny", epochs=50, max_train_s=0.01, val_every_epoch=False)
    result = train(packages_yaml, tmp_path, params, on_epoch=progress.append)
    assert result.stopped_early == "time_limit" and result.epochs_run == 1
    assert result.best_weights.is_file() and set(result.metrics) == {"map50", "map50_95", "precision", "recall"}
    assert len(progress) == 1 and progress[0].metrics is not None  # the stopping epoch is validated


@needs_packages
def test_train_refuses_unprepared_dataset_and_remote_weights(tmp_path: Path, packages_yaml: Path) -> None:
    from detection_service.ml.training import TrainParams, train

    with pytest.raises(ValueError, match="prepare_yolo_dataset"):
        train(PACKAGES / "data.yaml", tmp_path, TrainParams(profile="tiny"))
    with pytest.raises(FileNotFoundError, match="no downloads"):
        train(packages_yaml, tmp_path, TrainParams(profile="tiny", model="yolo11n.pt"))
