"""Cameras API (issue #15 item 2, docs/cameras.md): the cameras, each with its source, settings
and live state. Reads for every signed-in role; writes for admins. A change applies at once: the
camera's pipeline starts, re-opens its source or stops."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put

from detection_service.api.auth import current_principal
from detection_service.api.params import RowId
from detection_service.api.responses import ok
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.services.cameras import CameraRecord, CameraService
from schemas.cameras import CameraCreate, CameraInfo, CameraUpdate
from schemas.envelope import Envelope


def _info(record: CameraRecord, pipeline_service: PipelineService) -> CameraInfo:
    live = pipeline_service.camera_info(record)
    return CameraInfo(
        id=record.id,
        name=record.name,
        source=record.source,
        effective_source=live["effective_source"],
        enabled=record.enabled,
        is_default=record.is_default,
        overrides=msgspec.to_builtins(record.settings),
        status=live["status"],
        camera_status=live["camera_status"],
        fps=live["fps"],
        detection_count=live["detection_count"],
        viewer_url=f"/api/stream/viewer?camera={record.id}",
        created_by=record.created_by,
        created_at=record.created_at,
        updated_by=record.updated_by,
        updated_at=record.updated_at,
        worker=live.get("worker"),
    )


class CamerasController(Controller):
    path = "/api/cameras"
    tags = ["Cameras"]

    @get("/", sync_to_thread=True, summary="Every camera with its source, settings and live state (id order)")
    def list_cameras(
        self, camera_service: CameraService, pipeline_service: PipelineService
    ) -> Response[Envelope[list[CameraInfo]]]:
        items = [_info(r, pipeline_service) for r in camera_service.list()]
        return ok(items, message=f"{len(items)} camera(s)")

    @get("/{camera_id:int}", sync_to_thread=True, summary="One camera")
    def get_camera(
        self, camera_service: CameraService, pipeline_service: PipelineService, camera_id: RowId
    ) -> Response[Envelope[CameraInfo]]:
        return ok(_info(camera_service.get(camera_id), pipeline_service))

    @post(
        "/",
        status_code=201,
        sync_to_thread=True,
        opt={"role": "admin"},
        summary="Add a camera (admin): name, source, enabled, overrides; its pipeline starts at once",
        description="overrides: resolution, fps, brightness, contrast (left out: the camera settings' value), "
        "detection_enabled, the detection settings (confidence_threshold, capture_interval, capture_count, "
        "jpeg_quality) and the pipeline settings but backend and imgsz (motion_mode, sensitivity, confirm_hits, "
        "end_after_s, package_removed_after_s, ...), each with the global setting's range; left out: the global "
        "value. A name in use: 409 CAMERA_NAME_TAKEN; invalid fields: 400.",
    )
    def create_camera(
        self,
        request: Request[Any, Any, Any],
        camera_service: CameraService,
        pipeline_service: PipelineService,
        data: CameraCreate,
    ) -> Response[Envelope[CameraInfo]]:
        record = camera_service.create(data, by=current_principal(request).name)
        return ok(_info(record, pipeline_service), message=f"camera {record.id} added", status_code=201)

    @put(
        "/{camera_id:int}",
        sync_to_thread=True,
        opt={"role": "admin"},
        summary="Change a camera (admin): only the fields sent; the default camera's source is the camera settings",
    )
    def update_camera(
        self,
        request: Request[Any, Any, Any],
        camera_service: CameraService,
        pipeline_service: PipelineService,
        camera_id: RowId,
        data: CameraUpdate,
    ) -> Response[Envelope[CameraInfo]]:
        record = camera_service.update(camera_id, data, by=current_principal(request).name)
        return ok(_info(record, pipeline_service), message=f"camera {camera_id} changed")

    @delete(
        "/{camera_id:int}",
        status_code=200,
        sync_to_thread=True,
        opt={"role": "admin"},
        summary="Delete a camera without events (admin); with events: 409, disable it instead",
    )
    def delete_camera(self, camera_service: CameraService, camera_id: RowId) -> Response[Envelope[dict[str, int]]]:
        camera_service.delete(camera_id)
        return ok({"deleted": camera_id}, message=f"camera {camera_id} deleted")
