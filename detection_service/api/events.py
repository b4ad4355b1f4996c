"""Event API (seed): events and their captures, the unclassified work list, capture compression."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, put

from detection_service.api.detections import event_service
from detection_service.api.responses import in_thread, ok
from detection_service.services.events import EventFilter, parse_date_range
from schemas.envelope import Envelope, Page
from schemas.events import CompressRequest, CompressResult, EventDetail, EventImageInfo, EventSummary


class EventsController(Controller):
    path = "/api/events"
    tags = ["Events"]

    @get("/", summary="Every event, newest first (page, limit <= 100, type, date_range, status)",
         description="date_range: today, 1h, 24h, 7d, 30d, 90d, all, or '<start>/<end>' in ISO 8601 (either side "
         "may be empty). `data.total` counts every matching event.")  # fmt: skip
    async def list_events(
        self, request: Request[Any, Any, Any], page: int = 1, limit: int = 20, type: str | None = None,
        date_range: str | None = None, status: str | None = None,
    ) -> Response[Envelope[Page[EventSummary]]]:
        start, end = parse_date_range(date_range) if date_range else (None, None)
        flt = EventFilter(type=type or None, start=start, end=end, status=status or None)
        result = await in_thread(event_service(request).list_events, flt, page, limit)
        return ok(result, message=f"{len(result.items)} of {result.total} event(s)")

    @get("/{event_id:int}", summary="One event with its captures (signed image URLs)")
    async def detail(self, request: Request[Any, Any, Any], event_id: int) -> Response[Envelope[EventDetail]]:
        return ok(await in_thread(event_service(request).get, event_id))

    @get("/{event_id:int}/images", summary="The captures of one event, in sequence order")
    async def images(self, request: Request[Any, Any, Any], event_id: int) -> Response[Envelope[list[EventImageInfo]]]:
        return ok(await in_thread(event_service(request).images, event_id))

    @get("/images/unclassified", summary="Captures of events still unclassified, newest first (page, limit)")
    async def unclassified(
        self, request: Request[Any, Any, Any], page: int = 1, limit: int = 20
    ) -> Response[Envelope[Page[EventImageInfo]]]:
        result = await in_thread(event_service(request).unclassified_images, page, limit)
        return ok(result, message=f"{len(result.items)} of {result.total} unclassified capture(s)")

    @put("/images/compress", summary="JPEG quality (1-100) of new captures (detection setting jpeg_quality)",
         description="Stored images keep their quality (each image reports its compression_quality); new captures "
         "use this one from the next event on.")  # fmt: skip
    async def compress(self, request: Request[Any, Any, Any], data: CompressRequest) -> Response[Envelope[CompressResult]]:
        settings = request.app.state.settings_service
        updated = await in_thread(settings.update, "detection", {"jpeg_quality": data.quality})
        return ok(CompressResult(quality=updated.jpeg_quality), message=f"new captures use JPEG quality {data.quality}")
