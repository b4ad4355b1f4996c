"""Teacher labels: a model from elsewhere labels the classes a dataset version lacks (people in the
doorbell frames), as a dataset version of its own, ``<dataset_id>-teacher``."""

from datetime import UTC
from pathlib import Path

import dagster as dg

from assets.partitions import dataset_versions, split_partition_key
from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.config import Settings
from detection_service.datasets.importer import VersionDraft, VersionFile, load_version_files, publish_version
from detection_service.ml import teacher
from detection_service.ml.classes import MODEL_CLASSES
from detection_service.ml.registry import fetch_dataset_version
from detection_service.ml.training_data import resolve_ref, teacher_dataset_id
from detection_service.ml.ultralytics_env import configure_offline
from schemas.db import utcnow


class TeacherConfig(dg.Config):
    model_path: str | None = None  # default: AIDOOR_TEACHER_MODEL or the COCO model in shared/
    threshold: float = teacher.DEFAULT_THRESHOLD
    classes: list[str] | None = None  # default: our classes the dataset version has no box of
    imgsz: int = teacher.DEFAULT_IMGSZ


@dg.asset(
    partitions_def=dataset_versions,
    deps=[dg.AssetKey("dataset_version")],
    group_name="datasets",
    kinds={"openvino"},
    op_tags={"aidoor/heavy": "true"},
    description="Boxes a model from elsewhere (default: the COCO YOLOv8n in shared/models) draws for the "
    "classes this dataset version has no labels for, stored apart from the human labels as a version of "
    "<dataset_id>-teacher (provenance: model, sha256, threshold, time). Training merges them per image.",
)
def teacher_labels(
    context: dg.AssetExecutionContext,
    config: TeacherConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    dataset_id, version = split_partition_key(context.partition_key)
    session_factory = database.session_factory()
    with session_factory() as session:
        _, _, changes = resolve_ref(session, context.partition_key)
    if changes.get("kind") in ("teacher", "auto_collect"):
        return dg.MaterializeResult(metadata={"skipped": f"{changes.get('kind')} versions are not teacher-labelled"})
    model_path = Path(config.model_path) if config.model_path else teacher.teacher_model_path(settings)
    if model_path is None or not model_path.exists():
        context.log.warning("no teacher model (AIDOOR_TEACHER_MODEL): no teacher labels")
        return dg.MaterializeResult(metadata={"skipped": "no teacher model configured"})
    labelled = {
        name
        for name, counts in (changes.get("class_distribution") or {}).items()
        if (counts.get("instances") if isinstance(counts, dict) else counts)
    }
    wanted = config.classes or [c for c in MODEL_CLASSES if c not in labelled]
    configure_offline(Path(paths.data_dir))
    model = teacher.load_teacher(model_path)
    classes = [c for c in wanted if teacher.class_mapping(model.names, [c])]
    if not classes:
        context.log.info(f"the teacher knows none of the missing classes {wanted}: nothing to label")
        return dg.MaterializeResult(metadata={"skipped": f"teacher knows none of {wanted}"})

    store = object_store.store()
    local_yaml = fetch_dataset_version(store, dataset_id, version, paths.cache_dir())
    root = local_yaml.parent
    files = [f for f in load_version_files(store, dataset_id, version) if f.label is not None]
    images = [root / f.split / "images" / f.name for f in files]

    def progress(done: int, total: int) -> None:
        context.log.info(f"teacher labelling {done}/{total} ({100 * done // total}%)")

    started = utcnow()
    labels = teacher.label_images(
        model, images, classes, threshold=config.threshold, imgsz=config.imgsz, on_progress=progress
    )
    out_files = [
        VersionFile(f.split, f.name, f.image, "".join(f"{line}\n" for line in labels[image]))
        for f, image in zip(files, images)
    ]
    boxes = sum(len(v) for v in labels.values())
    with_boxes = sum(1 for v in labels.values() if v)
    provenance = {
        "base": context.partition_key,
        "model": str(model_path),
        "model_sha256": teacher.fingerprint(model_path),
        "threshold": config.threshold,
        "imgsz": config.imgsz,
        "classes": classes,
        "created_at": started.replace(tzinfo=UTC).isoformat(),
        "dagster_run_id": context.run_id,
    }
    result = publish_version(
        session_factory,
        store,
        VersionDraft(
            dataset_id=teacher_dataset_id(dataset_id),
            files=out_files,
            source="teacher",
            source_detail=f"{model_path.name} on {context.partition_key}",
            name=f"{dataset_id} (teacher labels)",
            description=f"Boxes for {', '.join(classes)} drawn by {model_path.name} on {context.partition_key}; "
            "a version uploaded here by a person replaces them",
            extra_changes={"teacher": provenance},
        ),
    )
    context.log.info(
        f"{with_boxes} of {len(images)} images got {boxes} teacher boxes -> {result.dataset_id}@{result.version}"
    )
    return dg.MaterializeResult(
        metadata={
            "teacher_dataset": f"{result.dataset_id}@{result.version}",
            "teacher_model": str(model_path),
            "threshold": config.threshold,
            "classes": ", ".join(classes),
            "images": dg.MetadataValue.int(len(images)),
            "images_with_boxes": dg.MetadataValue.int(with_boxes),
            "boxes": dg.MetadataValue.int(boxes),
        }
    )
