"""``POST /api/system/restart``: restart a part of the service in-process (the HTTP server keeps
serving). Its own controller beside ``api/system.py``, under the same path."""

from __future__ import annotations

from litestar import Controller, Response, post

from detection_service.api.responses import ok
from detection_service.realtime.restart import SystemRestart
from schemas.envelope import Envelope
from schemas.restart import RestartReport, RestartRequest


class RestartController(Controller):
    path = "/api/system"
    tags = ["System"]

    @post(
        "/restart",
        status_code=200,
        sync_to_thread=True,
        summary="Restart a part of the service in-process: service 'camera', 'detection' or 'all'",
        description="camera: the capture re-opens its source (detector, tracker, open events and writer carry on; "
        "409 PIPELINE_STOPPED while the pipeline is stopped). detection: a fresh detector for the loaded model and "
        "the pipeline restarted (new tracker; open package events are re-adopted, none is duplicated; the pipeline "
        "starts if a camera source is set). all: settings read again, detection, the Telegram notifier, the database "
        "pool and the object store check; the HTTP server is never dropped. `data.components` has each step's "
        "outcome (restarted / failed / skipped) and time.",
    )
    def restart(self, system_restart: SystemRestart, data: RestartRequest) -> Response[Envelope[RestartReport]]:
        report = system_restart.restart(data.service)
        failed = [c.component for c in report.components if c.outcome == "failed"]
        message = (
            f"restart of {data.service}: {', '.join(failed)} failed"
            if failed
            else f"{data.service} restarted in {report.took_ms:.0f} ms (pipeline {report.pipeline_status})"
        )
        return ok(report, message=message)
