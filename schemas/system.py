"""API structs of the System group."""

from __future__ import annotations

from typing import Literal

import msgspec

HealthStatus = Literal["ok", "degraded", "down"]


class ComponentHealth(msgspec.Struct, kw_only=True):
    status: HealthStatus
    latency_ms: float | None = None
    detail: str | None = None
    # Where the component lives (db dialect, bucket, URL): helps an operator, never a secret.
    target: str | None = None


class HealthReport(msgspec.Struct, kw_only=True):
    status: HealthStatus
    components: dict[str, ComponentHealth]
    version: str
    uptime_s: float
