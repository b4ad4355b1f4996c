"""The Dagster code location (see workspace.yaml). It only assembles; assets live in assets/."""

import dagster as dg

from assets.collection import collected_dataset, collection_job
from assets.datasets import data_yaml, dataset_update_job, dataset_version
from assets.evaluation import evaluation_set, registered_model_evaluation_job
from assets.models import deployed_model, model_evaluation, trained_model
from assets.reports import REPORT_ASSETS, detection_events, system_status_logs
from assets.system import log_archive_job, storage_usage, system_log_archive
from assets.teacher import teacher_labels
from detection_service.config import Settings
from orchestration.jobs import (
    dataset_assets_job,
    dataset_to_model_job,
    storage_cleanup_job,
    storage_usage_job,
    train_and_deploy_job,
    train_model_job,
)
from orchestration.reports import REPORT_SCHEDULES, REPORT_TYPE_JOBS, daily_reports_job, weekly_reports_job
from orchestration.resources import resources_from_settings
from orchestration.schedules import log_archive_nightly, storage_cleanup_nightly, storage_usage_hourly
from orchestration.sensors import (
    batch_job_canceled_sensor,
    batch_job_failed_sensor,
    batch_job_sensor,
    batch_job_succeeded_sensor,
    retrain_on_new_labels_sensor,
)

defs = dg.Definitions(
    assets=[
        collected_dataset,
        dataset_version,
        data_yaml,
        teacher_labels,
        trained_model,
        evaluation_set,
        model_evaluation,
        deployed_model,
        detection_events,
        system_status_logs,
        *REPORT_ASSETS,
        storage_usage,
        system_log_archive,
    ],
    jobs=[
        storage_usage_job,
        dataset_assets_job,
        train_model_job,
        train_and_deploy_job,
        dataset_to_model_job,
        dataset_update_job,
        storage_cleanup_job,
        registered_model_evaluation_job,
        collection_job,
        daily_reports_job,
        weekly_reports_job,
        *REPORT_TYPE_JOBS.values(),
        log_archive_job,
    ],
    schedules=[*REPORT_SCHEDULES, storage_usage_hourly, storage_cleanup_nightly, log_archive_nightly],
    sensors=[
        batch_job_sensor,
        retrain_on_new_labels_sensor,
        batch_job_succeeded_sensor,
        batch_job_failed_sensor,
        batch_job_canceled_sensor,
    ],
    resources=resources_from_settings(Settings.from_env(), secrets_from_env=True),
)
