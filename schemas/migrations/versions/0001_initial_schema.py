"""Initial schema: the seed's 17 tables, with the fixes listed in docs/schema.md.

Revision ID: 0001_initial_schema
Revises:
Create Date: 2026-11-29

Hand-checked against schemas/db.py; written with plain SQLAlchemy types (sa.DateTime rather
than schemas.db.UTCDateTime) so that it keeps working whatever later happens to the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial_schema"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# utf8mb4 per table: the database's default charset may be latin1.
MYSQL_TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
NOW = sa.text("CURRENT_TIMESTAMP")

# Creation order follows the foreign keys; downgrade drops in reverse.
TABLES = (
    "users",
    "telegrams",
    "object_types",
    "detection_events",
    "event_images",
    "models",
    "datasets",
    "model_training",
    "dataset_versions",
    "data_yaml",
    "data_yaml_history",
    "notification_templates",
    "notification_history",
    "system_settings",
    "system_status_logs",
    "system_logs",
    "batch_jobs",
)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=100), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("role", sa.String(length=20), server_default="user", nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "telegrams",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=50), nullable=False),
        sa.Column("chat_id", sa.String(length=50), nullable=False),
        sa.Column("bot_token", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegrams")),
        sa.UniqueConstraint("chat_id", name=op.f("uq_telegrams_chat_id")),
        sa.UniqueConstraint("user_id", name=op.f("uq_telegrams_user_id")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "object_types",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_object_types")),
        sa.UniqueConstraint("code", name=op.f("uq_object_types_code")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "detection_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("image_path", sa.String(length=255), nullable=True),
        sa.Column("object_type_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=True),
        sa.Column("fps", sa.Integer(), nullable=True),
        sa.Column("processing_time", sa.Integer(), nullable=True),
        sa.Column("confidence_score", sa.Double(), nullable=True),
        sa.Column("bbox_coordinates", sa.Text(), nullable=True),
        sa.Column("notification_sent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("user_verified", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("is_false_positive", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("original_type_id", sa.Integer(), nullable=True),
        sa.Column("reclassified_by", sa.Integer(), nullable=True),
        sa.Column("reclassified_at", sa.DateTime(), nullable=True),
        sa.Column("tracking_id", sa.Integer(), nullable=True),
        sa.Column("tracking_duration", sa.Integer(), nullable=True),
        sa.Column("detected_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["object_type_id"],
            ["object_types.id"],
            name=op.f("fk_detection_events_object_type_id_object_types"),
        ),
        sa.ForeignKeyConstraint(
            ["original_type_id"],
            ["object_types.id"],
            name=op.f("fk_detection_events_original_type_id_object_types"),
        ),
        sa.ForeignKeyConstraint(
            ["reclassified_by"],
            ["users.id"],
            name=op.f("fk_detection_events_reclassified_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_events")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index("idx_detection_events_detected_at", "detection_events", ["detected_at"], unique=False)
    op.create_index("idx_detection_events_object_type", "detection_events", ["object_type_id"], unique=False)
    op.create_index("idx_detection_events_status", "detection_events", ["status"], unique=False)
    op.create_index(
        "idx_detection_events_status_detected_at",
        "detection_events",
        ["status", "detected_at"],
        unique=False,
    )
    op.create_index("idx_detection_events_tracking_id", "detection_events", ["tracking_id"], unique=False)
    op.create_index(
        "idx_detection_events_type_detected_at",
        "detection_events",
        ["object_type_id", "detected_at"],
        unique=False,
    )
    op.create_table(
        "event_images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("image_path", sa.String(length=500), nullable=False),
        sa.Column("image_url", sa.String(length=500), nullable=True),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("compression_quality", sa.Integer(), server_default=sa.text("85"), nullable=False),
        sa.Column("captured_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["detection_events.id"],
            name=op.f("fk_event_images_event_id_detection_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_images")),
        sa.UniqueConstraint(
            "event_id",
            "sequence_number",
            name=op.f("uq_event_images_event_id_sequence_number"),
        ),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index("idx_event_images_captured_at", "event_images", ["captured_at"], unique=False)
    op.create_index("idx_event_images_event_id", "event_images", ["event_id"], unique=False)
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=50), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_path", sa.String(length=500), nullable=False),
        sa.Column("model_size", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("accuracy", sa.Numeric(precision=5, scale=4), nullable=True),
        sa.Column("inference_time", sa.Integer(), nullable=True),
        sa.Column("is_current", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="ready", nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("weights_onnx_path", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("model_id", name=op.f("uq_models_model_id")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("storage_path", sa.String(length=500), nullable=False),
        sa.Column("yaml_path", sa.String(length=500), nullable=False),
        sa.Column("total_images", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_labels", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("class_distribution", sa.JSON(), nullable=True),
        sa.Column("roboflow_project", sa.String(length=100), nullable=True),
        sa.Column("roboflow_version", sa.String(length=20), nullable=True),
        sa.Column("last_sync_at", sa.DateTime(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("dataset_id", name=op.f("uq_datasets_dataset_id")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "model_training",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("job_type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("epochs", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("batch_size", sa.Integer(), server_default=sa.text("16"), nullable=False),
        sa.Column(
            "confidence_threshold",
            sa.Numeric(precision=3, scale=2),
            server_default="0.50",
            nullable=False,
        ),
        sa.Column("sensitivity", sa.String(length=10), server_default="medium", nullable=False),
        sa.Column("final_accuracy", sa.Numeric(precision=5, scale=4), nullable=True),
        sa.Column("training_loss", sa.Numeric(precision=10, scale=6), nullable=True),
        sa.Column("validation_loss", sa.Numeric(precision=10, scale=6), nullable=True),
        sa.Column("training_time", sa.Integer(), nullable=True),
        sa.Column("current_epoch", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("progress_percentage", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("log_path", sa.String(length=500), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_model_training_dataset_id_datasets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_model_training_model_id_models"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_training")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("changes", sa.Text(), nullable=True),
        sa.Column("image_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_dataset_versions_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_versions_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_dataset_versions_dataset_id"), "dataset_versions", ["dataset_id"], unique=False)
    op.create_table(
        "data_yaml",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("yaml_content", sa.Text(), nullable=False),
        sa.Column("train_path", sa.String(length=500), nullable=True),
        sa.Column("val_path", sa.String(length=500), nullable=True),
        sa.Column("test_path", sa.String(length=500), nullable=True),
        sa.Column("nc", sa.Integer(), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("download_url", sa.String(length=500), nullable=True),
        sa.Column("yaml_version", sa.String(length=20), nullable=True),
        sa.Column("file_hash", sa.String(length=64), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.CheckConstraint("is_active = 1", name=op.f("ck_data_yaml_active_true_or_null")),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_data_yaml_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_data_yaml_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_yaml")),
        sa.UniqueConstraint("dataset_id", "is_active", name="unique_active_yaml"),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "data_yaml_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("yaml_config_id", sa.Integer(), nullable=False),
        sa.Column("change_type", sa.String(length=20), nullable=False),
        sa.Column("old_content", sa.Text(), nullable=True),
        sa.Column("new_content", sa.Text(), nullable=True),
        sa.Column("changes_summary", sa.JSON(), nullable=True),
        sa.Column("changed_by", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["changed_by"],
            ["users.id"],
            name=op.f("fk_data_yaml_history_changed_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["yaml_config_id"],
            ["data_yaml.id"],
            name=op.f("fk_data_yaml_history_yaml_config_id_data_yaml"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_yaml_history")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(
        op.f("ix_data_yaml_history_yaml_config_id"),
        "data_yaml_history",
        ["yaml_config_id"],
        unique=False,
    )
    op.create_table(
        "notification_templates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("template_key", sa.String(length=20), nullable=False),
        sa.Column("object_type_id", sa.Integer(), nullable=True),
        sa.Column("message_text", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["object_type_id"],
            ["object_types.id"],
            name=op.f("fk_notification_templates_object_type_id_object_types"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_templates")),
        sa.UniqueConstraint("template_key", name=op.f("uq_notification_templates_template_key")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "notification_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("telegram_user_id", sa.Integer(), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("message_text", sa.Text(), nullable=False),
        sa.Column("send_status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["detection_events.id"],
            name=op.f("fk_notification_history_event_id_detection_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["telegram_user_id"],
            ["telegrams.id"],
            name=op.f("fk_notification_history_telegram_user_id_telegrams"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["notification_templates.id"],
            name=op.f("fk_notification_history_template_id_notification_templates"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_history")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(
        "idx_notification_history_send_status",
        "notification_history",
        ["send_status"],
        unique=False,
    )
    op.create_index("idx_notification_history_sent_at", "notification_history", ["sent_at"], unique=False)
    op.create_index(
        op.f("ix_notification_history_event_id"),
        "notification_history",
        ["event_id"],
        unique=False,
    )
    op.create_table(
        "system_settings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("setting_key", sa.String(length=100), nullable=False),
        sa.Column("setting_value", sa.Text(), nullable=False),
        sa.Column("data_type", sa.String(length=20), server_default="string", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_encrypted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["users.id"],
            name=op.f("fk_system_settings_updated_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_settings")),
        sa.UniqueConstraint("category", "setting_key", name=op.f("uq_system_settings_category_setting_key")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "system_status_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("component", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cpu_usage", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("memory_usage", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("gpu_usage", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("disk_usage", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("fps", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("logged_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_status_logs")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index("idx_system_status_logs_logged_at", "system_status_logs", ["logged_at"], unique=False)
    op.create_table(
        "system_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("component", sa.String(length=50), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_system_logs_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_logs")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index("idx_system_logs_component", "system_logs", ["component"], unique=False)
    op.create_index("idx_system_logs_created_at", "system_logs", ["created_at"], unique=False)
    op.create_index("idx_system_logs_level", "system_logs", ["level"], unique=False)
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_type", sa.String(length=50), nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=True),
        sa.Column("progress_percentage", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("current_step", sa.String(length=100), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_batch_jobs_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_jobs")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index("idx_batch_jobs_created_at", "batch_jobs", ["created_at"], unique=False)
    op.create_index("idx_batch_jobs_status", "batch_jobs", ["status"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints with it.
    for table in reversed(TABLES):
        op.drop_table(table)
