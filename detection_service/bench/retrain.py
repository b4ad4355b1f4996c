"""Retrain benchmark: from a deployed model, relabel N events, let the sensors fire; one JSON line.

    python -m detection_service.bench.retrain [--events 8] [--profile tiny] [--epochs N]
        [--champion-epochs 1 | --champion-weights best.pt] [--train-images 48] [--valid-images 24]
        [--data-dir DIR]

In a scratch instance (SQLite, local store, an ephemeral Dagster instance; a temporary folder
unless ``--data-dir``): a subset of doorbell-camera-alert-v4 is imported and a champion trained
and deployed on it (or ``--champion-weights``, e.g. the starter model ``make run`` or ``aidoor
bench train --data-dir`` made, registered and deployed as it is); then N doorbell frames the champion never
saw are recorded as unclassified
events and relabelled as packages through the relabel service (what ``PUT
/api/detections/{id}/classify`` does). From the last relabel the chain runs as the daemon runs it,
in this process: ``retrain_on_new_labels_sensor`` -> ``batch_job_sensor`` -> ``collection_job``
-> ``batch_job_sensor`` -> ``dataset_to_model_job`` (collect, fine-tune the champion on base +
collected data, both on the fixed evaluation set, gated deploy).

``wall_s`` = last relabel -> the challenger deployed or rejected, without the sensor intervals a
real daemon adds (retrain sensor every 60 s, batch_job_sensor every 3 s: up to ~66 s more).
Both models' mAP50 / mAP50-95 are on the fixed evaluation set (``evaluation_set``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detection_service.bench import stdout_to_stderr

REPO_ROOT = Path(__file__).resolve().parents[2]
DOORBELL = REPO_ROOT.parent / "shared" / "datasets" / "doorbell-camera-alert-v4"


def _subset(dest: Path, train: int, valid: int) -> Path:
    """A copy of the first ``train`` / ``valid`` doorbell frames (the export itself is read-only)."""
    import yaml

    for split, count in (("train", train), ("valid", valid)):
        (dest / split / "images").mkdir(parents=True)
        (dest / split / "labels").mkdir(parents=True)
        for image in sorted((DOORBELL / split / "images").iterdir())[:count]:
            shutil.copyfile(image, dest / split / "images" / image.name)
            shutil.copyfile(
                DOORBELL / split / "labels" / f"{image.stem}.txt", dest / split / "labels" / f"{image.stem}.txt"
            )
    (dest / "data.yaml").write_text(
        yaml.safe_dump({"train": "train/images", "val": "valid/images", "nc": 1, "names": ["Box"]})
    )
    return dest


def frame_event(store: Any, frame: Path, key: str, **fields: Any) -> Any:
    """A doorbell frame as an event's one capture (stored under ``key``), with the parcel box of
    its YOLO label (640 x 640 pixels), as a detector would have recorded it."""
    from schemas.db import DetectionEvent, EventImage

    store.put_bytes(key, frame.read_bytes(), "image/jpeg")
    label = frame.parent.parent / "labels" / f"{frame.stem}.txt"
    cx, cy, w, h = (float(v) for v in label.read_text().split()[1:5])
    box = {
        "x1": (cx - w / 2) * 640,
        "y1": (cy - h / 2) * 640,
        "x2": (cx + w / 2) * 640,
        "y2": (cy + h / 2) * 640,
        "width": 640,
        "height": 640,
    }
    images = [EventImage(image_path=key, sequence_number=1)]
    return DetectionEvent(bbox_coordinates=json.dumps(box), image_path=key, images=images, **fields)


def run(
    events: int = 8,
    profile: str = "tiny",
    epochs: int | None = None,
    champion_epochs: int = 1,
    train_images: int = 48,
    valid_images: int = 24,
    data_dir: Path | None = None,
    champion_weights: Path | None = None,
) -> dict[str, Any]:
    import dagster as dg
    import sqlalchemy as sa

    from assets.collection import collected_dataset
    from assets.datasets import data_yaml, dataset_version
    from assets.models import deployed_model, model_evaluation, trained_model
    from assets.partitions import dataset_versions
    from assets.resources import DatabaseResource
    from detection_service.config import Settings
    from detection_service.database import make_engine, make_session_factory, upgrade
    from detection_service.datasets.importer import import_dataset
    from detection_service.ml import registry
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.services.event_history import EventService
    from detection_service.services.settings import SettingsService
    from detection_service.storage import make_object_store
    from orchestration.resources import resources_from_settings
    from orchestration.sensors import batch_job_sensor, retrain_on_new_labels_sensor
    from schemas.db import Model, ObjectType

    scratch = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="aidoor-bench-retrain-"))
    try:
        settings = Settings.from_env(
            environ={}, data_dir=scratch / "data", database_url=f"sqlite:///{scratch / 'data' / 'bench.db'}"
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_offline(settings.data_dir)
        upgrade(settings.database_url)
        session_factory = make_session_factory(make_engine(settings.database_url))
        store = make_object_store(settings)
        store.ensure_bucket()
        resources = resources_from_settings(settings)
        database = {"database": DatabaseResource(url=settings.database_url)}
        import_dataset(session_factory, store, _subset(scratch / "export", train_images, valid_images), "doorbell")

        def train_config(n: int | None) -> dict:
            return {"ops": {"trained_model": {"config": {"profile": profile, **({"epochs": n} if n else {})}}}}

        def next_run(instance) -> dg.RunRequest:
            with dg.build_sensor_context(instance=instance, resources=database) as ctx:
                result = batch_job_sensor(ctx)
            if not isinstance(result, dg.SensorResult) or not result.run_requests:
                raise RuntimeError(f"batch_job_sensor requested no run: {result}")
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(dataset_versions.name, list(request.partition_keys))
            return result.run_requests[0]

        with dg.instance_for_test() as instance:
            started = time.monotonic()
            instance.add_dynamic_partitions(dataset_versions.name, ["doorbell@v1"])
            if champion_weights:
                row = registry.register_model(
                    session_factory,
                    store,
                    Path(champion_weights),
                    model_name="champion",
                    metrics={},
                    inference_ms=None,
                    created_by="bench",
                )
                registry.set_current_model(session_factory, row.id, actor="bench")
            else:
                first = dg.materialize(
                    [trained_model, model_evaluation, deployed_model],
                    partition_key="doorbell@v1",
                    run_config=train_config(champion_epochs),
                    instance=instance,
                    resources=resources,
                    raise_on_error=False,
                )
                if not first.success:
                    raise RuntimeError("the champion did not train")
            champion_s = time.monotonic() - started
            with session_factory() as session:
                champion = session.scalar(sa.select(Model.model_id).where(Model.is_current.is_(True)))

            # N frames the champion never saw, recorded as unclassified events with the box a
            # detector would have drawn, then relabelled by a person.
            SettingsService(session_factory).update("training", {"retrain_min_new_labels": events, "profile": profile})
            frames = sorted((DOORBELL / "valid" / "images").iterdir())[valid_images : valid_images + events]
            ids = []
            with session_factory.begin() as session:
                unclassified = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == "unclassified"))
                for n, frame in enumerate(frames):
                    event = frame_event(store, frame, f"events/bench/{n}.jpg", object_type_id=unclassified)
                    session.add(event)
                    session.flush()
                    ids.append(event.id)
            relabel = EventService(session_factory, store)
            for event_id in ids:
                relabel.classify(event_id, "package", verified=True)
            last_relabel = time.monotonic()

            with dg.build_sensor_context(instance=instance, resources=database) as ctx:
                fired = str(retrain_on_new_labels_sensor(ctx))
            if "queued" not in fired:
                raise RuntimeError(f"retrain sensor did not fire: {fired}")
            collect = next_run(instance)
            if not dg.materialize(
                [collected_dataset],
                run_config=collect.run_config,
                instance=instance,
                resources=resources,
                tags=collect.tags,
            ).success:
                raise RuntimeError("collection failed")
            collected_s = time.monotonic() - last_relabel
            retrain = next_run(instance)
            if epochs:
                retrain.run_config["ops"]["trained_model"]["config"]["epochs"] = epochs
            result = dg.materialize(
                [dataset_version, data_yaml, trained_model, model_evaluation, deployed_model],
                partition_key=retrain.partition_key,
                run_config=retrain.run_config,
                instance=instance,
                resources=resources,
                tags=retrain.tags,
                raise_on_error=False,
            )
            wall_s = time.monotonic() - last_relabel
            if not result.success:
                raise RuntimeError("the retrain run failed")
        with session_factory() as session:
            challenger = session.scalar(sa.select(Model).where(Model.model_id != champion).order_by(Model.id.desc()))
            current = session.scalar(sa.select(Model.model_id).where(Model.is_current.is_(True)))
        gate = challenger.metrics["gate"]
        champion_numbers = gate.get("champion") or {}
        return {
            "bench": "retrain",
            "events": events,
            "profile": profile,
            "epochs": challenger.metrics.get("epochs_run"),
            "wall_s": round(wall_s, 1),
            "collect_s": round(collected_s, 1),
            "champion_train_s": round(champion_s, 1),
            "champion_weights": str(champion_weights) if champion_weights else None,
            "champion": champion,
            "challenger": challenger.model_id,
            "fine_tuned_from": retrain.run_config["ops"]["trained_model"]["config"].get("base_model_id"),
            "mix": retrain.run_config["ops"]["trained_model"]["config"].get("mix"),
            "deployed": current == challenger.model_id,
            "gate": gate["reason"],
            "evaluation_set": gate["split"],
            "champion_map50": round(champion_numbers.get("map50", 0.0), 4),
            "champion_map50_95": round(champion_numbers.get("map50_95", 0.0), 4),
            "challenger_map50": round(gate["challenger"].get("map50", 0.0), 4),
            "challenger_map50_95": round(gate["challenger"].get("map50_95", 0.0), 4),
        }
    finally:
        if data_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench retrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=8, help="events relabelled (= retrain_min_new_labels)")
    parser.add_argument("--profile", default="tiny", choices=["default", "tiny"], help="training profile")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs for the retrain")
    champion = parser.add_mutually_exclusive_group()
    champion.add_argument("--champion-epochs", type=int, default=1, help="epochs of the champion trained first")
    champion.add_argument("--champion-weights", type=Path, help="deploy this .pt as the champion instead")
    parser.add_argument("--train-images", type=int, default=48, help="doorbell train frames of the base data")
    parser.add_argument("--valid-images", type=int, default=24, help="doorbell valid frames of the base data")
    parser.add_argument("--data-dir", type=Path, help="keep the scratch instance here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not DOORBELL.is_dir():
        print(f"aidoor bench retrain: {DOORBELL} is missing", file=sys.stderr)
        return 2
    with stdout_to_stderr():
        result = run(
            args.events,
            args.profile,
            args.epochs,
            args.champion_epochs,
            args.train_images,
            args.valid_images,
            args.data_dir,
            args.champion_weights,
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
