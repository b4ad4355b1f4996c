"""Detection Process API (seed): status, start/stop/restart, live configuration of the pipeline."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post, put
from litestar.connection import ASGIConnection

from detection_service.api.responses import ApiError, in_thread, ok
from detection_service.services.pipeline_service import PipelineService
from schemas.detection import DetectionConfig, DetectionStatus
from schemas.envelope import Envelope

ACTIONS = ("start", "stop", "restart")


def pipeline_service(connection: ASGIConnection[Any, Any, Any, Any]) -> PipelineService:
    return connection.app.state.pipeline_service


def notification_ready(request: Request[Any, Any, Any]) -> bool:
    """Whether the Telegram notifier (``app.state.notifier``) can send alerts now."""
    notifier = getattr(request.app.state, "notifier", None)
    return bool(getattr(notifier, "ready", False))




class DetectionController(Controller):
    path = "/api/detection"
    tags = ["Detection process"]

    @get("/", summary="State of the detection process (seed keys first: status, camera_status, model_loaded, ...)")
    async def status(self, request: Request[Any, Any, Any]) -> Response[Envelope[DetectionStatus]]:
        data = pipeline_service(request).status(notification_ready(request))
        return ok(data, message=f"detection {data.status}")

    @get("/config", summary="Detection settings and pipeline knobs in effect")
    async def get_config(self, request: Request[Any, Any, Any]) -> Response[Envelope[DetectionConfig]]:
        return ok(pipeline_service(request).config())

    @put(
        "/config",
        summary="Change detection settings and pipeline knobs live (validated as a whole; nothing applied on error)",
        description=(
            "Accepts the detection settings (confidence_threshold, capture_interval, capture_count, jpeg_quality; "
            "stored exactly like PUT /api/settings/detection) and the pipeline knobs (motion_mode, "
            "full_check_interval_s, refresh_interval_s, motion_threshold, motion_min_area, sensitivity, "
            "stall_timeout_s, confirm_hits, confirm_window_s, end_after_s, package_removed_after_s, backend, imgsz; "
            "stored in system_settings category 'pipeline'). Unknown keys or out-of-range values: 400 listing "
            "every problem. A backend/imgsz the model cannot run with: 422."
        ),
    )
    async def put_config(self, request: Request[Any, Any, Any], data: dict[str, Any]) -> Response[Envelope[DetectionConfig]]:
        config = await in_thread(pipeline_service(request).configure, data)
        return ok(config, message="detection config updated")

    @post("/{action:str}", status_code=200, summary="start, stop or restart the detection process")
    async def control(self, request: Request[Any, Any, Any], action: str) -> Response[Envelope[DetectionStatus]]:
        if action not in ACTIONS:
            raise ApiError(400, "INVALID_ACTION", f"unknown action {action!r}; use start, stop or restart",
                           {"allowed": list(ACTIONS)})  # fmt: skip
        service = pipeline_service(request)
        await in_thread(service.control, action)
        past = {"start": "started", "stop": "stopped", "restart": "restarted"}[action]
        return ok(service.status(notification_ready(request)), message=f"detection {past}")
