"""Several cameras (issue #15 item 2, docs/cameras.md): ``cameras`` and ``detection_events.camera_id``.

Revision ID: 0009_cameras
Revises: 0008_event_uid
Create Date: 2026-12-06

Row 1 ``default`` is the camera of the seed: its source is NULL, which means "the camera settings"
(``system_settings`` camera.*, ``PUT /api/settings/camera``), so an existing install keeps its
camera. Every existing event belongs to it (``camera_id`` NOT NULL DEFAULT 1, FK to cameras).

SQLite cannot add a REFERENCES column with a non-NULL default while foreign keys are enforced, so
the table is rebuilt there (batch mode). The rebuild drops the old table, and with foreign keys on
(they cannot be turned off inside the migration's transaction) that DROP deletes the event_images
rows (CASCADE) and clears notification_history.event_id (SET NULL); both are saved to temporary
tables first and put back after the rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0009_cameras"
down_revision: str | Sequence[str] | None = "0008_event_uid"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL_TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
NOW = sa.text("CURRENT_TIMESTAMP")
EVENTS = "detection_events"


def _is_sqlite() -> bool:
    return context.get_context().dialect.name == "sqlite"


def _save_children() -> None:
    op.execute("CREATE TEMP TABLE _aidoor_0009_images AS SELECT * FROM event_images")
    op.execute(
        "CREATE TEMP TABLE _aidoor_0009_notes AS SELECT id, event_id FROM notification_history "
        "WHERE event_id IS NOT NULL"
    )


def _restore_children() -> None:
    op.execute("INSERT INTO event_images SELECT * FROM _aidoor_0009_images")
    op.execute(
        "UPDATE notification_history SET event_id = "
        "(SELECT n.event_id FROM _aidoor_0009_notes n WHERE n.id = notification_history.id) "
        "WHERE id IN (SELECT id FROM _aidoor_0009_notes)"
    )
    op.execute("DROP TABLE _aidoor_0009_images")
    op.execute("DROP TABLE _aidoor_0009_notes")


def upgrade() -> None:
    cameras = op.create_table(
        "cameras",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cameras")),
        sa.UniqueConstraint("name", name=op.f("uq_cameras_name")),
        **MYSQL_TABLE_OPTIONS,
    )
    op.bulk_insert(cameras, [{"id": 1, "name": "default", "source": None, "enabled": True, "created_by": "system"}])
    column = sa.Column("camera_id", sa.Integer(), server_default=sa.text("1"), nullable=False)
    fk_name = op.f("fk_detection_events_camera_id_cameras")
    if _is_sqlite() and not context.is_offline_mode():
        _save_children()
        with op.batch_alter_table(EVENTS, recreate="always") as batch:
            batch.add_column(column)
            batch.create_foreign_key(fk_name, "cameras", ["camera_id"], ["id"])
        _restore_children()
    else:
        op.add_column(EVENTS, column)
        if not _is_sqlite():  # offline SQLite script: ALTER cannot add a constraint there
            op.create_foreign_key(fk_name, EVENTS, "cameras", ["camera_id"], ["id"])
    # Leading camera_id, then detected_at: "this camera's events, newest first" like the type index.
    op.create_index("idx_detection_events_camera_detected_at", EVENTS, ["camera_id", "detected_at"])


def downgrade() -> None:
    if _is_sqlite() and not context.is_offline_mode():
        op.drop_index("idx_detection_events_camera_detected_at", table_name=EVENTS)
        _save_children()
        with op.batch_alter_table(EVENTS, recreate="always") as batch:
            batch.drop_constraint("fk_detection_events_camera_id_cameras", type_="foreignkey")
            batch.drop_column("camera_id")
        _restore_children()
    else:
        if not _is_sqlite():  # first: MySQL keeps the index while the FK needs it
            op.drop_constraint("fk_detection_events_camera_id_cameras", EVENTS, type_="foreignkey")
        op.drop_index("idx_detection_events_camera_detected_at", table_name=EVENTS)
        op.drop_column(EVENTS, "camera_id")
    op.drop_table("cameras")
