"""Frequent-visitor structs (``GET /api/analytics/frequent-visitors``, the ``visitor_analysis`` report).

Person captures are grouped by appearance into visitors; method and measured quality:
docs/analytics.md ("Frequent visitors"). Times are UTC; ``usual_hours`` are local hours in the
alert time zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

# ok: visitors were grouped; no_person_model: the deployed detector does not find people (so an
# empty list says nothing about who came); no_person_events: it does, but no person was recorded.
VisitorStatus = Literal["ok", "no_person_model", "no_person_events"]
VISITOR_STATUSES: Final[tuple[str, ...]] = ("ok", "no_person_model", "no_person_events")


class VisitorThumbnail(msgspec.Struct, kw_only=True):
    event_id: int
    image_id: int
    url: str | None  # signed link to the whole capture (None: the store is down)
    url_expires_at: datetime | None
    bbox: dict[str, float]  # the person in that capture, pixels: x1, y1, x2, y2


class Visitor(msgspec.Struct, kw_only=True):
    visitor_id: int  # rank in this answer (1 = most visits); not stable across calls
    visits: int  # visits, the events of one track merged
    events: int
    event_ids: list[int]
    first_visit: datetime
    last_visit: datetime
    usual_hours: list[int]  # local hours (alert time zone) that hold most of the visits, ascending
    visits_by_hour: list[int]  # 24 local hours
    similarity: float  # mean cosine similarity of the visits to the group's centre (1 = identical)
    thumbnail: VisitorThumbnail | None


class FrequentVisitors(msgspec.Struct, kw_only=True):
    status: VisitorStatus
    person_detection: bool  # the deployed model detects people
    message: str
    days: int
    min_visits: int
    start: datetime
    end: datetime
    time_zone: str
    person_events: int  # in the window (false positives left out)
    visits: int  # after merging the events of one track
    grouped_visits: int  # visits with at least one usable capture (the rest: no box, unreadable image)
    visitors_total: int  # groups with at least min_visits visits (the list may be cut by limit)
    truncated: bool  # the window held more events than are grouped at once (the newest are used)
    method: str
    visitors: list[Visitor] = msgspec.field(default_factory=list)
