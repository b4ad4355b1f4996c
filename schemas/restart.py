"""``POST /api/system/restart``: request and report. No I/O here."""

from __future__ import annotations

from typing import Literal

import msgspec

RestartService = Literal["camera", "detection", "all"]
ComponentOutcome = Literal["restarted", "failed", "skipped"]


class RestartRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # camera: capture only; detection: detector + tracker + recorder (the pipeline); all: every component
    service: RestartService


class ComponentRestart(msgspec.Struct, kw_only=True):
    component: str  # as in system_status_logs: camera, detection, notification, storage, database
    outcome: ComponentOutcome
    detail: str
    took_ms: float


class RestartReport(msgspec.Struct, kw_only=True):
    service: RestartService
    components: list[ComponentRestart]
    pipeline_status: str  # running / stopped / error after the restart
    camera_status: str
    took_ms: float
