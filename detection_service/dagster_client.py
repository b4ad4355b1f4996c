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

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI (the configured Dagster host and port)."""
        return f"{self.base_url}/runs/{run_id}"

    def runs_tagged(self, key: str, value: str) -> list[tuple[str, str]]:
        """(run id, status) of every run carrying the tag ``key=value``. Raises DagsterUnavailable."""
        try:
            response = httpx.post(
                f"{self.base_url}/graphql",
                json={"query": _RUNS_TAGGED, "variables": {"tags": [{"key": key, "value": value}]}},
                timeout=self._timeout,
            )
            response.raise_for_status()
            runs = response.json()["data"]["runsOrError"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise DagsterUnavailable(f"Dagster at {self.base_url}: {exc}") from exc
        if runs.get("__typename") != "Runs":
            raise DagsterUnavailable(f"Dagster at {self.base_url}: {runs.get('message') or runs.get('__typename')}")
        return [(run["runId"], run["status"]) for run in runs["results"]]

    def terminate_run(self, run_id: str) -> None:
        """Ask Dagster to terminate a run (training cancel). Raises DagsterUnavailable."""
        from urllib.parse import urlparse

        from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

        url = urlparse(self.base_url)
        client = DagsterGraphQLClient(url.hostname or "127.0.0.1", port_number=url.port, timeout=int(self._timeout) + 3)
        try:
            client.terminate_run(run_id)
        except DagsterGraphQLClientError as exc:
            # Already finished or unknown runs are not an error for a cancel.
            said = str(exc).lower()
            if "not found" in said or "not in a" in said or "could not be terminated" in said:
                return
            raise DagsterUnavailable(str(exc)) from exc
        except Exception as exc:  # transport errors of gql/requests
            raise DagsterUnavailable(f"Dagster at {self.base_url}: {exc}") from exc


_RUNS_TAGGED = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    __typename
    ... on Runs { results { runId status } }
    ... on PythonError { message }
    ... on InvalidPipelineRunsFilterError { message }
  }
}"""
