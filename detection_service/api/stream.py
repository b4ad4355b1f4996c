"""Stream API (seed): stream status and the HTML viewer; plus the MJPEG stream the viewer shows, a
single-frame snapshot, and the WebSocket ingest that camera clients push JPEG frames to.

Ingest protocol (``ws://HOST:PORT/api/stream/ingest[?camera=N]``; docs/pipeline.md has the details,
docs/cameras.md the cameras and the camera-scoped tokens):
client -> server binary message = one JPEG/PNG frame; optional text JSON ``{"type": "hello",
"camera": "...", "fps": 15}`` and ``{"type": "ping"}``. Server -> client text JSON: ``ready``
(after the handshake), ``pong``, ``error`` (``fatal: true`` = the server closes next).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
from litestar import Controller, MediaType, Response, WebSocket, get, websocket
from litestar.response import Stream

from detection_service.api.detection import CameraParam
from detection_service.api.responses import ok
from detection_service.errors import DomainError, Invalid, NotFound
from detection_service.images import image_problem
from detection_service.realtime.ingest import looks_like_image
from detection_service.realtime.pipeline_service import PipelineService
from schemas.detection import IngestClientMessage, IngestError, IngestHello, IngestPong, IngestReady, StreamStatus
from schemas.envelope import Envelope

VIEWER_HTML = Path(__file__).resolve().parents[1] / "static" / "viewer.html"
BOUNDARY = "frame"
# Close codes: 1008 policy violation (camera source is not "push"), 1013 try again later (busy).
CLOSE_NOT_PUSH, CLOSE_BUSY = 1008, 1013
_DECODER = msgspec.json.Decoder(IngestClientMessage)


@lru_cache(maxsize=1)
def _viewer_page() -> bytes:
    return VIEWER_HTML.read_bytes()


class StreamController(Controller):
    path = "/api/stream"
    tags = ["Stream"]

    @get("/status", summary="Camera/stream state: source, fps, dropped frames, viewers, WebSocket ingest")
    async def status(
        self, pipeline_service: PipelineService, camera: CameraParam = None
    ) -> Response[Envelope[StreamStatus]]:
        status = await pipeline_service.call(pipeline_service.camera_stream_status, camera)
        return ok(status, message=f"camera {status.camera_status}")

    @get(
        "/viewer",
        summary="Live viewer page (HTML): stream with boxes, labels, track ids and fps",
        media_type=MediaType.HTML,
    )
    async def viewer(self, pipeline_service: PipelineService, camera: CameraParam = None) -> Response[bytes]:
        # ?camera=N: the page asks for that camera's stream and state (404/409 here, not in the page).
        await pipeline_service.call(pipeline_service.pipeline_of, camera)
        return Response(_viewer_page(), media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})

    @get("/mjpeg", summary="Annotated live frames as an MJPEG stream (multipart/x-mixed-replace)")
    async def mjpeg(
        self, pipeline_service: PipelineService, max_frames: int | None = None, camera: CameraParam = None
    ) -> Stream:
        """``max_frames`` ends the stream after that many frames (e.g. ``curl`` for one look)."""
        if max_frames is not None and max_frames < 1:
            raise Invalid("max_frames must be at least 1")
        broadcaster = await pipeline_service.call(pipeline_service.broadcaster_of, camera)
        viewer = broadcaster.subscribe()

        async def parts() -> AsyncIterator[bytes]:
            try:
                while True:
                    jpeg = await viewer.queue.get()
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    yield head.encode() + jpeg + b"\r\n"
                    viewer.sent += 1
                    broadcaster.frames_sent += 1
                    if max_frames is not None and viewer.sent >= max_frames:
                        return
            finally:  # also when the client disconnects (the stream task is cancelled)
                broadcaster.unsubscribe(viewer)

        return Stream(
            parts(),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @get("/snapshot", summary="The latest annotated frame as one JPEG")
    async def snapshot(self, pipeline_service: PipelineService, camera: CameraParam = None) -> Response[bytes]:
        pipeline = await pipeline_service.call(pipeline_service.pipeline_of, camera)
        _, jpeg = await pipeline_service.call(pipeline.latest_jpeg)
        if not jpeg:
            raise NotFound("no frame yet: the pipeline has not handled a frame since start-up", code="NO_FRAME")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @websocket("/ingest")
    async def ingest(
        self, socket: WebSocket[Any, Any, Any], pipeline_service: PipelineService, camera: CameraParam = None
    ) -> None:
        service = pipeline_service
        max_bytes = service.settings.max_upload_mb * 1024 * 1024
        await socket.accept()

        async def send(message: msgspec.Struct) -> None:
            await socket.send_data(msgspec.json.encode(message).decode(), mode="text")

        async def refuse(code: str, message: str, close_code: int = CLOSE_NOT_PUSH) -> None:
            await send(IngestError(code=code, fatal=True, message=message))
            await socket.close(close_code, code)

        camera_id = camera or 1
        principal = socket.scope.get("user")
        if principal is not None and not principal.may_feed(camera_id):  # a token scoped to another camera
            await refuse("FORBIDDEN_CAMERA", f"this token feeds camera {principal.camera_id} only, not {camera_id}")
            return
        try:
            # Off the event loop in the split layout: each is a live link round trip (service.call).
            pipeline, state = await service.call(service.ingest_target, camera)
            push = await service.call(service.accepts_push, camera)
        except DomainError as exc:  # no such camera (404), or none loaded here (409)
            await refuse(exc.code, exc.message)
            return
        if not push:
            where = (
                'PUT /api/settings/camera {"source": "push"}'
                if camera_id == 1
                else f'PUT /api/cameras/{camera_id} {{"source": "push"}}'
            )
            await refuse("NOT_PUSH_SOURCE", f"camera {camera_id}'s source is not 'push': set it with {where}")
            return
        client = f"{socket.client.host}:{socket.client.port}" if socket.client else "unknown"
        if not await service.call(state.claim, client):
            await send(IngestError(code="BUSY", fatal=True, message=f"another camera ({state.client}) is connected"))
            await socket.close(CLOSE_BUSY, "another camera is connected")
            return
        try:
            await send(IngestReady(max_frame_bytes=max_bytes))
            while True:
                event = await socket.receive()
                if event["type"] == "websocket.disconnect":
                    return
                data: bytes | None = event.get("bytes")
                text: str | None = event.get("text")
                if data:
                    if len(data) > max_bytes or not looks_like_image(data):
                        state.frames_invalid += 1
                        await send(
                            IngestError(
                                code="INVALID_FRAME",
                                message="a frame must be one JPEG or PNG image within max_frame_bytes",
                            )
                        )
                        continue
                    # Header and end marker only (docs/security.md): a frame claiming 60000x60000
                    # pixels or cut short never reaches the decoder.
                    if (problem := image_problem(data)) is not None:
                        state.frames_invalid += 1
                        await send(IngestError(code="INVALID_FRAME", message=f"frame refused: {problem.reason}"))
                        continue
                    if not await service.call(pipeline.push_jpeg, data):
                        await send(
                            IngestError(
                                code="NOT_PUSH_SOURCE",
                                fatal=True,
                                message="camera.source changed; frames are no longer accepted",
                            )
                        )
                        await socket.close(CLOSE_NOT_PUSH, "camera source is not push")
                        return
                    state.frames_received += 1
                    state.bytes_received += len(data)
                elif text:
                    try:
                        message = _DECODER.decode(text)
                    except msgspec.DecodeError as exc:
                        await send(IngestError(code="BAD_MESSAGE", message=f"unknown text message: {exc}"))
                        continue
                    if isinstance(message, IngestHello):
                        if message.camera:
                            state.client = f"{message.camera} ({client})"
                    else:
                        await send(
                            IngestPong(
                                frames_received=state.frames_received,
                                frames_invalid=state.frames_invalid,
                                camera_status=(await service.call(pipeline.status))["camera_status"],
                            )
                        )
        finally:
            await service.call(state.release)
