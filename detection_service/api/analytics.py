"""Analytics API (seed, items 1-3 of issue 12): statistics, patterns and anomalies of the recorded
events, in the alert time zone. Methods: docs/analytics.md; code: services/analytics.py."""

from __future__ import annotations

import threading
import weakref
from datetime import timedelta
from typing import Annotated

from litestar import Controller, Response, get
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.orm import Session, sessionmaker

from detection_service.api.params import OptionalRowId
from detection_service.api.responses import ok
from detection_service.config import Settings
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.services.analytics import AnalyticsService
from detection_service.services.visitors import VisitorService
from detection_service.storage import ObjectStore
from schemas.analytics import Anomalies, Patterns, Statistics
from schemas.detection import TrackingSnapshot
from schemas.envelope import Envelope
from schemas.visitors import FrequentVisitors

_services: weakref.WeakKeyDictionary[sessionmaker[Session], AnalyticsService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def provide_analytics_service(session_factory: sessionmaker[Session], settings: Settings) -> AnalyticsService:
    """One AnalyticsService (and so one answer cache) per app, built from the app's own session
    factory and alert time zone (both injected by api/dependencies.py)."""
    with _services_lock:
        service = _services.get(session_factory)
        if service is None or service.time_zone != settings.alert_timezone:
            service = _services[session_factory] = AnalyticsService(session_factory, settings.alert_timezone)
        return service


_visitor_services: weakref.WeakKeyDictionary[sessionmaker[Session], VisitorService] = weakref.WeakKeyDictionary()


def provide_visitor_service(
    session_factory: sessionmaker[Session], settings: Settings, object_store: ObjectStore | None
) -> VisitorService:
    """One VisitorService (and so one embedding cache) per app, like provide_analytics_service."""
    with _services_lock:
        service = _visitor_services.get(session_factory)
        if service is None or service.time_zone != settings.alert_timezone or service.store is not object_store:
            service = _visitor_services[session_factory] = VisitorService(
                session_factory,
                object_store,
                settings.alert_timezone,
                timedelta(seconds=settings.image_url_ttl_s),
            )
        return service


WINDOW_DOC = (
    "ISO 8601 date or date-time (UTC unless an offset is given). `period` is the span ending at "
    "`end` (default: now), or starting at `start`; both given: exactly [start, end)."
)


class AnalyticsController(Controller):
    path = "/api/analytics"
    tags = ["Analytics"]
    dependencies = {
        "analytics_service": Provide(provide_analytics_service, sync_to_thread=False),
        "visitor_service": Provide(provide_visitor_service, sync_to_thread=False),
    }

    @get(
        "/statistics",
        sync_to_thread=True,
        summary="Event counts, mean confidence and duration, relabelled and false-positive shares per group",
        description="Groups are local time in the alert time zone (`time_zone` in the answer); every group of "
        "the window is listed, empty ones with count 0. Bad values: INVALID_PERIOD, INVALID_GROUP_BY, "
        "INVALID_DATE, INVALID_DATE_RANGE.",
    )
    def statistics(
        self,
        analytics_service: AnalyticsService,
        period: Annotated[str, Parameter(description="day | week | month")] = "week",
        group_by: Annotated[str, Parameter(description="type | hour | weekday | day")] = "type",
        start: Annotated[str | None, Parameter(description=WINDOW_DOC)] = None,
        end: Annotated[str | None, Parameter(description=WINDOW_DOC)] = None,
        camera_id: OptionalRowId = None,
    ) -> Response[Envelope[Statistics]]:
        result = analytics_service.statistics(period, group_by, start, end, camera_id=camera_id)
        return ok(result, message=f"{result.total} event(s) in {len(result.groups)} group(s)")

    @get(
        "/patterns",
        sync_to_thread=True,
        summary="Hour x weekday histograms per type, busiest hours, delivery windows, package stay, person dwell",
        description="Local time in the alert time zone. Bad values: INVALID_PERIOD, INVALID_DATE, INVALID_DATE_RANGE.",
    )
    def patterns(
        self,
        analytics_service: AnalyticsService,
        period: Annotated[str, Parameter(description="day | week | month")] = "month",
        start: Annotated[str | None, Parameter(description=WINDOW_DOC)] = None,
        end: Annotated[str | None, Parameter(description=WINDOW_DOC)] = None,
        camera_id: OptionalRowId = None,
    ) -> Response[Envelope[Patterns]]:
        result = analytics_service.patterns(period, start, end, camera_id=camera_id)
        return ok(result, message=f"patterns of {result.events} event(s)")

    @get(
        "/anomalies",
        sync_to_thread=True,
        summary="Unusual events of the last days against the door's own history "
        "(rare_hour, loitering, burst, package_taken)",
        description="The window is the last `days` local days, today included; the baseline the `baseline_days` "
        "before it. With too little history the answer says so (`insufficient_history`) and flags nothing. "
        "Bad values: INVALID_SENSITIVITY, INVALID_DAYS, INVALID_BASELINE_DAYS, INVALID_LIMIT.",
    )
    def anomalies(
        self,
        analytics_service: AnalyticsService,
        sensitivity: Annotated[str, Parameter(description="low | medium | high")] = "medium",
        days: Annotated[int, Parameter(description="days to look at, today included (1-31)")] = 7,
        baseline_days: Annotated[int, Parameter(description="days of history before them (14-365)")] = 90,
        limit: Annotated[int, Parameter(description="most anomalies listed, highest score first (1-500)")] = 100,
        camera_id: OptionalRowId = None,
    ) -> Response[Envelope[Anomalies]]:
        result = analytics_service.anomalies(sensitivity, days, baseline_days, limit, camera_id=camera_id)
        return ok(result, message=result.message)

    @get(
        "/frequent-visitors",
        sync_to_thread=True,
        summary="Recurring people, grouped by the appearance of their captures (clothing colours)",
        description="Visits (the events of one track merged) of the last `days` days grouped by a part-based "
        "colour descriptor of the person's crop; per visitor: visits, first and last visit, usual local hours "
        "(alert time zone), a representative thumbnail (signed link). `status` says `no_person_model` when the "
        "deployed detector does not detect people (an empty list then means nothing) and `no_person_events` when "
        "no person was recorded. Bad values: INVALID_DAYS, INVALID_MIN_VISITS, INVALID_LIMIT. Method and measured "
        "precision/recall: docs/analytics.md.",
    )
    def frequent_visitors(
        self,
        visitor_service: VisitorService,
        days: Annotated[int, Parameter(description="days to look back (1-365)")] = 30,
        min_visits: Annotated[int, Parameter(description="visitors with at least this many visits (1-1000)")] = 2,
        limit: Annotated[int, Parameter(description="most visitors listed, most visits first (1-500)")] = 50,
    ) -> Response[Envelope[FrequentVisitors]]:
        result = visitor_service.visitors(days, min_visits, limit)
        return ok(result, message=result.message)

    @get(
        "/tracking",
        summary="The objects the live tracker holds now (not the database)",
        description="Per track: track_id, object_type (the vote's winner) and votes, confidence, bbox (pixels of the "
        "frame the pipeline sees), first_seen / last_seen, hits, lost (not matched by the latest detector run), "
        "confirmed (it made or continued an event) and event_id (null until the row is written). `running` false "
        "and an empty list while the pipeline is stopped. Updated after every detector run (docs/pipeline.md).",
    )
    async def tracking(self, pipeline_service: PipelineService) -> Response[Envelope[TrackingSnapshot]]:
        snapshot = pipeline_service.tracking()  # an immutable snapshot: no thread needed
        if not snapshot.running:
            message = "the detection pipeline is stopped: nothing is tracked"
        else:
            confirmed = sum(o.confirmed for o in snapshot.objects)
            message = f"{snapshot.count} object(s) tracked, {confirmed} confirmed"
        return ok(snapshot, message=message)
