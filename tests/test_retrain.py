"""Retraining on new labels, through the sensors as the daemon runs them: relabelled events ->
auto-collect -> a challenger fine-tuned from the champion on base + collected data -> evaluated
with the champion on the fixed evaluation set -> deployed only if the per-class gate passes.
A deliberately worse challenger (shuffled labels) is rejected and the champion keeps serving.
Tiny profile (imgsz 64, <= 2 epochs), a handful of real images."""

from __future__ import annotations

import random
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from assets.collection import collected_dataset
from assets.datasets import data_yaml, dataset_version
from assets.models import deployed_model, model_evaluation, trained_model
from assets.partitions import dataset_versions
from detection_service.bench.retrain import frame_event
from detection_service.database import make_engine, make_session_factory
from detection_service.datasets.evaluation_set import EVALUATION_SET_ID
from detection_service.datasets.importer import import_dataset
from detection_service.ml import registry
from detection_service.services.settings import SettingsService
from detection_service.storage import make_object_store
from orchestration.resources import resources_from_settings
from orchestration.sensors import retrain_on_new_labels_sensor
from schemas.db import Model, ObjectType, utcnow
from tests.conftest import SHARED_DATASETS
from tests.dagster_helpers import ephemeral_instance, next_batch_run, tick
from tests.test_evaluation import _subset

DOORBELL = SHARED_DATASETS / "doorbell-camera-alert-v4"
PERSONS = SHARED_DATASETS / "person-capston2-v11"
COCO = SHARED_DATASETS.parent / "models" / "yolov8n_coco_int8_openvino_model"
pytestmark = pytest.mark.skipif(not (DOORBELL.is_dir() and PERSONS.is_dir()), reason="shared datasets missing")
TRAIN = [trained_model, model_evaluation, deployed_model]


@pytest.fixture
def env(settings):
    session_factory = make_session_factory(make_engine(settings.database_url))
    store = make_object_store(settings)
    store.ensure_bucket()
    return settings, session_factory, store


def _materialize(assets, run_or_key, settings, instance, run_config=None, tags=None):
    if isinstance(run_or_key, dg.RunRequest):
        key, run_config, tags = run_or_key.partition_key, run_or_key.run_config, run_or_key.tags
    else:
        key = run_or_key
        instance.add_dynamic_partitions(dataset_versions.name, [key])
    return dg.materialize(
        assets,
        partition_key=key,
        run_config=run_config or {},
        instance=instance,
        resources=resources_from_settings(settings),
        tags=tags or {},
        raise_on_error=False,
    )


def _train_config(**values) -> dict:
    return {"ops": {"trained_model": {"config": {"profile": "tiny", **values}}}}


def _current(session_factory) -> str | None:
    with session_factory() as session:
        return session.scalar(sa.select(Model.model_id).where(Model.is_current.is_(True)))


def _metrics(session_factory, model_id: str) -> dict:
    with session_factory() as session:
        return session.scalar(sa.select(Model.metrics).where(Model.model_id == model_id))


# Two tiny trainings and four evaluations: ~1-2 min on an idle 2-core machine, far more on a busy one.
@pytest.mark.timeout(600)
def test_relabels_trigger_one_retrain_fine_tuned_from_the_champion(env, tmp_path: Path):
    settings, session_factory, store = env
    train_stems = [p.stem for p in sorted((DOORBELL / "train" / "images").iterdir())[:16]]
    valid_stems = [p.stem for p in sorted((DOORBELL / "valid" / "images").iterdir())[:6]]
    import_dataset(
        session_factory, store, _subset(DOORBELL, tmp_path / "door", train_stems, valid_stems, ["Box"]), "doorbell"
    )
    with ephemeral_instance() as instance:
        # The champion: a first model on the base data (no champion yet: deployed).
        first = _materialize(TRAIN, "doorbell@v1", settings, instance, _train_config(epochs=1))
        assert first.success
        champion = _current(session_factory)
        assert champion is not None

        # Relabel retrain_min_new_labels events (real doorbell frames with their parcel box).
        SettingsService(session_factory).update("training", {"retrain_min_new_labels": 4, "profile": "tiny"})
        frames = sorted((DOORBELL / "valid" / "images").iterdir())[100:104]
        with session_factory.begin() as session:
            package = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == "package"))
            for n, frame in enumerate(frames):
                session.add(
                    frame_event(
                        store,
                        frame,
                        f"events/retrain/{n}.jpg",
                        object_type_id=package,
                        user_verified=True,
                        reclassified_at=utcnow(),
                    )
                )
        skipped, cursor = tick(retrain_on_new_labels_sensor, settings, instance)
        assert "queued auto-collect + retrain" in str(skipped)
        again, _ = tick(retrain_on_new_labels_sensor, settings, instance, cursor)
        assert "queued" not in str(again)  # the same labels never trigger twice

        collect = next_batch_run(settings, instance)
        assert collect.job_name == "collection_job"
        assert dg.materialize(
            [collected_dataset],
            run_config=collect.run_config,
            instance=instance,
            resources=resources_from_settings(settings),
            tags=collect.tags,
        ).success
        retrain = next_batch_run(settings, instance)
        assert retrain.job_name == "dataset_to_model_job" and retrain.partition_key == "auto-collected@v1"
        config = retrain.run_config["ops"]["trained_model"]["config"]
        assert config["base_model_id"] == champion and config["mix"] == ["doorbell@v1"]
        # training.device (default cpu) places the retrain: on the box, not the GPU worker.
        assert config["device"] == "cpu" and retrain.tags["aidoor/gpu"] == "false"
        result = _materialize([dataset_version, data_yaml, *TRAIN], retrain, settings, instance)
        assert result.success
        [evaluation] = result.asset_materializations_for_node("model_evaluation")
        table = evaluation.metadata["per_class"].value
        assert "challenger mAP50" in table and "champion mAP50" in table and "| package |" in table

    with session_factory() as session:
        challenger = session.scalar(sa.select(Model).where(Model.model_id != champion).order_by(Model.id.desc()))
    metrics = challenger.metrics
    lineage = {(e["ref"], e["role"]) for e in metrics["lineage"]}
    assert {("auto-collected@v1", "collected"), ("doorbell@v1", "human")} <= lineage
    assert metrics["training_params"]["model"].endswith(f"models/{champion}/best.pt")  # fine-tuned, not random init
    gate = metrics["gate"]
    assert gate["champion_id"] == champion and gate["split"].startswith(f"{EVALUATION_SET_ID}@")
    assert {c["name"] for c in gate["per_class"]} == {"package"}
    assert all(c["champion"] is not None and c["challenger"] is not None for c in gate["per_class"])
    # Both evaluations are stored against the same evaluation-set version.
    assert (
        gate["split"] in metrics["evaluations"] and gate["split"] in _metrics(session_factory, champion)["evaluations"]
    )
    assert _current(session_factory) == (challenger.model_id if gate["passed"] else champion)


@pytest.mark.skipif(not COCO.is_dir(), reason=f"shared model missing: {COCO}")
@pytest.mark.timeout(600)
def test_a_worse_challenger_is_rejected_and_the_champion_keeps_serving(env, tmp_path: Path):
    settings, session_factory, store = env
    # Person photos; the train labels shuffled between images (boxes in the wrong places), the
    # valid split intact (it becomes part of the fixed evaluation set).
    train_stems = [p.stem for p in sorted((PERSONS / "train" / "images").iterdir())[:16]]
    valid_stems = [p.stem for p in sorted((PERSONS / "valid" / "images").iterdir())[:10]]
    export = _subset(PERSONS, tmp_path / "people", train_stems, valid_stems, ["person"])
    labels = sorted((export / "train" / "labels").iterdir())
    texts = [p.read_text() for p in labels]
    random.Random(0).shuffle(texts)
    for path, text in zip(labels, texts):
        path.write_text(text)
    import_dataset(session_factory, store, export, "people-shuffled")
    # The champion knows people: the COCO detector from elsewhere, deployed.
    row = registry.register_model_folder(session_factory, store, COCO, model_name="coco", metrics={})
    registry.set_current_model(session_factory, row.id)

    with ephemeral_instance() as instance:
        result = _materialize(TRAIN, "people-shuffled@v1", settings, instance, _train_config(epochs=1))
        assert result.success
        assert not result.asset_materializations_for_node("deployed_model")
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks["beats_champion"] is False
    assert _current(session_factory) == row.model_id  # the champion keeps serving
    with session_factory() as session:
        challenger = session.scalar(sa.select(Model).where(Model.id != row.id))
    gate = challenger.metrics["gate"]
    assert gate["passed"] is False and "person" in gate["reason"]
    [person] = [c for c in gate["per_class"] if c["name"] == "person"]
    assert person["known"] is True and person["champion"]["map50"] > 0.2
    assert person["challenger"]["map50"] < person["champion"]["map50"]


def test_a_retrain_of_a_champion_from_elsewhere_still_trains_on_the_base_data(env, tmp_path: Path):
    """A registered champion names no data it was trained on: the retrain mixes in every imported
    data set rather than fine-tuning on the collected images alone."""
    from orchestration.sensors import retrain_parameters

    settings, session_factory, store = env
    train = [p.stem for p in sorted((DOORBELL / "train" / "images").iterdir())[:2]]
    valid = [p.stem for p in sorted((DOORBELL / "valid" / "images").iterdir())[:2]]
    import_dataset(session_factory, store, _subset(DOORBELL, tmp_path / "door", train, valid, ["Box"]), "doorbell")
    with session_factory.begin() as session:
        session.add(
            Model(
                model_id="elsewhere",
                model_name="from elsewhere",
                model_path="models/elsewhere/best.pt",
                version="1",
                is_current=True,
                metrics={},
            )
        )
    train = retrain_parameters(session_factory, "tiny")
    assert train["base_model_id"] == "elsewhere" and train["mix"] == ["doorbell@v1"]
