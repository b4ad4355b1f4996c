"""Dataset assets, one partition per stored dataset version ("<dataset_id>@<version>"), and the op
job that creates new versions (Roboflow sync, auto-collection, an export folder on disk)."""

from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from assets.partitions import dataset_versions, split_partition_key
from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.batch_jobs import BatchJobs, JobRun
from detection_service.config import Settings
from detection_service.services.data_yaml import DataYamlService
from detection_service.services.job_queue import queue_dataset_materialize
from detection_service.storage import keys
from schemas.batch_jobs import DatasetUpdate, encode_parameters
from schemas.datasets import ImportResult
from schemas.db import Dataset, DatasetVersion


def _distribution_md(distribution: dict) -> str:
    lines = ["| class | images | instances |", "|---|---:|---:|"]
    for name, counts in sorted((distribution or {}).items()):
        if isinstance(counts, dict):
            lines.append(f"| {name} | {counts.get('images', '')} | {counts.get('instances', '')} |")
        else:
            lines.append(f"| {name} | | {counts} |")
    return "\n".join(lines)


@dg.asset(
    partitions_def=dataset_versions,
    group_name="datasets",
    kinds={"s3"},
    description="One stored dataset version (images + YOLO labels remapped to our classes) under "
    "datasets/<dataset_id>/<version>/ in the object store, with its statistics.",
)
def dataset_version(
    context: dg.AssetExecutionContext, database: DatabaseResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    dataset_id, version = split_partition_key(context.partition_key)
    store = object_store.store()
    with database.session() as session:
        dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == dataset_id))
        if dataset is None:
            raise dg.Failure(f"dataset {dataset_id} is not registered")
        row = session.scalar(
            sa.select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == version)
        )
        if row is None:
            raise dg.Failure(f"dataset {dataset_id} has no version {version}")
        image_count, changes = row.image_count, row.changes
        distribution = dataset.class_distribution if dataset.version == version else None
    prefix = keys.dataset_version_root(dataset_id, version)
    splits: dict[str, dict[str, int]] = {}
    total_bytes = 0
    for info in store.list(prefix):
        parts = info.key[len(prefix) :].split("/")
        total_bytes += info.size
        if len(parts) == 3 and parts[1] in ("images", "labels"):
            splits.setdefault(parts[0], {"images": 0, "labels": 0})[parts[1]] += 1
    stored_images = sum(s["images"] for s in splits.values())
    if stored_images != image_count:
        raise dg.Failure(f"{prefix}: {stored_images} images stored but the database records {image_count}")
    return dg.MaterializeResult(
        metadata={
            "dataset_id": dataset_id,
            "version": version,
            "images": dg.MetadataValue.int(stored_images),
            "splits": dg.MetadataValue.json(splits),
            "bytes": dg.MetadataValue.int(total_bytes),
            "store_prefix": prefix,
            "class_distribution": dg.MetadataValue.md(_distribution_md(distribution or {})),
            "changes": (changes or "")[:2000],
        }
    )


@dg.asset(
    partitions_def=dataset_versions,
    deps=[dataset_version],
    group_name="datasets",
    description="The data.yaml of a dataset version, recorded in data_yaml (validated, versioned, active).",
)
def data_yaml(
    context: dg.AssetExecutionContext, database: DatabaseResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    dataset_id, version = split_partition_key(context.partition_key)
    service = DataYamlService(database.session_factory(), object_store.store())
    info, created = service.ensure_generated(dataset_id, version)
    return dg.MaterializeResult(
        metadata={
            "yaml_id": info.id,
            "yaml_version": info.yaml_version or "",
            "nc": info.nc,
            "names": dg.MetadataValue.json(list(info.names)),
            "is_active": bool(info.is_active),
            "file_hash": info.file_hash or "",
            "created": created,
        }
    )


class DatasetUpdateConfig(dg.Config):
    batch_job_id: int


def run_update(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    job: JobRun,
    params: DatasetUpdate,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    work_dir: Path,
    settings: Settings,
) -> ImportResult | None:
    """The dataset update ``params`` describes, for the running batch ``job`` (this op and the
    collection asset); None, with the job completed as "nothing new", when a collection finds
    nothing to add."""
    from detection_service.datasets import run_dataset_update
    from detection_service.datasets.importer import NothingToCollect

    try:
        return run_dataset_update(
            database.session_factory(), object_store.store(), encode_parameters(params), work_dir, settings=settings
        )
    except NothingToCollect as exc:
        job.complete({"nothing_new": str(exc)}, step="nothing new")
        context.log.info(f"nothing to collect: {exc}")
        return None


@dg.op(description="Creates a dataset version from the batch job's source: roboflow, auto_collect or path.")
def dataset_update(
    context: dg.OpExecutionContext,
    config: DatasetUpdateConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
    settings: dg.ResourceParam[Settings],
) -> dict:
    session_factory = database.session_factory()
    with BatchJobs(session_factory).running(config.batch_job_id, context.run_id) as job:
        params = job.parameters
        if not isinstance(params, DatasetUpdate):
            raise dg.Failure(f"batch job {config.batch_job_id} is not a dataset_update")
        job.progress(step=f"importing ({params.source})")
        result = run_update(
            context, job, params, database, object_store, paths.work_dir(f"dataset-{context.run_id}"), settings
        )
        if result is None:
            return {"nothing_new": True}
        summary = {
            "dataset_id": result.dataset_id,
            "version": result.version,
            "total_images": result.total_images,
            "total_labels": result.total_labels,
        }
        follow_up = queue_dataset_materialize(session_factory, result.dataset_id, result.version, params.train or None)
        job.complete({**summary, "follow_up_batch_job_id": follow_up})
    context.log.info(
        f"dataset version {result.dataset_id}@{result.version}: {result.total_images} images; "
        f"materialization queued as batch job {follow_up}"
    )
    return summary


@dg.job(
    description="Create a dataset version (Roboflow sync, auto-collection, export folder); "
    "its assets are materialized by a follow-up run."
)
def dataset_update_job():
    dataset_update()
