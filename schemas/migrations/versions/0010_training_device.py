"""The setting ``training.device``: the torch device of trainings that do not name one.

Revision ID: 0010_training_device
Revises: 0009_cameras
Create Date: 2026-12-07

``cpu`` trains on the box; a GPU (``cuda``, ``cuda:0``, ...) tags the training's Dagster run
``aidoor/gpu=true``, which an instance with infra/dagster-gpu.yaml launches on the GPU worker
(docs/training.md "Training on a GPU worker"). The row is a frozen copy; tests/test_schema.py
checks that it still matches schemas.settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_training_device"
down_revision: str | Sequence[str] | None = "0009_cameras"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (category, setting_key, setting_value, data_type, description)
SYSTEM_SETTINGS = (
    (
        "training",
        "device",
        "cpu",
        "string",
        "Device of trainings that do not name one (cpu, cuda, cuda:N, mps): not cpu = GPU worker",
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
