"""The Dagster code location (see workspace.yaml). It only assembles; assets live in assets/."""

import dagster as dg

from assets.system import storage_usage
from detection_service.config import Settings
from orchestration.jobs import storage_usage_job
from orchestration.resources import resources_from_settings
from orchestration.schedules import storage_usage_hourly

defs = dg.Definitions(
    assets=[storage_usage],
    jobs=[storage_usage_job],
    schedules=[storage_usage_hourly],
    resources=resources_from_settings(Settings.from_env()),
)
