"""The one evaluation path (class mapping by name, per-class scopes), the fixed evaluation set
(append-only, near-duplicates of train images left out) and the per-class gate; a model from
elsewhere (the COCO OpenVINO export in ../shared/models) registered and evaluated with real numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.ml.evaluation import (
    ModelFormatError,
    class_mapping_report,
    map_model_classes,
    match_predictions,
    model_kind,
    score,
)
from detection_service.ml.gate import CLASS_TOLERANCE, judge
from tests.conftest import SHARED_DATASETS
from tests.dagster_helpers import ephemeral_instance

DOORBELL = SHARED_DATASETS / "doorbell-camera-alert-v4"
PERSONS = SHARED_DATASETS / "person-capston2-v11"
COCO = SHARED_DATASETS.parent / "models" / "yolov8n_coco_int8_openvino_model"


# --------------------------------------------------------------------------------- scoring


def _image(pred, true, scope=None):
    """pred: [(cls, conf, box)], true: [(cls, box)] -> score() input."""
    return (
        np.array([p[2] for p in pred], float).reshape(-1, 4),
        np.array([p[1] for p in pred], float),
        np.array([p[0] for p in pred], int),
        np.array([t[1] for t in true], float).reshape(-1, 4),
        np.array([t[0] for t in true], int),
        scope,
    )


BOX = (10, 10, 50, 50)
SHIFTED = (30, 30, 70, 70)  # IoU with BOX = 400 / 2800 = 0.14: a miss


def test_score_perfect_wrong_class_and_scopes():
    metrics, per_class = score([_image([(1, 0.9, BOX)], [(1, BOX)]), _image([(0, 0.8, BOX)], [(0, BOX)])])
    assert metrics["map50"] == pytest.approx(0.995, abs=1e-3) and metrics["map50_95"] == pytest.approx(0.995, abs=1e-3)
    assert {c.name: c.instances for c in per_class} == {"person": 1, "package": 1}
    # Right box, wrong class: no match; a displaced box: no match at IoU 0.5.
    metrics, _ = score([_image([(0, 0.9, BOX)], [(1, BOX)]), _image([(1, 0.9, SHIFTED)], [(1, BOX)])])
    assert metrics["map50"] == pytest.approx(0.0, abs=1e-6)
    # A person found on a frame that is authoritative for packages only is not a false positive.
    package_only = frozenset({1})
    with_scope, _ = score(
        [_image([(1, 0.9, BOX), (0, 0.95, SHIFTED)], [(1, BOX)], package_only), _image([(0, 0.9, BOX)], [(0, BOX)])]
    )
    without, _ = score([_image([(1, 0.9, BOX), (0, 0.95, SHIFTED)], [(1, BOX)]), _image([(0, 0.9, BOX)], [(0, BOX)])])
    assert with_scope["map50"] == pytest.approx(0.995, abs=1e-3) and without["map50"] < 0.9


def test_match_predictions_one_label_per_prediction():
    iou = np.array([[0.9, 0.8]])  # one label, two predictions of its class
    correct = match_predictions(np.array([1, 1]), np.array([1]), iou)
    assert correct[:, 0].tolist() == [True, False]


def test_class_mapping_by_name(tmp_path: Path):
    coco_like = {0: "person", 1: "bicycle", 2: "car", 28: "suitcase"}
    assert map_model_classes(coco_like) == {0: 0}  # person -> person; no parcel/mail/food in COCO
    report = class_mapping_report(coco_like)
    assert report["mapped"] == {"person": "person"} and report["unclassified"] == 3
    assert map_model_classes(["Box", "people", "letter", "food"]) == {0: 1, 1: 0, 2: 3, 3: 2}
    (tmp_path / "w.pt").write_bytes(b"x")
    assert model_kind(tmp_path / "w.pt") == "pt"
    for bad in (tmp_path / "nope.pt", tmp_path):
        with pytest.raises(ModelFormatError):
            model_kind(bad)
    folder = tmp_path / "x_openvino_model"
    folder.mkdir()
    with pytest.raises(ModelFormatError, match="no OpenVINO IR"):
        model_kind(folder)


# --------------------------------------------------------------------------------- gate


def _pc(**classes):
    return [
        {"name": n, "instances": 10, "map50": v[0], "map50_95": v[1], "precision": 0.5, "recall": 0.5}
        for n, v in classes.items()
    ]


def test_gate_per_class_rule():
    champion = _pc(person=(0.60, 0.40), package=(0.80, 0.50))
    overall = {"map50": 0.70, "map50_95": 0.45}
    better = judge(
        "b",
        {"map50": 0.75, "map50_95": 0.50},
        "a",
        overall,
        "evaluation-set@v1",
        _pc(person=(0.61, 0.42), package=(0.89, 0.58)),
        champion,
    )
    assert better.passed and [v.ok for v in better.per_class] == [True, True]
    # Better on average by forgetting people: refused.
    forgets = judge(
        "b",
        {"map50": 0.76, "map50_95": 0.52},
        "a",
        overall,
        "evaluation-set@v1",
        _pc(person=(0.60 - CLASS_TOLERANCE - 0.01, 0.40), package=(0.99, 0.64)),
        champion,
    )
    assert not forgets.passed and "person" in forgets.reason
    assert [v.name for v in forgets.per_class if not v.ok] == ["person"]
    # Within the tolerance on a class and better overall: passes.
    assert judge(
        "b",
        {"map50": 0.71, "map50_95": 0.47},
        "a",
        overall,
        "s",
        _pc(person=(0.59, 0.41), package=(0.83, 0.53)),
        champion,
    ).passed
    # Not better overall: refused even without a per-class loss.
    assert not judge("b", dict(overall), "a", overall, "s", champion, champion).passed
    # A class the champion does not know (mAP50 below KNOWN_MAP50) may stay at zero.
    weak = _pc(person=(0.0, 0.0), package=(0.80, 0.50))
    passes = judge(
        "b",
        {"map50": 0.45, "map50_95": 0.30},
        "a",
        {"map50": 0.40, "map50_95": 0.25},
        "s",
        _pc(person=(0.0, 0.0), package=(0.90, 0.60)),
        weak,
    )
    assert passes.passed and passes.per_class[0].known is False
    assert judge("b", {"map50": 0.1, "map50_95": 0.1}, None, None, "s").reason == "no champion deployed"


# --------------------------------------------------------------------------------- fixed set + a foreign model


def _subset(root: Path, dest: Path, train: list[str], valid: list[str], names: list[str]) -> Path:
    import yaml

    for split, stems in (("train", train), ("valid", valid)):
        for stem in stems:
            image = next((root / split / "images").glob(f"{stem}.*"))
            (dest / split / "images").mkdir(parents=True, exist_ok=True)
            (dest / split / "labels").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dest / split / "images" / image.name)
            shutil.copyfile(root / split / "labels" / f"{stem}.txt", dest / split / "labels" / f"{stem}.txt")
    (dest / "data.yaml").write_text(
        yaml.safe_dump({"train": "train/images", "val": "valid/images", "nc": len(names), "names": names})
    )
    return dest


def doorbell_subset(dest: Path, near: int = 3, other: int = 5) -> tuple[Path, int]:
    """A small doorbell export: ``near`` valid frames with a near-duplicate in train (and those
    train frames), ``other`` valid frames without one, plus a few train frames."""
    from detection_service.ml.near_duplicates import hash_files, min_distances

    valid = sorted((DOORBELL / "valid" / "images").iterdir())[:60]
    train = sorted((DOORBELL / "train" / "images").iterdir())
    valid_paths, valid_hashes = hash_files(valid)
    train_paths, train_hashes = hash_files(train)
    dups, clean, partners = [], [], []
    from detection_service.ml.near_duplicates import _POPCOUNT

    for path, h, d in zip(valid_paths, valid_hashes, min_distances(valid_hashes, train_hashes)):
        if d <= 5 and len(dups) < near:
            dups.append(path.stem)
            partners.append(train_paths[int(_POPCOUNT[np.bitwise_xor(train_hashes, h)].sum(axis=1).argmin())].stem)
        elif d > 12 and len(clean) < other:
            clean.append(path.stem)
    assert len(dups) == near and len(clean) == other
    extra = [p.stem for p in train[:4] if p.stem not in partners]
    return _subset(DOORBELL, dest, partners + extra, dups + clean, ["Box"]), near


pytest_plain = pytest.mark.skipif(
    not (DOORBELL.is_dir() and PERSONS.is_dir() and COCO.is_dir()), reason="shared datasets / models missing"
)


@pytest_plain
def test_registered_openvino_model_is_evaluated_on_the_fixed_set(client, settings, tmp_path: Path):
    from assets.evaluation import registered_model_evaluation_job
    from assets.resources import DatabaseResource
    from detection_service.datasets.evaluation_set import EVALUATION_SET_ID, update_evaluation_set
    from detection_service.datasets.importer import import_dataset
    from orchestration.resources import resources_from_settings
    from orchestration.sensors import batch_job_sensor
    from schemas.db import BatchJob, Model

    state = client.app.state
    door, near = doorbell_subset(tmp_path / "door")
    person_valid = [p.stem for p in sorted((PERSONS / "valid" / "images").iterdir())[:10]]
    person_train = [p.stem for p in sorted((PERSONS / "train" / "images").iterdir())[:4]]
    people = _subset(PERSONS, tmp_path / "people", person_train, person_valid, ["person"])
    import_dataset(state.session_factory, state.object_store, door, "doorbell")
    import_dataset(state.session_factory, state.object_store, people, "persons")

    bad = client.app.state.model_service
    from detection_service.services.models import ModelError

    with pytest.raises(ModelError, match="_openvino_model"):
        bad.register_file(tmp_path / "door")  # a folder that is not an export
    info = state.model_service.register_file(COCO)
    assert info.weights_path.endswith("yolov8n_coco_int8_openvino_model/")
    with state.session_factory() as session:
        job = session.scalar(sa.select(BatchJob).where(BatchJob.job_type == "model_evaluation"))
        assert job.parameters == {"model_id": info.model_id} and job.status == "pending"

    with ephemeral_instance() as instance:
        with dg.build_sensor_context(
            instance=instance, resources={"database": DatabaseResource(url=settings.database_url)}
        ) as ctx:
            [run] = batch_job_sensor(ctx).run_requests
        assert run.job_name == "registered_model_evaluation_job"
        result = registered_model_evaluation_job.execute_in_process(
            run_config=run.run_config, instance=instance, resources=resources_from_settings(settings), tags=run.tags
        )
        assert result.success
        [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = output.event_specific_data.metadata
        assert "| person |" in metadata["per_class"].value and "| package |" in metadata["per_class"].value
        assert metadata["evaluation_set"].value == f"{EVALUATION_SET_ID}@v1"

    with state.session_factory() as session:
        row = session.scalar(sa.select(Model).where(Model.model_id == info.model_id))
        metrics, accuracy = row.metrics, row.accuracy
        job = session.get(BatchJob, job.id)
    evaluation = metrics["evaluations"][f"{EVALUATION_SET_ID}@v1"]
    per_class = {e["name"]: e for e in evaluation["per_class"]}
    assert evaluation["images"] == 10 + 5  # persons' 10 valid + doorbell's 8 valid minus 3 near-duplicates
    assert per_class["person"]["instances"] > 0 and per_class["person"]["map50"] > 0.2  # real numbers
    assert per_class["package"]["map50"] == 0.0  # COCO has no parcel class
    assert evaluation["class_mapping"]["mapped"] == {"person": "person"}
    assert evaluation["class_mapping"]["unclassified"] == 79
    assert metrics["gate"]["passed"] is True and metrics["gate"]["reason"] == "no champion deployed"
    assert float(accuracy) == pytest.approx(evaluation["metrics"]["map50"], abs=1e-4)
    assert job.status == "completed" and job.result["evaluation_set"] == f"{EVALUATION_SET_ID}@v1"
    api = client.get(f"/api/models/{info.model_id}/info").json()["data"]
    assert api["gate"]["split"] == f"{EVALUATION_SET_ID}@v1" and api["accuracy"] == pytest.approx(float(accuracy))
    assert {c["class"] for c in api["per_class"]} == {"person", "package"}

    # The set is append-only: nothing new -> same version; scopes say which class each group is for.
    again = update_evaluation_set(
        state.session_factory, state.object_store, settings.data_dir / "cache", ["doorbell@v1", "persons@v1"]
    )
    assert (again.version, again.created, again.images) == ("v1", False, 15)
    assert again.scopes == {"doorbell": ["package"], "persons": ["person"]}
    with state.session_factory() as session:
        import json

        from schemas.db import Dataset, DatasetVersion

        changes = json.loads(
            session.scalar(
                sa.select(DatasetVersion.changes).join(Dataset).where(Dataset.dataset_id == EVALUATION_SET_ID)
            )
        )
    assert changes["sources"]["doorbell"]["near_duplicates_dropped"] == near


def test_collected_valid_events_are_frozen_and_the_set_only_grows(settings, tmp_path: Path):
    import json

    from detection_service.database import make_engine, make_session_factory
    from detection_service.datasets.auto_collect import collect_verified, split_for_event
    from detection_service.datasets.evaluation_set import EVALUATION_SET_ID, evaluation_images, update_evaluation_set
    from detection_service.datasets.importer import import_dataset
    from detection_service.storage import make_object_store
    from schemas.db import DetectionEvent, EventImage, ObjectType

    session_factory = make_session_factory(make_engine(settings.database_url))
    store = make_object_store(settings)
    store.ensure_bucket()
    cache = tmp_path / "cache"
    people = _subset(
        PERSONS,
        tmp_path / "people",
        [p.stem for p in sorted((PERSONS / "train" / "images").iterdir())[:4]],
        [p.stem for p in sorted((PERSONS / "valid" / "images").iterdir())[:4]],
        ["person"],
    )
    import_dataset(session_factory, store, people, "persons")
    first = update_evaluation_set(session_factory, store, cache, ["persons@v1"], "auto-collected")
    assert (first.version, first.images, first.created) == ("v1", 4, True)

    def collect(frames: list[Path]) -> list[int]:
        ids = []
        with session_factory.begin() as session:
            package = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == "package"))
            for frame in frames:
                key = f"events/{frame.name}"
                store.put_bytes(key, frame.read_bytes(), "image/jpeg")
                event = DetectionEvent(
                    object_type_id=package,
                    user_verified=True,
                    image_path=key,
                    bbox_coordinates=json.dumps({"x1": 10, "y1": 10, "x2": 200, "y2": 200}),
                    images=[EventImage(image_path=key, sequence_number=1)],
                )
                session.add(event)
                session.flush()
                ids.append(event.id)
        collect_verified(session_factory, store, "auto-collected")
        return ids

    packages = sorted((SHARED_DATASETS / "packages-v6" / "train" / "images").iterdir())
    ids = collect(packages[:8])
    valid_ids = [i for i in ids if split_for_event(i) == "valid"]
    assert valid_ids  # the hash sends ~20% of the events to valid
    second = update_evaluation_set(session_factory, store, cache, ["persons@v1"], "auto-collected")
    assert second.version == "v2" and second.created
    assert second.groups == {"persons": 4, "collected-package": len(valid_ids)}
    assert second.scopes["collected-package"] == ["package"] and second.frozen_events == len(valid_ids)
    v1_files = {i.key.split("/", 3)[3] for i in store.list(f"datasets/{EVALUATION_SET_ID}/v1/")}
    v2_files = {i.key.split("/", 3)[3] for i in store.list(f"datasets/{EVALUATION_SET_ID}/v2/")}
    assert v1_files - {"data.yaml"} <= v2_files  # nothing dropped
    assert update_evaluation_set(session_factory, store, cache, ["persons@v1"], "auto-collected").created is False
    ref, images = evaluation_images(session_factory, store, cache)
    assert ref == f"{EVALUATION_SET_ID}@v2" and len(images) == 4 + len(valid_ids)
    assert {i.scope for i in images} == {frozenset({0}), frozenset({1})}  # persons: person; collected: package
    # Later events: only the new valid ones are appended; the frozen ones stay.
    more = collect(packages[8:16])
    third = update_evaluation_set(session_factory, store, cache, ["persons@v1"], "auto-collected")
    new_valid = [i for i in more if split_for_event(i) == "valid"]
    assert third.groups["collected-package"] == len(valid_ids) + len(new_valid)
    assert third.created == bool(new_valid)
