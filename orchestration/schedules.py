import dagster as dg

from orchestration.jobs import storage_usage_job

storage_usage_hourly = dg.ScheduleDefinition(
    job=storage_usage_job, cron_schedule="17 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
