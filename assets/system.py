"""System assets: snapshots of what the deployment holds."""

from collections import defaultdict

import dagster as dg

from assets.resources import DatabaseResource, ObjectStoreResource
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
