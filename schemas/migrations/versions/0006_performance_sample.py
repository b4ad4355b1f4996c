"""The setting ``general.performance_sample_s``: seconds between the performance sampler's rows.

Revision ID: 0006_performance_sample
Revises: 0004_general_settings
Create Date: 2026-12-06

Every this many seconds ``services/performance.py`` writes one ``system_status_logs`` row per
component (GET /api/system/performance). The row is a frozen copy; tests/test_schema.py checks
that it still matches schemas.settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_performance_sample"
down_revision: str | Sequence[str] | None = "0004_general_settings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (category, setting_key, setting_value, data_type, description)
SYSTEM_SETTINGS = (
    (
        "general",
        "performance_sample_s",
        "10",
        "integer",
        "Seconds between the performance sampler's system_status_logs rows",
    ),
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
