"""Telegram alerts: queue columns on notification_history, the package-removed template.

Revision ID: 0003_notifications
Revises: 0002_seed_rows
Create Date: 2026-12-01

notification_history becomes the worker's persistent queue (docs/notifications.md):
- ``kind`` (event / removed / test) and a unique index on (event_id, telegram_user_id, kind), so
  one event can never queue the same alert twice for one recipient;
- ``next_attempt_at`` (due time of a pending row, lease expiry of a sending row) and
  ``claim_token`` (which worker holds it) for portable claiming (UPDATE ... WHERE, rowcount);
- ``chat_id``, ``telegram_message_id``, ``has_photo``, ``callback_result`` for the inline
  keyboard (which message to edit, what a button press did).

TEXT_5 is the text of the package-removed alert. It has no object type on purpose: the
TEXT_0..TEXT_4 rows stay the one template per object type.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_notifications"
down_revision: str | Sequence[str] | None = "0002_seed_rows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy (a migration inserts the same row forever).
REMOVED_TEMPLATE = ("TEXT_5", "택배가 치워졌습니다")

templates = sa.table(
    "notification_templates",
    sa.column("template_key", sa.String()),
    sa.column("object_type_id", sa.Integer()),
    sa.column("message_text", sa.Text()),
    sa.column("is_active", sa.Boolean()),
)


def upgrade() -> None:
    # Plain ADD COLUMN / CREATE INDEX: SQLite supports both without a table copy (and offline
    # SQL can be rendered).
    table = "notification_history"
    op.add_column(table, sa.Column("kind", sa.String(length=20), server_default="event", nullable=False))
    op.add_column(table, sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
    op.add_column(table, sa.Column("claim_token", sa.String(length=32), nullable=True))
    op.add_column(table, sa.Column("chat_id", sa.String(length=50), nullable=True))
    op.add_column(table, sa.Column("telegram_message_id", sa.BigInteger(), nullable=True))
    op.add_column(table, sa.Column("has_photo", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column(table, sa.Column("callback_result", sa.String(length=100), nullable=True))
    op.create_index("idx_notification_history_status_next_attempt", table, ["send_status", "next_attempt_at"])
    op.create_index(
        "uq_notification_history_event_recipient_kind", table, ["event_id", "telegram_user_id", "kind"], unique=True
    )
    op.create_index("idx_notification_history_chat_message", table, ["chat_id", "telegram_message_id"])
    key, text = REMOVED_TEMPLATE
    op.bulk_insert(templates, [{"template_key": key, "object_type_id": None, "message_text": text, "is_active": True}])


def downgrade() -> None:
    op.execute(templates.delete().where(templates.c.template_key == REMOVED_TEMPLATE[0]))
    with op.batch_alter_table("notification_history") as batch:
        batch.drop_index("idx_notification_history_chat_message")
        batch.drop_index("uq_notification_history_event_recipient_kind")
        batch.drop_index("idx_notification_history_status_next_attempt")
        for column in (
            "callback_result",
            "has_photo",
            "telegram_message_id",
            "chat_id",
            "claim_token",
            "next_attempt_at",
            "kind",
        ):
            batch.drop_column(column)
