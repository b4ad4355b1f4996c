"""A camera token may be scoped to one camera (issue #15 item 2, docs/cameras.md "WebSocket ingest").

Revision ID: 0011_token_camera
Revises: 0010_training_device
Create Date: 2026-12-07

``api_tokens.camera_id``: NULL = every camera (the tokens made before, and unscoped camera
tokens); N = the WebSocket ingest of camera N only. No foreign key: a plain nullable column is an
``ALTER TABLE ADD COLUMN`` on SQLite too (no table rebuild); deleting a camera revokes the tokens
scoped to it instead (CameraService.delete), so a later camera that reuses the id is not theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_token_camera"
down_revision: str | Sequence[str] | None = "0010_training_device"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("camera_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("camera_id")
