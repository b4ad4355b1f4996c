import dagster as dg

from orchestration.jobs import storage_cleanup_job, storage_usage_job

storage_usage_hourly = dg.ScheduleDefinition(
    job=storage_usage_job, cron_schedule="17 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)

# Nightly, when the door is quiet; the op itself honours storage.auto_cleanup.
storage_cleanup_nightly = dg.ScheduleDefinition(
    job=storage_cleanup_job, cron_schedule="30 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
