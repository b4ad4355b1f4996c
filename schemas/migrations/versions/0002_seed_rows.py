"""Seed rows: the five object types, the TEXT_0..TEXT_4 alert templates, default settings.

Revision ID: 0002_seed_rows
Revises: 0001_initial_schema
Create Date: 2026-11-29

The rows are frozen copies (not imported from schemas.seed_data): a migration must insert the
same rows forever, whatever the current code says. tests/test_schema.py checks that they still
match schemas.seed_data / schemas.settings; a later change of a default needs a new migration.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_seed_rows"
down_revision: str | Sequence[str] | None = "0001_initial_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (code, name, description)
OBJECT_TYPES = (
    ("person", "사람", "A person at the door"),
    ("package", "택배/패키지", "A parcel or package left at the door"),
    ("delivery_food", "배달음식", "A food delivery left at the door"),
    ("mail", "우편물", "Letters or other mail"),
    ("unclassified", "미분류", "An object the model could not classify"),
)

# (template_key, object type code, message_text): the seed's texts, verbatim.
NOTIFICATION_TEMPLATES = (
    ("TEXT_0", "unclassified", "미분류 객체가 감지되었습니다."),
    ("TEXT_1", "person", "사람이 감지되었습니다"),
    ("TEXT_2", "package", "택배가 도착했습니다"),
    ("TEXT_3", "delivery_food", "배달음식이 도착했습니다"),
    ("TEXT_4", "mail", "우편물이 도착했습니다"),
)

# (category, setting_key, setting_value, data_type, description)
SYSTEM_SETTINGS = (
    ("camera", "resolution", "1280x720", "string", "Capture resolution (WIDTHxHEIGHT)"),
    ("camera", "fps", "15", "integer", "Capture frames per second"),
    ("camera", "brightness", "0", "integer", "Brightness adjustment"),
    ("camera", "contrast", "0", "integer", "Contrast adjustment"),
    ("camera", "source", "", "string", "Camera source: RTSP/HTTP URL, file path or device index; empty = none"),
    ("storage", "max_days", "30", "integer", "Retention of event images in days"),
    ("storage", "auto_cleanup", "true", "boolean", "Delete expired events and images automatically"),
    ("storage", "max_size_gb", "50.0", "float", "Largest total size of stored images in GB"),
    ("detection", "confidence_threshold", "0.5", "float", "Lowest detector confidence that counts as a detection"),
    ("detection", "capture_interval", "2.0", "float", "Seconds between the captures of one event"),
    ("detection", "capture_count", "5", "integer", "Images captured per event"),
    ("detection", "jpeg_quality", "85", "integer", "JPEG quality of stored captures"),
    ("notification", "enabled", "true", "boolean", "Send Telegram alerts"),
    ("notification", "sensitivity", "medium", "string", "Alert sensitivity"),
    (
        "notification",
        "types",
        '["person","package","delivery_food","mail","unclassified"]',
        "json",
        "Object types that trigger an alert",
    ),
    ("training", "auto_retrain", "true", "boolean", "Retrain automatically when enough new verified labels arrived"),
    (
        "training",
        "retrain_min_new_labels",
        "50",
        "integer",
        "Verified labels since the last training that trigger a retrain",
    ),
    (
        "training",
        "auto_collect_dataset_id",
        "auto-collected",
        "string",
        "Dataset that receives auto-collected (relabelled) event images",
    ),
    ("training", "profile", "default", "string", "Training profile of automatic retraining"),
    ("pipeline", "motion_mode", "on", "string", "'off' runs the detector on every frame"),
    ("pipeline", "full_check_interval_s", "2.0", "float", "Run the detector at least this often, motion or not"),
    ("pipeline", "refresh_interval_s", "0.5", "float", "Detector period while an object is being watched"),
    ("pipeline", "motion_threshold", "25", "integer", "Grey-level change that counts as changed"),
    ("pipeline", "motion_min_area", "0.003", "float", "Changed fraction of the frame that counts as motion"),
    (
        "pipeline",
        "sensitivity",
        "medium",
        "string",
        "How far under confidence_threshold a box is still kept, as 'unclassified'",
    ),
    ("pipeline", "stall_timeout_s", "3.0", "float", "Seconds without a frame before the camera is 'disconnected'"),
    ("pipeline", "confirm_hits", "3", "integer", "Hits that confirm a track as an event"),
    ("pipeline", "confirm_window_s", "2.0", "float", "... within this many seconds"),
    ("pipeline", "end_after_s", "3.0", "float", "A non-package event ends after this long unseen"),
    ("pipeline", "package_removed_after_s", "10.0", "float", "A package is 'removed' after this long unseen"),
    ("pipeline", "backend", "auto", "string", "Inference runtime; 'auto' picks the fastest available"),
    ("pipeline", "imgsz", "null", "json", None),
)

object_types = sa.table(
    "object_types",
    sa.column("id", sa.Integer()),
    sa.column("code", sa.String()),
    sa.column("name", sa.String()),
    sa.column("description", sa.Text()),
    sa.column("created_by", sa.String()),
)
notification_templates = sa.table(
    "notification_templates",
    sa.column("template_key", sa.String()),
    sa.column("object_type_id", sa.Integer()),
    sa.column("message_text", sa.Text()),
)
system_settings = sa.table(
    "system_settings",
    sa.column("category", sa.String()),
    sa.column("setting_key", sa.String()),
    sa.column("setting_value", sa.Text()),
    sa.column("data_type", sa.String()),
    sa.column("description", sa.Text()),
)


def upgrade() -> None:
    op.bulk_insert(
        object_types,
        [{"code": c, "name": n, "description": d, "created_by": "migration"} for c, n, d in OBJECT_TYPES],
    )
    # INSERT ... SELECT looks the type id up in SQL, so this also renders in --sql (offline) mode.
    for key, code, text in NOTIFICATION_TEMPLATES:
        op.execute(
            notification_templates.insert().from_select(
                ["template_key", "object_type_id", "message_text"],
                sa.select(sa.literal(key), object_types.c.id, sa.literal(text)).where(object_types.c.code == code),
            )
        )
    op.bulk_insert(
        system_settings,
        [
            {"category": c, "setting_key": k, "setting_value": v, "data_type": t, "description": d}
            for c, k, v, t, d in SYSTEM_SETTINGS
        ],
    )


def downgrade() -> None:
    op.execute(
        notification_templates.delete().where(
            notification_templates.c.template_key.in_([key for key, _, _ in NOTIFICATION_TEMPLATES])
        )
    )
    for category, key, *_ in SYSTEM_SETTINGS:
        op.execute(
            system_settings.delete().where(system_settings.c.category == category, system_settings.c.setting_key == key)
        )
    # Fails (foreign key) while events still reference a type: deleting them is not this
    # migration's call.
    op.execute(object_types.delete().where(object_types.c.code.in_([code for code, _, _ in OBJECT_TYPES])))
