"""The one place the service talks to Dagster (its webserver's HTTP/GraphQL API)."""

from __future__ import annotations

import httpx


class DagsterUnavailable(RuntimeError):
    pass


class DagsterClient:
    def __init__(self, base_url: str, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout_s

    def server_info(self) -> dict:
        """Raises DagsterUnavailable unless the webserver answers ``/server_info``."""
        try:
            response = httpx.get(f"{self.base_url}/server_info", timeout=self._timeout)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DagsterUnavailable(f"Dagster webserver at {self.base_url} is not reachable: {exc}") from exc
