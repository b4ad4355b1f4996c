"""Teacher labels, training mixes and near-duplicates: the data the starter model learns people from.

The fast tests use synthetic images; the asset test runs the real COCO teacher from shared/models
on a few real doorbell frames (some with a courier in them) and trains one tiny epoch on the mix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import dagster as dg
import msgspec
import numpy as np
import pytest
import yaml

from detection_service.ml.classes import MODEL_CLASSES
from detection_service.ml.mixing import MixSource, keep, merge_datasets, novel_val
from detection_service.ml.near_duplicates import dhash, min_distances, near_duplicates
from tests.conftest import SHARED_DATASETS
from tests.dagster_helpers import ephemeral_instance

DOORBELL = SHARED_DATASETS / "doorbell-camera-alert-v4"
PERSON = SHARED_DATASETS / "person-capston2-v11"
TEACHER = SHARED_DATASETS.parent / "models" / "yolov8n_coco_int8_openvino_model"
NAMES = dict(enumerate(MODEL_CLASSES))


def _image(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _dataset(root: Path, splits: dict[str, dict[str, str]], seeds: dict[str, int]) -> Path:
    """A prepared dataset folder: {split folder: {stem: label text}}; images from ``seeds``."""
    spec = {"path": str(root), "nc": len(MODEL_CLASSES), "names": NAMES}
    for folder, items in splits.items():
        (root / folder / "images").mkdir(parents=True)
        (root / folder / "labels").mkdir(parents=True)
        for stem, label in items.items():
            cv2.imwrite(str(root / folder / "images" / f"{stem}.jpg"), _image(seeds[stem]))
            (root / folder / "labels" / f"{stem}.txt").write_text(label)
        spec["train" if folder == "train" else "val"] = f"{folder}/images"
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    return root / "data.yaml"


def test_dhash_finds_re_encoded_copies_not_other_images(tmp_path: Path):
    base = _image(1, 256)
    cv2.imwrite(str(tmp_path / "a.jpg"), base, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(tmp_path / "a_low.jpg"), cv2.resize(base, (200, 200)), [cv2.IMWRITE_JPEG_QUALITY, 40])
    cv2.imwrite(str(tmp_path / "b.jpg"), _image(2, 256))
    assert dhash(base).shape == (32,)  # 256 bits
    distances = min_distances(
        np.stack([dhash(tmp_path / "a_low.jpg"), dhash(tmp_path / "b.jpg")]), np.stack([dhash(tmp_path / "a.jpg")])
    )
    assert distances[0] <= 5 < distances[1]
    assert near_duplicates([tmp_path / "a_low.jpg", tmp_path / "b.jpg"], [tmp_path / "a.jpg"]) == {
        tmp_path / "a_low.jpg"
    }


def test_merge_unions_labels_per_image_within_a_group_only(tmp_path: Path):
    seeds = {"door1": 1, "door2": 2, "v1": 3, "p1": 4, "pv": 5}
    human = _dataset(
        tmp_path / "door",
        {"train": {"door1": "1 0.5 0.5 0.2 0.2\n", "door2": ""}, "valid": {"v1": "1 0.4 0.4 0.1 0.1\n"}},
        seeds,
    )
    teacher = _dataset(
        tmp_path / "door-teacher",
        {"train": {"door1": "0 0.2 0.5 0.1 0.6\n", "door2": "0 0.7 0.5 0.2 0.8\n"}, "valid": {"v1": ""}},
        seeds,
    )
    people = _dataset(
        tmp_path / "people", {"train": {"p1": "0 0.5 0.5 0.3 0.9\n"}, "valid": {"pv": "0 0.5 0.5 0.3 0.9\n"}}, seeds
    )
    # A person dataset image named like a doorbell one must not merge with it.
    shutil.copy(
        tmp_path / "people" / "train" / "images" / "p1.jpg", tmp_path / "people" / "train" / "images" / "door1.jpg"
    )
    (tmp_path / "people" / "train" / "labels" / "door1.txt").write_text("0 0.1 0.1 0.1 0.1\n")

    mix = merge_datasets(
        [MixSource(human, "door"), MixSource(teacher, "door", "teacher"), MixSource(people, "people")], tmp_path / "mix"
    )
    labels = tmp_path / "mix" / "train" / "labels"
    assert sorted(p.name for p in labels.iterdir()) == [
        "door__door1.txt",
        "door__door2.txt",
        "people__door1.txt",
        "people__p1.txt",
    ]
    assert (labels / "door__door1.txt").read_text().splitlines() == ["1 0.5 0.5 0.2 0.2", "0 0.2 0.5 0.1 0.6"]
    assert (labels / "door__door2.txt").read_text().splitlines() == ["0 0.7 0.5 0.2 0.8"]
    assert (labels / "people__door1.txt").read_text().splitlines() == ["0 0.1 0.1 0.1 0.1"]
    spec = yaml.safe_load(mix.read_text())
    assert spec["val"] == "valid/images" and spec["aidoor"]["splits"]["valid"]["images"] == 2
    assert [m["role"] for m in spec["aidoor"]["mix"]] == ["human", "teacher", "human"]
    assert (tmp_path / "mix" / "train" / "images" / "door__door1.jpg").resolve() == (
        tmp_path / "door" / "train" / "images" / "door1.jpg"
    ).resolve()

    # Rebuilding replaces the earlier mix; a foreign non-empty folder is refused.
    merge_datasets([MixSource(human, "door")], tmp_path / "mix")
    assert len(list(labels.iterdir())) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        merge_datasets([MixSource(human, "door")], tmp_path / "other")


def test_train_fraction_is_deterministic_and_roughly_the_share():
    stems = [f"img{i}" for i in range(2000)]
    kept = [s for s in stems if keep(f"g/{s}", 0.3)]
    assert kept == [s for s in stems if keep(f"g/{s}", 0.3)]
    assert 500 < len(kept) < 700


def test_merge_refuses_other_class_lists(tmp_path: Path):
    data = _dataset(tmp_path / "d", {"train": {"a": ""}, "valid": {"b": ""}}, {"a": 1, "b": 2})
    spec = yaml.safe_load(data.read_text())
    spec["names"] = {0: "Box"}
    data.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="model classes"):
        merge_datasets([MixSource(data, "d")], tmp_path / "mix")


def test_novel_val_leaves_out_repeats_of_training_frames(tmp_path: Path):
    data = _dataset(
        tmp_path / "d",
        {
            "train": {"t1": "1 0.5 0.5 0.2 0.2\n"},
            "valid": {"v_repeat": "1 0.5 0.5 0.2 0.2\n", "v_new": "1 0.5 0.5 0.2 0.2\n"},
        },
        {"t1": 7, "v_repeat": 7, "v_new": 8},
    )
    novel, kept, dropped = novel_val(data, tmp_path / "novel")
    assert (kept, dropped) == (1, 1)
    assert [p.name for p in (tmp_path / "novel" / "valid" / "images").iterdir()] == ["v_new.jpg"]
    assert yaml.safe_load(novel.read_text())["val"] == "valid/images"


# Real doorbell frames: three with a courier in view (the COCO teacher finds them), three without.
WITH_PEOPLE = [
    ("train", "10_jpg.rf.3d8637fe14938edc586e170a5fc3417f"),
    ("train", "10_jpg.rf.565a40d4fb31584141fbc9be890378e2"),
    ("valid", "1955_jpg.rf.135badf6f02ff9099476c5e1a26a3196"),
]
WITHOUT_PEOPLE = [
    ("train", "1000_jpg.rf.b4650e31fcd4d9b5626992324a108a6a"),
    ("train", "1005_jpg.rf.7b10e047d6482d89c67958cb918c52a8"),
    ("valid", "1040_jpg.rf.4a5713b4ebf0149dc64eb6f64d498e3a"),
]


def _small_export(source: Path, out: Path, items: list[tuple[str, str]]) -> Path:
    for split, stem in items:
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(source / split / "images" / f"{stem}.jpg", out / split / "images")
        shutil.copy(source / split / "labels" / f"{stem}.txt", out / split / "labels")
    shutil.copy(source / "data.yaml", out / "data.yaml")
    return out


@pytest.mark.skipif(
    not (DOORBELL.exists() and PERSON.exists() and TEACHER.exists()),
    reason="shared doorbell/person datasets or the COCO teacher model missing",
)
def test_teacher_labels_asset_feeds_the_training_mix_and_the_lineage(settings, tmp_path: Path):
    import sqlalchemy as sa

    from assets.datasets import data_yaml, dataset_version
    from assets.models import trained_model
    from assets.partitions import dataset_versions
    from assets.teacher import teacher_labels
    from detection_service.database import make_engine, make_session_factory
    from detection_service.datasets.importer import import_dataset, load_version_files, parse_changes
    from detection_service.storage import make_object_store
    from orchestration.resources import resources_from_settings
    from schemas.db import Dataset, DatasetVersion, Model

    settings = msgspec.structs.replace(settings, teacher_model=TEACHER)  # AIDOOR_TEACHER_MODEL=<TEACHER>
    session_factory = make_session_factory(make_engine(settings.database_url))
    store = make_object_store(settings)
    store.ensure_bucket()
    door = _small_export(DOORBELL, tmp_path / "door-export", WITH_PEOPLE + WITHOUT_PEOPLE)
    people_items = [("train", p.stem) for p in sorted((PERSON / "train" / "images").iterdir())[:4]] + [
        ("valid", p.stem) for p in sorted((PERSON / "valid" / "images").iterdir())[:2]
    ]
    people = _small_export(PERSON, tmp_path / "people-export", people_items)
    door_v = import_dataset(session_factory, store, door, "door").version
    import_dataset(session_factory, store, people, "people")

    key = f"door@{door_v}"
    with ephemeral_instance() as instance:
        instance.add_dynamic_partitions(dataset_versions.name, [key])
        result = dg.materialize(
            [dataset_version, data_yaml, teacher_labels, trained_model],
            partition_key=key,
            instance=instance,
            resources=resources_from_settings(settings),
            run_config={
                "ops": {"trained_model": {"config": {"profile": "tiny", "epochs": 1, "imgsz": 64, "mix": ["people"]}}}
            },
        )
        assert result.success
        meta = result.asset_materializations_for_node("teacher_labels")[0].metadata
    assert meta["classes"].value == "person" and meta["images"].value == 6
    assert meta["images_with_boxes"].value == 3  # the three courier frames, none of the empty doors

    with session_factory() as session:
        teacher_ds = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == "door-teacher"))
        changes = parse_changes(
            session.scalar(sa.select(DatasetVersion.changes).where(DatasetVersion.dataset_id == teacher_ds.id))
        )
        model = session.scalar(sa.select(Model))
    provenance = changes["teacher"]
    assert provenance["base"] == key and provenance["threshold"] == 0.4 and provenance["classes"] == ["person"]
    assert len(provenance["model_sha256"]) == 64 and provenance["created_at"]
    # Teacher boxes are a version of their own: the human labels of "door" still have no person.
    human_labels = [f.label for f in load_version_files(store, "door", door_v)]
    assert all(not line.startswith("0 ") for label in human_labels for line in (label or "").splitlines())
    teacher_files = {f.stem: f.label for f in load_version_files(store, "door-teacher", teacher_ds.version)}
    assert all(teacher_files[stem].startswith("0 ") for _, stem in WITH_PEOPLE)
    assert all(teacher_files[stem] == "" for _, stem in WITHOUT_PEOPLE)

    lineage = model.metrics["lineage"]
    assert [(e["ref"], e["role"]) for e in lineage] == [
        (key, "human"),
        (f"door-teacher@{teacher_ds.version}", "teacher"),
        ("people@v1", "human"),
    ]


@pytest.mark.skipif(not (DOORBELL.exists() and PERSON.exists()), reason="shared doorbell/person datasets missing")
def test_bootstrap_queues_the_mix_and_imports_the_extra_export_once(settings, tmp_path: Path):
    import sqlalchemy as sa

    from detection_service.bootstrap import queue_bootstrap_if_needed
    from detection_service.database import make_engine, make_session_factory
    from detection_service.datasets import run_dataset_update
    from detection_service.storage import make_object_store
    from schemas.db import BatchJob, Dataset

    door = _small_export(DOORBELL, tmp_path / "door", WITHOUT_PEOPLE)
    people = _small_export(
        PERSON,
        tmp_path / "people",
        [("train", p.stem) for p in sorted((PERSON / "train" / "images").iterdir())[:2]]
        + [("valid", p.stem) for p in sorted((PERSON / "valid" / "images").iterdir())[:1]],
    )
    missing = tmp_path / "not-there"
    settings = msgspec.structs.replace(settings, bootstrap_dataset=(door, people, missing))  # AIDOOR_BOOTSTRAP_DATASET
    job_id = queue_bootstrap_if_needed(settings)
    session_factory = make_session_factory(make_engine(settings.database_url))
    with session_factory() as session:
        params = session.get(BatchJob, job_id).parameters
    assert params["dataset_id"] == "door" and params["train"]["mix"] == ["people"]  # missing export left out
    assert params["with_paths"] == [{"path": str(people), "dataset_id": "people"}]
    assert queue_bootstrap_if_needed(settings) is None  # one request at a time

    store = make_object_store(settings)
    store.ensure_bucket()
    run_dataset_update(session_factory, store, params, tmp_path / "work")
    run_dataset_update(session_factory, store, params, tmp_path / "work")
    with session_factory() as session:
        versions = dict(session.execute(sa.select(Dataset.dataset_id, Dataset.version)).all())
    assert versions == {"door": "v2", "people": "v1"}  # the extra export is imported once, not per restart


@pytest.mark.skipif(
    not (DOORBELL.exists() and TEACHER.exists()), reason="shared doorbell dataset or COCO model missing"
)
def test_fine_tuning_first_labels_what_the_base_model_knows_and_the_data_lacks(tmp_path: Path):
    """Before a model is fine-tuned on parcel-only labels, it labels the people in the training
    images itself (here the COCO model stands in for a base model from elsewhere)."""
    from types import SimpleNamespace

    from assets.models import keep_base_classes
    from detection_service.ml.training import prepare_yolo_dataset

    export = _small_export(DOORBELL, tmp_path / "door", WITH_PEOPLE + WITHOUT_PEOPLE)
    mix = merge_datasets([MixSource(prepare_yolo_dataset(export, tmp_path / "prepared"), "door")], tmp_path / "mix")
    base = SimpleNamespace(model_id="coco", metrics={})  # a registered file: no per-class history
    entry = keep_base_classes(base, TEACHER, mix)
    assert entry is not None and entry.ref == "model:coco" and entry.role == "teacher"
    assert entry.labels_for.startswith("person")
    labels = {
        p.stem.split("__", 1)[1]: p.read_text().splitlines()
        for folder in ("train", "valid")
        for p in (tmp_path / "mix" / folder / "labels").iterdir()
    }
    for _, stem in WITH_PEOPLE:
        assert any(line.startswith("0 ") for line in labels[stem]), stem
        assert any(line.startswith("1 ") for line in labels[stem]), stem  # the parcel labels stay
    for _, stem in WITHOUT_PEOPLE:
        assert not any(line.startswith("0 ") for line in labels[stem]), stem
