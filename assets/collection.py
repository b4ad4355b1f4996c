"""Auto-collection as an asset: verified events -> a new dataset version (docs/datasets.md).

``collected_dataset`` runs ``collect_verified`` for a queued ``dataset_update`` job with
``source: auto_collect`` (``POST /api/datasets/auto-collect``, the retrain sensor) or for the
dataset named in its config, records events and split counts as metadata, and queues the new
version's materialization (``dataset_materialize``; with the job's ``train`` block: training and
the gated deploy).
"""

from pathlib import Path
from typing import Optional

import dagster as dg

from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.config import Settings
from detection_service.services.jobs import queue_dataset_materialize
from schemas.db import BatchJob, utcnow
from schemas.enums import JobStatus


class CollectConfig(dg.Config):
    batch_job_id: Optional[int] = None  # the queued dataset_update job (its parameters win)
    dataset_id: Optional[str] = None
    auto_label: bool = True
    since_version: Optional[str] = None


def _close(session_factory, job_id: Optional[int], **values) -> None:
    if job_id is None:
        return
    with session_factory.begin() as session:
        job = session.get(BatchJob, job_id)
        if job is not None:
            for key, value in values.items():
                setattr(job, key, value)
            job.completed_at = utcnow()


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
    from detection_service.datasets import run_dataset_update
    from detection_service.datasets.importer import NothingToCollect
    from detection_service.ml.ultralytics_env import configure_offline

    configure_offline(Path(paths.data_dir))
    session_factory = database.session_factory()
    params = {"source": "auto_collect", "dataset_id": config.dataset_id, "auto_label": config.auto_label,
              "since_version": config.since_version}
    if config.batch_job_id is not None:
        with session_factory.begin() as session:
            job = session.get(BatchJob, config.batch_job_id)
            if job is None:
                raise dg.Failure(f"batch job {config.batch_job_id} not found")
            if JobStatus(job.status).is_finished:
                raise dg.Failure(f"batch job {job.id} is already {job.status}")
            params = dict(job.parameters or {})
            job.status, job.started_at, job.dagster_run_id = JobStatus.RUNNING, utcnow(), context.run_id
            job.current_step = "collecting verified events"
    if not params.get("dataset_id"):
        raise dg.Failure("no dataset_id to collect into")
    store = object_store.store()
    try:
        result = run_dataset_update(session_factory, store, params, paths.work_dir(f"collect-{context.run_id}"),
                                    settings=settings)
    except NothingToCollect as exc:
        _close(session_factory, config.batch_job_id, status=JobStatus.COMPLETED, current_step="nothing new",
               result={"nothing_new": str(exc)})
        context.log.info(f"nothing to collect: {exc}")
        return
    except Exception as exc:
        _close(session_factory, config.batch_job_id, status=JobStatus.FAILED,
               error_message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    follow_up = queue_dataset_materialize(session_factory, result.dataset_id, result.version, params.get("train"))
    splits = {name: count.images for name, count in result.splits.items()}
    summary = {"dataset_id": result.dataset_id, "version": result.version, "total_images": result.total_images,
               "total_labels": result.total_labels, "collected_events": len(result.collected_events),
               "auto_labeled_images": result.auto_labeled_images, "splits": splits}
    _close(session_factory, config.batch_job_id, status=JobStatus.COMPLETED, progress_percentage=100,
           current_step="done", result={**summary, "follow_up_batch_job_id": follow_up})
    context.log.info(f"{result.dataset_id}@{result.version}: {len(result.collected_events)} new verified event(s), "
                     f"splits {splits}; materialization queued as batch job {follow_up}")
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
    "collection_job", selection=[collected_dataset],
    description="Auto-collection: verified events -> a new dataset version (then its materialization is queued).",
)
