"""Live stream of what happens (issue #13): one server-sent-events endpoint the dashboard subscribes
to instead of polling. Frames (``event:`` name, JSON ``data:``):

- ``event_created`` / ``event_updated`` / ``package_removed``: the bus messages
  (``detection_service/bus.py``) as they are published, without the snapshot bytes;
- ``detection``: the detection process's state (status, camera_status, model_loaded, model_state, model_id)
  whenever one of them changes, and once at connect;
- ``training``: the latest training's progress (status, epoch, loss, mAP ...) whenever it changes;
- ``components``: each component's state and reason (``GET /api/system/status``) whenever one changes;
- ``ping``: a comment-free keep-alive every ``KEEPALIVE_S`` when nothing else was sent.

The process state and training are sampled here every ``SAMPLE_S`` (one cheap read per connection),
so a page never polls those endpoints itself.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from detection_service.bus import EventBus, EventCreated, EventUpdated, PackageRemoved
from detection_service.errors import DomainError, Invalid
from detection_service.realtime.pipeline_service import PipelineService
from detection_service.services.component_status import ComponentStatusRegistry
from detection_service.services.models import ModelService

SAMPLE_S = 2.0
KEEPALIVE_S = 15.0
# How often a connection looks at its bus queue. A non-blocking look and an async sleep, not a
# blocking get in a worker thread: an open page must not hold one of the threads (anyio's limiter)
# that the sync handlers need.
POLL_S = 0.2
_CONNECTIONS = itertools.count(1)  # names the bus subscriptions: sse-1, sse-2 ...
_NAMES = {EventCreated: "event_created", EventUpdated: "event_updated", PackageRemoved: "package_removed"}
_DETECTION_KEYS = ("status", "camera_status", "model_loaded", "model_state", "model_id")


def bus_frame(message: Any) -> ServerSentEventMessage:
    data = msgspec.to_builtins(message)
    data.pop("snapshot_jpeg", None)  # the page loads captures through the Event API
    data.pop("type", None)  # the msgspec tag; the frame's event name says it
    return ServerSentEventMessage(event=_NAMES[type(message)], data=msgspec.json.encode(data).decode())


def _detection_state(pipeline_service: PipelineService) -> dict[str, Any]:
    try:
        status = msgspec.to_builtins(pipeline_service.status(False))
    except DomainError as exc:  # a detector worker away (docs/deployment.md): say so and keep streaming
        away = {"status": "error", "camera_status": "disconnected", "model_loaded": False}
        return {**{key: away.get(key) for key in _DETECTION_KEYS}, "error": exc.code}
    return {key: status.get(key) for key in _DETECTION_KEYS}


def _component_states(registry: ComponentStatusRegistry) -> dict[str, Any]:
    # Without since/checked_at: a probe that finds the same state is no change.
    return {name: {"status": c.status, "reason": c.reason} for name, c in registry.snapshot().items()}


def _training_state(model_service: ModelService) -> dict[str, Any] | None:
    try:
        return msgspec.to_builtins(model_service.training_status())
    except DomainError:  # no training requested yet
        return None


class LiveController(Controller):
    path = "/api/live"
    tags = ["Live"]

    @get(
        "/events",
        summary="Server-sent events: new/updated events, package removals, detection, training and component state",
        description="text/event-stream. Event names: event_created, event_updated, package_removed (the bus "
        "messages, without image bytes), detection (status, camera_status, model_loaded, model_state, model_id: at "
        "connect and on change), training (the latest training's progress, on change), components (each "
        "component's status and reason, on change), ping (keep-alive). "
        "`max_s` ends the stream after that many seconds (1-86400; default: until the client leaves); EventSource "
        "reconnects.",
    )
    async def events(
        self,
        bus: EventBus,
        pipeline_service: PipelineService,
        model_service: ModelService,
        component_status: ComponentStatusRegistry,
        max_s: float | None = None,
    ) -> ServerSentEvent:
        if max_s is not None and not 1 <= max_s <= 86400:
            raise Invalid("max_s must be between 1 and 86400 seconds", {"max_s": max_s}, code="INVALID_MAX_S")

        async def frames() -> AsyncIterator[ServerSentEventMessage]:
            sub = bus.subscribe(f"sse-{next(_CONNECTIONS)}", maxsize=200)
            started = last_sent = time.monotonic()
            next_sample = 0.0
            last: dict[str, Any] = {}
            try:
                while max_s is None or time.monotonic() - started < max_s:
                    now = time.monotonic()
                    if now >= next_sample:
                        next_sample = now + SAMPLE_S
                        for name, state in (
                            ("detection", await pipeline_service.call(_detection_state, pipeline_service)),
                            ("training", await anyio.to_thread.run_sync(_training_state, model_service)),
                            ("components", _component_states(component_status)),
                        ):
                            if name not in last or state != last[name]:
                                last[name] = state
                                last_sent = now
                                yield ServerSentEventMessage(event=name, data=msgspec.json.encode(state).decode())
                    message = sub.get(timeout=0)
                    while message is not None:
                        last_sent = time.monotonic()
                        yield bus_frame(message)
                        message = sub.get(timeout=0)
                    await anyio.sleep(POLL_S)
                    if time.monotonic() - last_sent >= KEEPALIVE_S:
                        last_sent = time.monotonic()
                        yield ServerSentEventMessage(event="ping", data="{}")
            finally:  # also when the client leaves (the stream task is cancelled)
                sub.close()

        return ServerSentEvent(frames(), retry_duration=3000, headers={"X-Accel-Buffering": "no"})
