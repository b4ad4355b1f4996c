"""Detection Process API (seed): status, start/stop/restart, live configuration of the pipeline."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, get, post, put
from litestar.params import Parameter

from detection_service.api.params import MAX_ROW_ID
from detection_service.api.responses import ok
from detection_service.errors import Invalid
from detection_service.realtime.pipeline_service import PipelineService
from schemas.detection import DetectionConfig, DetectionStatus
from schemas.envelope import Envelope

ACTIONS = ("start", "stop", "restart")
# ?camera=N (docs/cameras.md): that camera; left out: the default camera (control: every camera).
CameraParam = Annotated[
    int | None,
    Parameter(query="camera", ge=1, le=MAX_ROW_ID, description="A camera id (GET /api/cameras); default camera 1"),
]


def notification_ready(notifier: Any) -> bool:
    """Whether the Telegram notifier can send alerts now."""
    return bool(getattr(notifier, "ready", False))


class DetectionController(Controller):
    path = "/api/detection"
    tags = ["Detection process"]

    @get(
        "/",
        summary="State of the detection process (seed keys first: status, camera_status, model_loaded, ...)",
        description="?camera=N: that camera's state (default: camera 1). `cameras` lists every camera in brief, "
        "`batching` the shared detector's batches.",
    )
    async def status(
        self, pipeline_service: PipelineService, notifier: Any, camera: CameraParam = None
    ) -> Response[Envelope[DetectionStatus]]:
        data = await pipeline_service.call(pipeline_service.camera_status, camera, notification_ready(notifier))
        return ok(data, message=f"detection {data.status}")

    @get("/config", summary="Detection settings and pipeline pipeline_settings in effect")
    async def get_config(self, pipeline_service: PipelineService) -> Response[Envelope[DetectionConfig]]:
        return ok(await pipeline_service.call(pipeline_service.config))

    @put(
        "/config",
        sync_to_thread=True,
        summary="Change detection settings and pipeline settings live (validated as a whole; nothing applied on error)",
        description=(
            "Accepts the detection settings (confidence_threshold, capture_interval, capture_count, jpeg_quality; "
            "stored exactly like PUT /api/settings/detection) and the pipeline pipeline_settings (motion_mode, "
            "full_check_interval_s, refresh_interval_s, motion_threshold, motion_min_area, sensitivity, "
            "stall_timeout_s, confirm_hits, confirm_window_s, end_after_s, package_removed_after_s, backend, imgsz; "
            "stored in system_settings category 'pipeline'). Unknown keys or out-of-range values: 400 listing "
            "every problem. A backend/imgsz the model cannot run with: 422."
        ),
    )
    def put_config(
        self, pipeline_service: PipelineService, data: dict[str, Any]
    ) -> Response[Envelope[DetectionConfig]]:
        config = pipeline_service.configure(data)
        return ok(config, message="detection config updated")

    @post(
        "/{action:str}",
        status_code=200,
        sync_to_thread=True,
        summary="start, stop or restart the detection process",
        description="?camera=N: that camera only; left out: every camera (the answer is camera 1's state).",
    )
    def control(
        self, pipeline_service: PipelineService, notifier: Any, action: str, camera: CameraParam = None
    ) -> Response[Envelope[DetectionStatus]]:
        if action not in ACTIONS:
            raise Invalid(
                f"unknown action {action!r}; use start, stop or restart",
                {"allowed": list(ACTIONS)},
                code="INVALID_ACTION",
            )
        pipeline_service.control_cameras(action, camera)
        past = {"start": "started", "stop": "stopped", "restart": "restarted"}[action]
        scope = f"camera {camera}: " if camera is not None else ""
        status = pipeline_service.camera_status(camera, notification_ready(notifier))
        return ok(status, message=f"{scope}detection {past}")
