"""The seed's `general` settings category: ``log_level`` of the records kept in system_logs.

Revision ID: 0004_general_settings
Revises: 0003_notifications
Create Date: 2026-12-02

The service's own log records at this level and above reach ``system_logs``
(``detection_service/services/system_logs.py``; GET /api/system/logs). The row is a frozen copy;
tests/test_schema.py checks that 0002's rows and these still match schemas.settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_general_settings"
down_revision: str | Sequence[str] | None = "0003_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (category, setting_key, setting_value, data_type, description)
SYSTEM_SETTINGS = (
    ("general", "log_level", "WARNING", "string", "Lowest level of the service's own log records kept in system_logs"),
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
        system_settings,
        [
            {"category": c, "setting_key": k, "setting_value": v, "data_type": t, "description": d}
            for c, k, v, t, d in SYSTEM_SETTINGS
        ],
    )


def downgrade() -> None:
    for category, key, *_ in SYSTEM_SETTINGS:
        op.execute(
            system_settings.delete().where(system_settings.c.category == category, system_settings.c.setting_key == key)
        )
