"""Event API (seed): events and their captures, the unclassified work list, capture compression."""

from __future__ import annotations

from litestar import Controller, Response, get, put

from detection_service.api.params import OptionalRowId, RowId
from detection_service.api.responses import ok
from detection_service.services.event_history import EventFilter, EventService, parse_date_range
from detection_service.services.settings import SettingsService
from schemas.envelope import Envelope, Page
from schemas.events import CompressRequest, CompressResult, EventDetail, EventImageInfo, EventSummary


class EventsController(Controller):
    path = "/api/events"
    tags = ["Events"]

    @get(
        "/",
        sync_to_thread=True,
        summary="Every event, newest first (page, limit <= 100, type, date_range, status, camera_id)",
        description="date_range: today, 1h, 24h, 7d, 30d, 90d, all, or '<start>/<end>' in ISO 8601 (either side "
        "may be empty). `data.total` counts every matching event.",
    )
    def list_events(
        self,
        event_service: EventService,
        page: int = 1,
        limit: int = 20,
        type: str | None = None,
        date_range: str | None = None,
        status: str | None = None,
        camera_id: OptionalRowId = None,
    ) -> Response[Envelope[Page[EventSummary]]]:
        start, end = parse_date_range(date_range) if date_range else (None, None)
        flt = EventFilter(type=type or None, start=start, end=end, status=status or None, camera_id=camera_id)
        result = event_service.list_events(flt, page, limit)
        return ok(result, message=f"{len(result.items)} of {result.total} event(s)")

    @get("/{event_id:int}", sync_to_thread=True, summary="One event with its captures (signed image URLs)")
    def detail(self, event_service: EventService, event_id: RowId) -> Response[Envelope[EventDetail]]:
        return ok(event_service.get(event_id))

    @get("/{event_id:int}/images", sync_to_thread=True, summary="The captures of one event, in sequence order")
    def images(self, event_service: EventService, event_id: RowId) -> Response[Envelope[list[EventImageInfo]]]:
        return ok(event_service.images(event_id))

    @get(
        "/images/unclassified",
        sync_to_thread=True,
        summary="Captures of events still unclassified, newest first (page, limit)",
    )
    def unclassified(
        self, event_service: EventService, page: int = 1, limit: int = 20
    ) -> Response[Envelope[Page[EventImageInfo]]]:
        result = event_service.unclassified_images(page, limit)
        return ok(result, message=f"{len(result.items)} of {result.total} unclassified capture(s)")

    @put(
        "/images/compress",
        sync_to_thread=True,
        summary="JPEG quality (1-100) of new captures (detection setting jpeg_quality)",
        description="Stored images keep their quality (each image reports its compression_quality); new captures "
        "use this one from the next event on.",
    )
    def compress(self, settings_service: SettingsService, data: CompressRequest) -> Response[Envelope[CompressResult]]:
        updated = settings_service.update("detection", {"jpeg_quality": data.quality})
        return ok(CompressResult(quality=updated.jpeg_quality), message=f"new captures use JPEG quality {data.quality}")
