"""Analytics reports as partitioned assets: one partition per local day or week of the alert time
zone (``AIDOOR_ALERT_TIMEZONE``, read once by ``Settings``), downstream of the events table.

Each materialization builds the report with ``ReportService`` (detection_service/services/reports.py),
stores ``reports/<type>/<period>/`` (JSON, CSV, HTML, chart PNGs) in the object store, and checks
that the counts it stored match a plain count of the database (``counts_match_database``).
orchestration/reports.py has the jobs and schedules; a ``report_generate`` batch job runs one
partition through the batch_job_sensor.
"""

import dagster as dg
import sqlalchemy as sa

from assets.resources import DatabaseResource, ObjectStoreResource
from detection_service.batch_jobs import BatchJobs
from detection_service.config import Settings
from detection_service.services.reports import TITLES, ReportService
from schemas.db import DetectionEvent
from schemas.reports import REPORT_CADENCE, REPORTS_START, Report

# The partitions' time zone is fixed when the code location loads; the service reads the same setting.
REPORT_TIME_ZONE = Settings.from_env().alert_timezone
daily_report_partitions = dg.DailyPartitionsDefinition(
    start_date=REPORTS_START.isoformat(), timezone=REPORT_TIME_ZONE, end_offset=0
)
weekly_report_partitions = dg.WeeklyPartitionsDefinition(
    start_date=REPORTS_START.isoformat(), day_offset=1, timezone=REPORT_TIME_ZONE, end_offset=0
)
PARTITIONS = {"day": daily_report_partitions, "week": weekly_report_partitions}
COUNTS_CHECK = "counts_match_database"


@dg.observable_source_asset(
    name="detection_events",
    group_name="events",
    description="The detection_events table the realtime pipeline writes (one row per arrival). Observed: "
    "row count and newest id/update, so the UI shows when the reports built on it are stale.",
)
def detection_events(database: DatabaseResource) -> dg.DataVersion:
    e = DetectionEvent
    with database.session_factory()() as session:
        count, newest, updated = session.execute(
            sa.select(sa.func.count(), sa.func.max(e.id), sa.func.max(e.updated_at))
        ).one()
    return dg.DataVersion(f"{count}:{newest}:{updated}")


system_status_logs = dg.AssetSpec(
    "system_status_logs",
    group_name="events",
    description="Component status rows (camera, detection, notification, storage) the service writes; "
    "the security report lists their outages.",
)


class ReportConfig(dg.Config):
    batch_job_id: int | None = None  # the report_generate job this run executes (batch_job_sensor)


def _preview(report: Report) -> str:
    lines = [f"**{report.title}** ({report.time_zone})", ""]
    lines += [f"- {line}" for line in report.summary]
    table = report.tables[0] if report.tables else None
    if table and table.rows:
        lines += ["", f"| {' | '.join(table.columns)} |", "|" + "---|" * len(table.columns)]
        lines += [f"| {' | '.join('' if v is None else str(v) for v in row)} |" for row in table.rows[:10]]
    return "\n".join(lines)


def _build(report_type: str) -> dg.AssetsDefinition:
    cadence = REPORT_CADENCE[report_type]
    deps = [detection_events] + ([system_status_logs] if report_type == "security_report" else [])

    @dg.asset(
        name=report_type,
        group_name="reports",
        kinds={"python", "html"},
        partitions_def=PARTITIONS[cadence],
        deps=deps,
        check_specs=[
            dg.AssetCheckSpec(
                COUNTS_CHECK, asset=report_type, description="the stored report's counts = a plain count now"
            )
        ],
        description=f"{TITLES[report_type]} per local {cadence} ({REPORT_TIME_ZONE}): JSON, CSV and a "
        f"self-contained HTML page in reports/{report_type}/<period>/ (GET /api/analytics/reports).",
    )
    def report_asset(
        context: dg.AssetExecutionContext,
        config: ReportConfig,
        database: DatabaseResource,
        object_store: ObjectStoreResource,
    ) -> dg.MaterializeResult:
        key = context.partition_key
        session_factory = database.session_factory()
        service = ReportService(session_factory, object_store.store(), REPORT_TIME_ZONE)
        with BatchJobs(session_factory).running(config.batch_job_id, context.run_id, f"{report_type} {key}") as job:

            def progress(percentage: int, step: str) -> None:
                context.log.info(f"{report_type} {key}: {step}")
                job.progress(percentage, step)

            report = service.materialize(report_type, key, progress)
            # The check reads the stored report back and counts the database again.
            stored = service.stored(report_type, key)
            counted = service.database_counts(report)
            differ = {
                name: {"report": (stored.counts if stored else {}).get(name), "database": value}
                for name, value in counted.items()
                if stored is None or stored.counts.get(name) != value
            }
            keys = service.keys(report_type, key)
            job.complete(result={"report_type": report_type, "period": key, "keys": keys, "counts": report.counts})
        return dg.MaterializeResult(
            metadata={
                "period": key,
                "local_window": f"{report.local_start} – {report.local_end} {report.time_zone}",
                **{name: dg.MetadataValue.int(value) for name, value in report.counts.items()},
                "preview": dg.MetadataValue.md(_preview(report)),
                "keys": dg.MetadataValue.json(keys),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=COUNTS_CHECK,
                    passed=not differ,
                    metadata={"compared": sorted(counted), "differences": dg.MetadataValue.json(differ)},
                    description="stored counts match the database"
                    if not differ
                    else f"{len(differ)} count(s) differ from the database",
                )
            ],
        )

    return report_asset


daily_summary = _build("daily_summary")
weekly_pattern = _build("weekly_pattern")
visitor_analysis = _build("visitor_analysis")
security_report = _build("security_report")
REPORT_ASSETS = [daily_summary, weekly_pattern, visitor_analysis, security_report]
DAILY_REPORTS = [a for a in REPORT_ASSETS if REPORT_CADENCE[a.key.path[-1]] == "day"]
WEEKLY_REPORTS = [a for a in REPORT_ASSETS if REPORT_CADENCE[a.key.path[-1]] == "week"]
