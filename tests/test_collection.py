"""Auto-collection as a Dagster asset: split by event id (train and val, one event never in both),
a valid data.yaml for a new dataset, and model labels of unverified captures kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from assets.collection import collected_dataset
from assets.datasets import data_yaml, dataset_version
from detection_service.datasets.auto_collect import (
    VALID_SHARE,
    _assign_splits,
    _Capture,
    collect_verified,
    event_hash,
    split_for_event,
)
from detection_service.datasets.importer import AUTO_LABELED, VersionFile
from detection_service.ml import registry
from orchestration.resources import resources_from_settings
from schemas.db import BatchJob, Dataset, DatasetVersion, DetectionEvent, EventImage, ObjectType
from tests.conftest import SHARED_DATASETS
from tests.dagster_helpers import ephemeral_instance, next_batch_run

PACKAGES = SHARED_DATASETS / "packages-v6"
PERSONS = SHARED_DATASETS / "person-capston2-v11"
COCO = SHARED_DATASETS.parent / "models" / "yolov8n_coco_int8_openvino_model"
pytestmark = pytest.mark.skipif(not PACKAGES.is_dir(), reason=f"shared datasets missing: {SHARED_DATASETS}")


def add_event(session, type_code: str, keys: list[str], *, verified=True, bbox=None, false_positive=False) -> int:
    type_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == type_code))
    event = DetectionEvent(
        object_type_id=type_id,
        user_verified=verified,
        is_false_positive=false_positive,
        bbox_coordinates=json.dumps(bbox) if bbox else None,
        image_path=keys[0],
    )
    event.images = [EventImage(image_path=key, sequence_number=i + 1) for i, key in enumerate(keys)]
    session.add(event)
    session.flush()
    return event.id


def _box(key_count: int) -> dict:
    # Pixels of a 640x640 frame; the same box on every capture.
    return {
        "x1": 100,
        "y1": 120,
        "x2": 400,
        "y2": 500,
        "width": 640,
        "height": 640,
        "frames": {str(i): {"x1": 100, "y1": 120, "x2": 400, "y2": 500} for i in range(2, key_count + 1)},
    }


def _events(state, count: int, captures: int = 2) -> list[int]:
    images = sorted((PACKAGES / "train" / "images").iterdir())
    ids = []
    with state.session_factory.begin() as session:
        for n in range(count):
            keys = []
            for c in range(captures):
                key = f"events/test/{n}/{c + 1}.jpg"
                state.object_store.put_bytes(key, images[(n * captures + c) % len(images)].read_bytes(), "image/jpeg")
                keys.append(key)
            ids.append(add_event(session, "package", keys, bbox=_box(captures)))
    return ids


def test_split_by_event_id_is_stable_and_never_leaves_val_empty():
    shares = [split_for_event(i) for i in range(1, 2001)]
    assert abs(shares.count("valid") / len(shares) - VALID_SHARE) < 0.03
    assert [split_for_event(i) for i in range(1, 50)] == [split_for_event(i) for i in range(1, 50)]
    train_ids = [i for i in range(1, 40) if split_for_event(i) == "train"][:2]

    def captures(ids):
        return [_Capture(i, f"k{i}-{n}", f"event_{i}_{n}.jpg", "train", None) for i in ids for n in (1, 2)]

    two = captures(train_ids)
    _assign_splits(two, [])
    moved = min(train_ids, key=event_hash)
    assert {c.split for c in two if c.event_id == moved} == {"valid"}  # all captures of the event together
    assert {c.split for c in two if c.event_id != moved} == {"train"}
    one = captures(train_ids[:1])
    _assign_splits(one, [])
    assert {c.split for c in one} == {"train"}  # a single event: no val to make
    # One new event, one older event already in the base version: the new one becomes the val.
    base = [VersionFile("train", "event_999_1.jpg", b"", "")]
    one = captures(train_ids[:1])
    _assign_splits(one, base)
    assert {c.split for c in one} == {"valid"}
    # The base version already has a val: hashes decide alone.
    one = captures(train_ids[:1])
    _assign_splits(one, [VersionFile("valid", "x.jpg", b"", "")])
    assert {c.split for c in one} == {"train"}


def test_auto_collect_into_a_new_dataset_gives_train_val_and_a_valid_data_yaml(client, settings):
    state = client.app.state
    assert (
        client.post("/api/datasets/create", json={"name": "front door", "dataset_id": "front-door"}).status_code == 201
    )
    ids = _events(state, 8, captures=2)
    response = client.post("/api/datasets/auto-collect", json={"dataset_id": "front-door", "auto_label": True})
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["id"]

    with ephemeral_instance() as instance:
        run = next_batch_run(settings, instance)
        assert run.job_name == "collection_job"
        result = dg.materialize(
            [collected_dataset],
            run_config=run.run_config,
            instance=instance,
            resources=resources_from_settings(settings),
            tags=run.tags,
        )
        assert result.success
        [materialization] = result.asset_materializations_for_node("collected_dataset")
        metadata = materialization.metadata
        assert metadata["events_collected"].value == 8
        splits = metadata["splits"].value
        assert splits["train"] > 0 and splits["valid"] > 0 and splits["train"] + splits["valid"] == 16

        # The follow-up materialization (dataset_version + data_yaml) succeeds: val is there.
        follow = next_batch_run(settings, instance)
        assert follow.job_name == "dataset_assets_job" and follow.partition_key == "front-door@v1"
        assets = dg.materialize(
            [dataset_version, data_yaml],
            partition_key=follow.partition_key,
            instance=instance,
            resources=resources_from_settings(settings),
            tags=follow.tags,
        )
        assert assets.success
        assert assets.asset_materializations_for_node("data_yaml")[0].metadata["nc"].value == 4

    store = state.object_store
    spec = yaml.safe_load(store.get_bytes("datasets/front-door/v1/data.yaml"))
    assert spec["train"] == "train/images" and spec["val"] == "valid/images"
    where = {}
    for info in store.list("datasets/front-door/v1/"):
        parts = info.key.split("/")
        if parts[-2] == "images":
            where.setdefault(int(parts[-1].split("_")[1]), set()).add(parts[3])
    assert set(where) == set(ids)
    assert all(len(splits) == 1 for splits in where.values()), where  # no event straddles train/val
    with state.session_factory() as session:
        job = session.get(BatchJob, job_id)
        assert job.status == "completed" and job.result["splits"] == splits
        changes = json.loads(session.scalar(sa.select(DatasetVersion.changes)))
    assert sorted(changes["event_splits"]["valid"] + changes["event_splits"]["train"]) == ids
    detail = client.get("/api/datasets/front-door").json()["data"]
    assert detail["version"] == "v1" and detail["total_images"] == 16


@pytest.mark.skipif(not COCO.is_dir(), reason=f"shared model missing: {COCO}")
def test_auto_label_keeps_model_labels_apart_from_verified_ones(settings, tmp_path: Path):
    from detection_service.database import make_engine, make_session_factory
    from detection_service.ml.pseudo_label import deployed_model_labeler
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.storage import make_object_store

    configure_offline(settings.data_dir)
    session_factory = make_session_factory(make_engine(settings.database_url))
    store = make_object_store(settings)
    store.ensure_bucket()
    # The deployed model: the COCO detector (person is its class 0, mapped onto our person).
    row = registry.register_model_folder(session_factory, store, COCO, model_name="coco", metrics={})
    registry.set_current_model(session_factory, row.id)
    people = sorted((PERSONS / "valid" / "images").iterdir())[:3]
    with session_factory.begin() as session:
        verified = _events_with(session, store, "package", [sorted((PACKAGES / "train" / "images").iterdir())[0]], True)
        guessed = [_events_with(session, store, "unclassified", [image], False) for image in people]
        _events_with(session, store, "package", [people[0]], False)  # unverified but classified: not a guess

    labeler = deployed_model_labeler(session_factory, store, tmp_path)
    assert labeler is not None and labeler[0] == row.model_id
    first = collect_verified(session_factory, store, "door", labeler=labeler[1], labeler_model=labeler[0])
    assert first.collected_events == [verified]
    assert first.auto_labeled_images == 3 and first.total_images == 1
    assert first.class_distribution["person"].instances == 0  # guesses are not training data
    spec = yaml.safe_load(store.get_bytes("datasets/door/v1/data.yaml"))
    assert AUTO_LABELED not in json.dumps(spec)
    labels = [store.get_bytes(f"datasets/door/v1/{AUTO_LABELED}/labels/event_{i}_1.txt").decode() for i in guessed]
    assert sum(line.startswith("0 ") for text in labels for line in text.splitlines()) >= 3  # people found
    with session_factory() as session:
        changes = json.loads(session.scalar(sa.select(DatasetVersion.changes).order_by(DatasetVersion.id.desc())))
    assert changes["auto_labeled_events"] == guessed and changes["auto_labeled_by"] == row.model_id
    assert changes["events_collected"] == [verified]

    # The user verifies one guessed event: it is collected as verified, its model-labelled copy goes.
    with session_factory.begin() as session:
        event = session.get(DetectionEvent, guessed[0])
        event.user_verified = True
        event.object_type_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == "person"))
        event.bbox_coordinates = json.dumps({"x1": 10, "y1": 10, "x2": 300, "y2": 600, "width": 640, "height": 640})
    second = collect_verified(session_factory, store, "door", labeler=labeler[1], labeler_model=labeler[0])
    assert second.collected_events == [guessed[0]] and second.auto_labeled_images == 2
    keys = [info.key for info in store.list("datasets/door/v2/")]
    assert not any(f"{AUTO_LABELED}/images/event_{guessed[0]}_" in k for k in keys)
    assert any(f"/images/event_{guessed[0]}_1.jpg" in k and AUTO_LABELED not in k for k in keys)
    with session_factory() as session:
        assert session.scalar(sa.select(Dataset.total_images).where(Dataset.dataset_id == "door")) == 2


def _events_with(session, store, code: str, images: list[Path], verified: bool) -> int:
    keys = []
    for image in images:
        key = f"events/{code}/{image.name}"
        store.put_bytes(key, image.read_bytes(), "image/jpeg")
        keys.append(key)
    bbox = {"x1": 50, "y1": 50, "x2": 300, "y2": 300} if code != "unclassified" else None
    return add_event(session, code, keys, verified=verified, bbox=bbox)
