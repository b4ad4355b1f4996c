"""Honest health checks: each component is probed for real, in parallel, with a short timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import sqlalchemy as sa

from detection_service.dagster_client import DagsterClient
from detection_service.database import ping
from detection_service.storage import ObjectStore
from schemas.system import ComponentHealth, HealthReport

# Without these the service cannot do its job at all; the others only degrade it.
CRITICAL_COMPONENTS = ("database",)
CHECK_TIMEOUT_S = 5.0


def package_version() -> str:
    try:
        return version("ai-door-system")
    except PackageNotFoundError:
        return "0+unknown"


async def _probe(name: str, fn: Callable[[], str | None]) -> tuple[str, ComponentHealth]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(asyncio.to_thread(fn), timeout=CHECK_TIMEOUT_S)
        status, message = "ok", detail
    except TimeoutError:
        status, message = "down", f"no answer within {CHECK_TIMEOUT_S:.0f} s"
    except Exception as exc:  # any failure of the probe is the component's status, not ours
        status, message = "down", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    latency = round((time.perf_counter() - started) * 1000, 1)
    return name, ComponentHealth(status=status, latency_ms=latency, detail=message)


async def check_health(
    engine: sa.Engine, store: ObjectStore, dagster: DagsterClient, started_at: float, notifier: Any = None
) -> HealthReport:
    def database() -> str:
        ping(engine)
        return f"select 1 ok ({engine.dialect.name})"

    def storage() -> str:
        store.check()
        return f"bucket {store.bucket!r} reachable ({store.kind})"

    def orchestrator() -> str:
        info = dagster.server_info()
        return f"webserver {info.get('dagster_webserver_version') or info.get('dagit_version') or ''}".strip()

    results = dict(
        await asyncio.gather(_probe("database", database), _probe("storage", storage), _probe("dagster", orchestrator))
    )
    results["database"].target = engine.dialect.name
    results["storage"].target = f"{store.kind}:{store.bucket}"
    results["dagster"].target = dagster.base_url
    if notifier is not None:
        # Telegram alerts: ok / degraded (sends failing, queue stuck) / down (tokens unreadable).
        name, component = await _probe("notifications", notifier.health)
        if component.status == "ok" and isinstance(component.detail, tuple):
            component.status, component.detail = component.detail
        results[name] = component
        component.target = notifier.config.api_url
    if any(results[name].status == "down" for name in CRITICAL_COMPONENTS):
        overall = "down"
    elif all(component.status == "ok" for component in results.values()):
        overall = "ok"
    else:
        overall = "degraded"
    return HealthReport(
        status=overall, components=results, version=package_version(), uptime_s=round(time.time() - started_at, 1)
    )
