"""Auto-collection as an asset: verified events -> a new dataset version (docs/datasets.md).

``collected_dataset`` runs ``collect_verified`` for a queued ``dataset_update`` job with
``source: auto_collect`` (``POST /api/datasets/auto-collect``, the retrain sensor) or for the
dataset named in its config, records events and split counts as metadata, and queues the new
version's materialization (``dataset_materialize``; with the job's ``train`` block: training and
the gated deploy).
"""

from pathlib import Path

import dagster as dg

from assets.datasets import run_update
from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.batch_jobs import BatchJobs
from detection_service.config import Settings
from detection_service.services.job_queue import queue_dataset_materialize
from schemas.batch_jobs import DatasetUpdate


class CollectConfig(dg.Config):
    batch_job_id: int | None = None  # the queued dataset_update job (its parameters win)
    dataset_id: str | None = None
    auto_label: bool = True
    since_version: str | None = None


@dg.asset(
    group_name="datasets",
    kinds={"s3"},
    output_required=False,
    description="Verified detection events collected into a new dataset version: captures of an event share "
    "one split (event-id hash, ~20% valid); model labels of unverified captures kept apart in auto_labeled/.",
)
def collected_dataset(
    context: dg.AssetExecutionContext,
    config: CollectConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
    paths: LocalPathsResource,
    settings: dg.ResourceParam[Settings],
):
    from detection_service.ml.ultralytics_env import configure_offline

    configure_offline(Path(paths.data_dir))
    session_factory = database.session_factory()
    with BatchJobs(session_factory).running(config.batch_job_id, context.run_id, "collecting verified events") as job:
        params = job.parameters  # the queued job's parameters win over the config
        if not isinstance(params, DatasetUpdate):
            if not config.dataset_id:
                raise dg.Failure("no dataset_id to collect into")
            params = DatasetUpdate(
                source="auto_collect",
                dataset_id=config.dataset_id,
                auto_label=config.auto_label,
                since_version=config.since_version,
            )
        result = run_update(
            context, job, params, database, object_store, paths.work_dir(f"collect-{context.run_id}"), settings
        )
        if result is None:
            return
        follow_up = queue_dataset_materialize(session_factory, result.dataset_id, result.version, params.train or None)
        splits = {name: count.images for name, count in result.splits.items()}
        summary = {
            "dataset_id": result.dataset_id,
            "version": result.version,
            "total_images": result.total_images,
            "total_labels": result.total_labels,
            "collected_events": len(result.collected_events),
            "auto_labeled_images": result.auto_labeled_images,
            "splits": splits,
        }
        job.complete({**summary, "follow_up_batch_job_id": follow_up})
    context.log.info(
        f"{result.dataset_id}@{result.version}: {len(result.collected_events)} new verified event(s), "
        f"splits {splits}; materialization queued as batch job {follow_up}"
    )
    yield dg.Output(
        f"{result.dataset_id}@{result.version}",
        metadata={
            "dataset_id": result.dataset_id,
            "version": result.version,
            "events_collected": dg.MetadataValue.int(len(result.collected_events)),
            "event_ids": dg.MetadataValue.json(result.collected_events[:500]),
            "splits": dg.MetadataValue.json(splits),
            "images": dg.MetadataValue.int(result.total_images),
            "auto_labeled_images": dg.MetadataValue.int(result.auto_labeled_images),
            "problems": dg.MetadataValue.int(len(result.problems)),
            "base_version": result.base_version or "",
            "follow_up_batch_job_id": follow_up,
        },
    )


collection_job = dg.define_asset_job(
    "collection_job",
    selection=[collected_dataset],
    description="Auto-collection: verified events -> a new dataset version (then its materialization is queued).",
)
