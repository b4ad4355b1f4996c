"""Model assets, partitioned by dataset version: trained_model -> model_evaluation -> deployed_model."""

import shutil
from pathlib import Path

import dagster as dg
import msgspec
import sqlalchemy as sa

from assets.partitions import dataset_versions, split_partition_key
from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.ml.progress import TrainingProgress
from detection_service.ml.registry import fetch_model, register_model, set_current_model
from detection_service.ml.ultralytics_env import configure_offline
from schemas.db import Model

HEAVY = {"aidoor/heavy": "true"}


class TrainModelConfig(dg.Config):
    """One training run. Unset fields take the profile's values (see docs/training.md)."""

    training_id: int | None = None  # model_training row that receives live progress
    batch_job_id: int | None = None
    profile: str = "default"
    epochs: int | None = None
    batch_size: int | None = None
    imgsz: int | None = None
    base_model_id: str | None = None  # fine-tune one of our models instead of random init
    # More dataset versions to train on together with the partition's ("dataset@version", or a bare
    # dataset id = its latest version); teacher overlays of each come along (ml/training_data.py).
    mix: list[str] = []
    confidence_threshold: float = 0.5
    sensitivity: str = "medium"
    # Torch device of the training, handed to Ultralytics: cpu, cuda, cuda:N, N or N,M, mps. A GPU
    # needs the run on a machine that has one: the service tags such runs aidoor/gpu=true, and an
    # instance with infra/dagster-gpu.yaml launches them on the GPU worker (docs/training.md).
    device: str = "cpu"


class DeployConfig(dg.Config):
    force: bool = False  # deploy even if the gate says the challenger is not better


def keep_base_classes(base: Model, weights: Path, data_yaml: Path):
    """Fine-tuning must not make a model forget: the classes the base model knows and the training
    mix has no box of are labelled on the mix's images by the base model itself, before training.
    Our own models know the classes they were evaluated on with boxes; a model from elsewhere the
    classes that map onto ours by name. Returns the lineage entry, or None when nothing was missing."""
    from detection_service.ml import teacher
    from detection_service.ml.mixing import SPLIT_KEYS, add_labels, split_images, train_instances
    from detection_service.ml.training_data import LineageEntry

    missing = [name for name, count in train_instances(data_yaml).items() if not count]
    learned = {row[0] for row in (base.metrics or {}).get("per_class") or [] if row[2]}
    model = teacher.load_teacher(weights)
    classes = [c for c in missing if teacher.class_mapping(model.names, [c]) and (not learned or c in learned)]
    if not classes:
        return None
    images = [image for key, _ in SPLIT_KEYS for image in split_images(data_yaml, key)]
    # At the size and threshold the model itself detects at: a 256-px student labels poorly at 640.
    # Per class at its calibrated operating point: the model's labels are what it would detect.
    threshold, imgsz, per_class = teacher.labelling_settings(weights, model)
    labels = teacher.label_images(model, images, classes, threshold=threshold, imgsz=imgsz, class_thresholds=per_class)
    added = add_labels(data_yaml, labels)
    return LineageEntry(
        ref=f"model:{base.model_id}",
        role="teacher",
        group="mix",
        labels_for=f"{', '.join(classes)} ({added} boxes on the mix's images)",
    )


@dg.asset(
    partitions_def=dataset_versions,
    deps=[dg.AssetKey("data_yaml"), dg.AssetKey("teacher_labels")],
    group_name="models",
    kinds={"pytorch"},
    op_tags=HEAVY,
    check_specs=[dg.AssetCheckSpec("metrics_sane", asset="trained_model")],
    description="A YOLO model trained offline on a dataset version plus its mix (more versions, and the "
    "teacher labels of each), from the model YAML or fine-tuned from one of our models. Weights + ONNX go to "
    "models/<model_id>/; metrics carry the lineage (every dataset version and its role).",
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainModelConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
):
    from detection_service.ml.mixing import merge_datasets
    from detection_service.ml.training import (
        TrainingCancelled,
        TrainParams,
        evaluate,
        export_onnx,
        per_class_markdown,
        train,
        write_inference_config,
    )
    from detection_service.ml.training_data import training_sources

    configure_offline(Path(paths.data_dir))
    dataset_id, version = split_partition_key(context.partition_key)
    store = object_store.store()
    session_factory = database.session_factory()
    progress = TrainingProgress(session_factory, config.training_id, config.batch_job_id)
    progress.started(context.run_id)
    work_dir = paths.work_dir(f"train-{context.run_id}")
    try:
        params = TrainParams(
            profile=config.profile,
            epochs=config.epochs,
            batch_size=config.batch_size,
            imgsz=config.imgsz,
            confidence_threshold=config.confidence_threshold,
            sensitivity=config.sensitivity,
            device=config.device,
        )
        context.log.info(f"training on device {params.device}")
        progress.step("fetching the training data", 1)
        sources, lineage = training_sources(
            session_factory,
            store,
            paths.cache_dir(),
            [context.partition_key, *config.mix],
            params.max_images_per_source,
        )
        data_yaml = merge_datasets(sources, work_dir / "data")
        context.log.info("training on " + ", ".join(f"{e.ref} ({e.role})" for e in lineage))
        source = params.model
        if config.base_model_id:
            with session_factory() as session:
                base = session.scalar(sa.select(Model).where(Model.model_id == config.base_model_id))
            if base is None:
                raise dg.Failure(f"base model {config.base_model_id} is not registered")
            source = str(fetch_model(store, base.model_id, base.model_path, paths.cache_dir()))
            progress.step(f"labelling what {base.model_id} knows and the new data lacks", 2)
            kept = keep_base_classes(base, Path(source), data_yaml)
            if kept:
                lineage.append(kept)
                context.log.info(f"{base.model_id} labelled the classes the data lacks: {kept.labels_for}")
        params = params.for_fine_tune(source) if config.base_model_id else msgspec.structs.replace(params, model=source)

        def on_epoch(epoch) -> None:
            progress.on_epoch(epoch)
            losses = " ".join(f"{k}={v:.3f}" for k, v in epoch.losses.items())
            context.log.info(
                f"epoch {epoch.epoch}/{epoch.epochs} ({epoch.progress_pct:.0f}%) {losses} {epoch.metrics or ''}"
            )

        result = train(data_yaml, work_dir, params, on_epoch=on_epoch, should_cancel=progress.should_cancel)
        progress.step("evaluating on the valid split", 96)
        evaluation = evaluate(result.best_weights, data_yaml, "val", params.imgsz)
        # The detector calibrates with what this evaluation (batch 1, as the cameras run) found,
        # so aidoor.json, the stored metrics and the metadata table show the same operating points.
        write_inference_config(
            result.best_weights,
            msgspec.structs.replace(result.inference, class_thresholds=evaluation.class_thresholds),
        )
        progress.step("exporting ONNX", 98)
        onnx = export_onnx(result.best_weights, params.imgsz)
        metrics = {
            **evaluation.metrics,
            "per_class": [list(row) for row in evaluation.per_class],
            "class_thresholds": evaluation.class_thresholds,  # raw score of each class's best F1 (= 0.5)
            "inference_ms": round(evaluation.inference_ms, 2),
            "epochs_run": result.epochs_run,
            "train_wall_s": round(result.wall_s, 1),
            "dataset": {"dataset_id": dataset_id, "version": version, "split": "val"},
            "lineage": [msgspec.to_builtins(entry) for entry in lineage],
            "base_model_id": config.base_model_id,
            "training_params": msgspec.to_builtins(params),
            "dagster_run_id": context.run_id,
        }
        row = register_model(
            session_factory,
            store,
            result.best_weights,
            model_name=f"{dataset_id} {version} ({params.profile})",
            metrics=metrics,
            inference_ms=evaluation.inference_ms,
            onnx=onnx,
        )
        int8 = None
        if params.profile != "tiny":  # tiny = the tests' profile: no INT8 (quantize + 2 evaluations)
            from detection_service.ml.quantize import int8_for_registered_model

            progress.step("INT8 quantization and its mAP check", 99)
            int8 = int8_for_registered_model(
                result.best_weights, params.imgsz, data_yaml, paths.cache_dir(), row.model_id
            )
            context.log.info(f"INT8: {msgspec.to_builtins(int8) if int8 else 'not made'}")
        progress.finished(row.id, metrics, result.wall_s, {"model_id": row.model_id})
    except TrainingCancelled:
        progress.failed("cancelled by request", cancelled=True)
        raise dg.Failure("training cancelled by request") from None
    except Exception as exc:
        progress.failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    m = evaluation.metrics
    yield dg.Output(
        row.model_id,
        metadata={
            "model_id": row.model_id,
            "int8": dg.MetadataValue.json(msgspec.to_builtins(int8) if int8 else {"made": False}),
            "mAP50": dg.MetadataValue.float(m["map50"]),
            "mAP50-95": dg.MetadataValue.float(m["map50_95"]),
            "precision": dg.MetadataValue.float(m["precision"]),
            "recall": dg.MetadataValue.float(m["recall"]),
            "per_class": dg.MetadataValue.md(per_class_markdown(evaluation)),
            "class_thresholds": dg.MetadataValue.json(evaluation.class_thresholds),
            "inference_ms_per_image": dg.MetadataValue.float(round(evaluation.inference_ms, 2)),
            "model_size_bytes": dg.MetadataValue.int(row.model_size or 0),
            "epochs_run": result.epochs_run,
            "imgsz": params.imgsz,
            "weights": row.model_path,
            "lineage": dg.MetadataValue.md(
                "\n".join(["| dataset version | role |", "|---|---|"] + [f"| {e.ref} | {e.role} |" for e in lineage])
            ),
            "train_wall_s": dg.MetadataValue.float(round(result.wall_s, 1)),
        },
    )
    values = [m.get(k) for k in ("map50", "map50_95", "precision", "recall")]
    sane = all(v is not None and 0.0 <= v <= 1.0 for v in values) and m["map50_95"] <= m["map50"] + 1e-6
    yield dg.AssetCheckResult(
        check_name="metrics_sane",
        passed=sane,
        asset_key="trained_model",
        metadata={"map50": m.get("map50"), "map50_95": m.get("map50_95")},
    )


@dg.asset(
    partitions_def=dataset_versions,
    deps=[dg.AssetKey("evaluation_set")],
    group_name="models",
    op_tags=HEAVY,
    check_specs=[dg.AssetCheckSpec("beats_champion", asset="model_evaluation")],
    description="The challenger and the deployed champion evaluated on the same fixed evaluation set "
    "(latest evaluation-set version, brought up to date first): the per-class champion/challenger gate.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    trained_model: str,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
):
    from assets.evaluation import collected_dataset_id, evaluation_set_metadata, gate_metadata
    from detection_service.ml.gating import run_gate

    configure_offline(Path(paths.data_dir))
    session_factory = database.session_factory()
    try:
        outcome = run_gate(
            session_factory,
            object_store.store(),
            paths.cache_dir(),
            trained_model,
            collected_dataset_id=collected_dataset_id(session_factory),
            on_log=context.log.info,
        )
    except LookupError as exc:
        raise dg.Failure(str(exc)) from None
    if outcome.evaluation_set.created:
        context.log_event(
            dg.AssetMaterialization(
                asset_key="evaluation_set", metadata=evaluation_set_metadata(outcome.evaluation_set)
            )
        )
    verdict = outcome.verdict
    context.log.info(f"gate: {verdict.reason}")
    yield dg.Output(msgspec.to_builtins(verdict), metadata=gate_metadata(outcome))
    yield dg.AssetCheckResult(
        check_name="beats_champion",
        passed=verdict.passed,
        asset_key="model_evaluation",
        metadata={"reason": verdict.reason, "evaluation_set": verdict.split},
    )


@dg.asset(
    partitions_def=dataset_versions,
    group_name="models",
    output_required=False,
    description="Makes the evaluated model current when it passed the gate (or when forced). The detection "
    "service notices within seconds and swaps its detector without a restart.",
)
def deployed_model(
    context: dg.AssetExecutionContext, config: DeployConfig, model_evaluation: dict, database: DatabaseResource
):
    model_id = model_evaluation["challenger_id"]
    if not (model_evaluation["passed"] or config.force):
        context.log.warning(f"{model_id} not deployed: {model_evaluation['reason']}")
        return
    session_factory = database.session_factory()
    with session_factory() as session:
        pk = session.scalar(sa.select(Model.id).where(Model.model_id == model_id))
    set_current_model(session_factory, pk, actor=f"dagster:{context.run_id[:8]}")
    yield dg.Output(
        model_id,
        metadata={
            "model_id": model_id,
            "forced": config.force and not model_evaluation["passed"],
            "gate": model_evaluation["reason"],
        },
    )
