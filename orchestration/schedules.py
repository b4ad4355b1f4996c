import dagster as dg

from assets.system import log_archive_job
from orchestration.jobs import storage_cleanup_job, storage_usage_job

storage_usage_hourly = dg.ScheduleDefinition(
    job=storage_usage_job, cron_schedule="17 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)

# Nightly, when the door is quiet; the op itself honours storage.auto_cleanup.
storage_cleanup_nightly = dg.ScheduleDefinition(
    job=storage_cleanup_job, cron_schedule="30 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)

# Before the clean-up (which archives whatever is still there before deleting old logs anyway).
log_archive_nightly = dg.ScheduleDefinition(
    name="log_archive_nightly",
    job=log_archive_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
