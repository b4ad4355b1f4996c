"""detection_events.event_uid: the pipeline's idempotency key (issue #14 item 4, docs/pipeline.md).

Revision ID: 0008_event_uid
Revises: 0007_auth
Create Date: 2026-12-06

The event writer journals each event on local disk with a UUID made when the event is confirmed;
a replay after a commit that was not acknowledged finds the row by this key instead of inserting
a second one. Nullable (rows of manual detections and older rows have none); unique where set.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_event_uid"
down_revision: str | Sequence[str] | None = "0007_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("detection_events", sa.Column("event_uid", sa.String(length=36), nullable=True))
    op.create_index("uq_detection_events_event_uid", "detection_events", ["event_uid"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_detection_events_event_uid", table_name="detection_events")
    op.drop_column("detection_events", "event_uid")
