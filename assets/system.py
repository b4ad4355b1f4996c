"""System assets: snapshots of what the deployment holds, and the archive of old system logs."""

from collections import defaultdict

import dagster as dg

from assets.resources import DatabaseResource, ObjectStoreResource
from detection_service.batch_jobs import BatchJobs, batch_job_id_of
from detection_service.services.log_archive import LogArchiveService
from detection_service.services.settings import SettingsService
from schemas.db import SystemStatusLog
from schemas.settings import StorageSettings

GB = 1024**3


@dg.asset(
    group_name="system",
    kinds={"python"},
    description="Bytes and object counts in the object store, by top-level prefix "
    "(events/, datasets/, models/, reports/), against the storage quota (max_size_gb).",
)
def storage_usage(
    context: dg.AssetExecutionContext, database: DatabaseResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    store = object_store.store()
    by_prefix: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for info in store.list(""):
        prefix = info.key.split("/", 1)[0] + "/" if "/" in info.key else "(top level)"
        by_prefix[prefix][0] += 1
        by_prefix[prefix][1] += info.size
    total_objects = sum(count for count, _ in by_prefix.values())
    total_bytes = sum(size for _, size in by_prefix.values())

    quota: StorageSettings = SettingsService(database.session_factory()).get("storage")  # type: ignore[assignment]
    quota_pct = round(100.0 * total_bytes / (quota.max_size_gb * GB), 3)
    with database.session() as session:
        session.add(
            SystemStatusLog(
                component="storage",
                status="running",
                disk_usage=min(quota_pct, 999.99),
                metadata_={"objects": total_objects, "bytes": total_bytes, "by_prefix": dict(by_prefix)},
            )
        )
    context.log.info(
        "object store %s: %d objects, %d bytes (%.2f%% of quota)", store.bucket, total_objects, total_bytes, quota_pct
    )
    table = "| prefix | objects | bytes |\n|---|---:|---:|\n" + "".join(
        f"| `{prefix}` | {count} | {size} |\n" for prefix, (count, size) in sorted(by_prefix.items())
    )
    return dg.MaterializeResult(
        metadata={
            "backend": store.kind,
            "bucket": store.bucket,
            "objects": dg.MetadataValue.int(total_objects),
            "bytes": dg.MetadataValue.int(total_bytes),
            "quota_gb": dg.MetadataValue.float(float(quota.max_size_gb)),
            "quota_used_pct": dg.MetadataValue.float(quota_pct),
            "by_prefix": dg.MetadataValue.md(table),
        }
    )


@dg.asset(
    group_name="system",
    kinds={"python"},
    description="system_logs rows older than the retention (storage.max_days) written to the object store as "
    "gzip-compressed JSON lines (logs/system_logs/YYYY/MM/DD/<first id>-<last id>.jsonl.gz), then deleted. "
    "Nightly (log_archive_nightly) and on demand (a log_archive batch job, POST /api/batch/trigger).",
)
def system_log_archive(
    context: dg.AssetExecutionContext, database: DatabaseResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    session_factory = database.session_factory()
    # A batch job's run claims its row (a cancelled job does not run); a scheduled run has none.
    with BatchJobs(session_factory).running(batch_job_id_of(context.run.tags), context.run_id, "archiving") as job:

        def progress(done: int, total: int) -> None:
            job.progress(round(100 * done / total) if total else None, f"archived {done} of {total} rows")

        report = LogArchiveService(session_factory, object_store.store()).archive(progress=progress)
        job.complete(
            {
                "rows_archived": report.rows_archived,
                "object_keys": report.object_keys,
                "bytes": report.bytes_written,
                "cutoff": report.cutoff.isoformat() + "Z",
            }
        )
    context.log.info(
        f"log archive: {report.rows_archived} rows older than {report.cutoff:%Y-%m-%d %H:%M} UTC "
        f"in {len(report.object_keys)} object(s), {report.bytes_written} bytes"
    )
    return dg.MaterializeResult(
        metadata={
            "rows_archived": dg.MetadataValue.int(report.rows_archived),
            "object_key": dg.MetadataValue.text(report.object_keys[-1] if report.object_keys else "(none)"),
            "object_keys": dg.MetadataValue.json(report.object_keys),
            "bytes": dg.MetadataValue.int(report.bytes_written),
            "retention_days": dg.MetadataValue.int(report.retention_days),
            "cutoff": dg.MetadataValue.text(report.cutoff.isoformat() + "Z"),
            "duration_ms": dg.MetadataValue.int(report.duration_ms),
        }
    )


log_archive_job = dg.define_asset_job(
    "log_archive_job",
    selection=[system_log_archive],
    description="Archive old system_logs rows to the object store and delete them (log_archive batch jobs, "
    "schedule log_archive_nightly).",
)
