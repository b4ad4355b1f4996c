"""Jobs and schedules of the report assets (assets/reports.py).

A schedule per cadence materializes the period that just ended, shortly after local midnight in
the alert time zone: yesterday's daily reports at 00:15, last week's weekly reports on Monday at
00:30. A ``report_generate`` batch job runs one report's partition in its type's job
(``REPORT_TYPE_JOBS``, ``report_run``; its entry in orchestration/batch_runs.py).
"""

from typing import Any

import dagster as dg

from assets.reports import (
    DAILY_REPORTS,
    PARTITIONS,
    REPORT_ASSETS,
    WEEKLY_REPORTS,
    daily_report_partitions,
    weekly_report_partitions,
)
from schemas.batch_jobs import ReportGenerate
from schemas.reports import REPORT_CADENCE

daily_reports_job = dg.define_asset_job(
    "daily_reports_job", selection=DAILY_REPORTS, partitions_def=daily_report_partitions
)
weekly_reports_job = dg.define_asset_job(
    "weekly_reports_job", selection=WEEKLY_REPORTS, partitions_def=weekly_report_partitions
)
# One job per report type: a report_generate batch job materializes just its own report, and
# the asset's bookkeeping of that job (BatchJobs.running) happens once.
REPORT_TYPE_JOBS = {
    asset.key.path[-1]: dg.define_asset_job(
        f"{asset.key.path[-1]}_report_job",
        selection=[asset],
        partitions_def=PARTITIONS[REPORT_CADENCE[asset.key.path[-1]]],
    )
    for asset in REPORT_ASSETS
}


def report_run(job_id: int, params: ReportGenerate) -> tuple[Any, dict[str, Any], str]:
    """(job, run config, partition key) of a report_generate batch job. ValueError for a period
    that is not a partition yet (not over), so the sensor fails the job instead of launching it."""
    if params.period not in PARTITIONS[REPORT_CADENCE[params.report_type]].get_partition_keys():
        raise ValueError(f"{params.report_type} {params.period} is not over yet (no partition)")
    config = {"ops": {params.report_type: {"config": {"batch_job_id": job_id}}}}
    return REPORT_TYPE_JOBS[params.report_type], config, params.period


# A partitioned job's schedule runs in the partitions' time zone and requests the last partition
# that is over at its tick (yesterday, last week).
daily_reports_schedule = dg.build_schedule_from_partitioned_job(
    daily_reports_job,
    name="daily_reports_schedule",
    hour_of_day=0,
    minute_of_hour=15,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
weekly_reports_schedule = dg.build_schedule_from_partitioned_job(
    weekly_reports_job,
    name="weekly_reports_schedule",
    day_of_week=1,
    hour_of_day=0,
    minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
REPORT_SCHEDULES = [daily_reports_schedule, weekly_reports_schedule]
