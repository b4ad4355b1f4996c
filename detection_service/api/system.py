from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from detection_service.api.responses import ok
from detection_service.services.health import check_health
from schemas.envelope import Envelope
from schemas.system import HealthReport


class SystemController(Controller):
    path = "/api/system"
    tags = ["System"]

    @get("/health", summary="Health of the database, object store and Dagster")
    async def health(self, request: Request[Any, Any, Any]) -> Response[Envelope[HealthReport]]:
        state = request.app.state
        report = await check_health(state.engine, state.object_store, state.dagster, state.started_at)
        # Always 200: the body says how healthy we are; a load balancer can read `data.status`.
        return ok(report, message=f"system {report.status}")
