"""Download a Roboflow dataset version with the ``roboflow`` SDK and import it as a dataset version.

The SDK runs in a child process (``python -m detection_service.datasets.roboflow_sync``):
- it reads ``API_URL`` from the environment when it is imported, so the child gets the URL we
  want whatever the parent process imported before;
- its HTTP requests have no timeout and it polls a version that is still generating forever;
  the child is killed (whole process group) after ``timeout_s``;
- ``Version.download`` silently skips the download when ``location`` exists, so each sync gets a
  fresh folder, removed afterwards.
The API key reaches the child on stdin (not argv, not the environment) and is masked in errors.

Configuration (``Settings`` of the service and of the Dagster code location, from the environment):
``AIDOOR_ROBOFLOW_WORKSPACE``, ``AIDOOR_ROBOFLOW_API_KEY``, optional ``AIDOOR_ROBOFLOW_API_URL``
(default: the SDK's, https://api.roboflow.com) and ``AIDOOR_ROBOFLOW_TIMEOUT_S`` (default 1800).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detection_service.errors import Invalid

if TYPE_CHECKING:  # the child process must not pay for these imports
    from sqlalchemy.orm import Session, sessionmaker

    from detection_service.config import Settings
    from detection_service.storage import ObjectStore
    from schemas.datasets import ImportResult

DEFAULT_FORMAT = "yolov8"  # Roboflow's YOLOv8 export = the layout Ultralytics reads (also for YOLO11)
DEFAULT_TIMEOUT_S = 1800.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


class RoboflowError(Exception):
    """The Roboflow download failed. ``stage``: auth, workspace, project, version, download, timeout."""

    code = "ROBOFLOW_ERROR"

    def __init__(self, message: str, stage: str = "download") -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage


class RoboflowNotConfigured(RoboflowError, Invalid):
    code = "ROBOFLOW_NOT_CONFIGURED"

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="config")


@dataclass(frozen=True)
class RoboflowCredentials:
    workspace: str
    api_key: str
    api_url: str | None = None  # None: the SDK's default
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:  # never print the key
        return f"RoboflowCredentials(workspace={self.workspace!r}, api_url={self.api_url!r})"


def roboflow_credentials(settings: Settings | None) -> RoboflowCredentials:
    """Workspace and API key from the settings (AIDOOR_ROBOFLOW_*); RoboflowNotConfigured when
    either is missing (or there are no settings)."""
    workspace = (settings.roboflow_workspace if settings else None) or ""
    api_key = (settings.roboflow_api_key if settings else None) or ""
    missing = [
        name
        for name, value in (("AIDOOR_ROBOFLOW_WORKSPACE", workspace), ("AIDOOR_ROBOFLOW_API_KEY", api_key))
        if not value
    ]
    if settings is None or missing:
        raise RoboflowNotConfigured(f"Roboflow is not configured: set {' and '.join(missing)} (see docs/datasets.md)")
    return RoboflowCredentials(workspace, api_key, settings.roboflow_api_url, settings.roboflow_timeout_s)


def _mask(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def download_roboflow_export(
    workspace: str,
    api_key: str,
    project: str,
    version: int | str,
    work_dir: str | Path,
    *,
    api_url: str | None = None,
    model_format: str = DEFAULT_FORMAT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download and unpack one version into ``<work_dir>/roboflow-XXXX/export`` and return that
    path; the caller removes its parent when done (on failure it is already gone). Raises
    RoboflowError with the failing stage (a 401 is stage "auth")."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="roboflow-", dir=work_dir))
    location = run_dir / "export"  # must not exist: the SDK skips existing locations
    request = {
        "api_key": api_key,
        "workspace": workspace,
        "project": project,
        "version": str(version),
        "format": model_format,
        "location": str(location),
        "result": str(run_dir / "result.json"),
    }
    env = dict(os.environ)
    if api_url:
        env["API_URL"] = api_url.rstrip("/")
    env["TQDM_DISABLE"] = "1"
    env["ROBOFLOW_CONFIG_DIR"] = str(run_dir / "roboflow-config.json")  # ignore a stale ~/.config/roboflow
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        return _run_child(request, env, run_dir, location, timeout_s, api_key, f"{workspace}/{project}/{version}")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_child(
    request: dict[str, Any],
    env: dict[str, str],
    run_dir: Path,
    location: Path,
    timeout_s: float,
    api_key: str,
    what: str,
) -> Path:
    log_path = run_dir / "sdk.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detection_service.datasets.roboflow_sync"],
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run_dir,
            start_new_session=True,  # its own process group: a timeout kills everything it started
        )
        try:
            proc.communicate(json.dumps(request).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise RoboflowError(
                f"Roboflow download of {what} did not finish within {timeout_s:.0f} s", "timeout"
            ) from None
        except BaseException:
            _kill(proc)
            raise
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        tail = _mask(log_path.read_text(errors="replace")[-1500:], api_key)
        raise RoboflowError(f"the Roboflow download process exited with {proc.returncode}: {tail}") from None
    if not result.get("ok"):
        stage = str(result.get("stage") or "download")
        error = _mask(str(result.get("error")), api_key)
        if stage == "auth":
            error = f"Roboflow did not accept the API key: {error}"
        raise RoboflowError(f"Roboflow {stage} failed for {what}: {error}", stage)
    if not location.is_dir():
        raise RoboflowError(f"the Roboflow SDK reported success but wrote nothing to {location}")
    return location


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def sync_roboflow(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    workspace: str,
    api_key: str,
    project: str,
    version: int | str,
    work_dir: str | Path,
    dataset_id: str | None = None,
    *,
    api_url: str | None = None,
    class_mapping: Mapping[str, str | None] | None = None,
    strict: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    model_format: str = DEFAULT_FORMAT,
) -> ImportResult:
    """Download ``workspace/project`` version ``version`` from Roboflow and import it as the next
    version of ``dataset_id`` (default: the project name as a slug), recording the Roboflow
    project/version and the sync time on the dataset. The download folder is removed afterwards."""
    from detection_service.datasets.importer import import_dataset, slugify, validate_dataset_id

    dataset_id = validate_dataset_id(dataset_id or slugify(project) or "roboflow")
    location = download_roboflow_export(
        workspace,
        api_key,
        project,
        version,
        work_dir,
        api_url=api_url,
        model_format=model_format,
        timeout_s=timeout_s,
    )
    try:
        return import_dataset(
            session_factory,
            store,
            location,
            dataset_id,
            name=project,
            description=f"Roboflow {workspace}/{project}",
            class_mapping=class_mapping,
            roboflow=(project, str(version)),
            strict=strict,
            source_kind="roboflow",
            source_name=f"{workspace}/{project}/{version}",
        )
    finally:
        shutil.rmtree(location.parent, ignore_errors=True)


# --------------------------------------------------------------------------------- the child


def _child_main() -> int:
    request: dict[str, Any] = json.loads(sys.stdin.read())
    result_path = Path(request["result"])
    stage = "import"
    # download("yolov8") imports ultralytics only to decide how to rewrite data.yaml paths: that is
    # seconds of torch import and Ultralytics writing its settings under $HOME. Without it the SDK
    # keeps Roboflow's own paths, which read_export understands.
    sys.modules["ultralytics"] = None  # type: ignore[assignment]
    try:
        import roboflow  # reads API_URL now: set by the parent

        stage = "auth"
        rf = roboflow.Roboflow(api_key=request["api_key"])
        if getattr(rf, "onboarding", False):
            raise RuntimeError("the API key was not accepted (it looks like a placeholder)")
        stage = "workspace"
        workspace = rf.workspace(request["workspace"])
        stage = "project"
        project = workspace.project(request["project"])
        stage = "version"
        raw = request["version"]
        version = project.version(int(raw) if str(raw).isdigit() else raw)
        stage = "download"
        dataset = version.download(request["format"], location=request["location"], overwrite=True)
        result: dict[str, Any] = {"ok": True, "location": dataset.location}
    except BaseException as exc:  # reported to the parent, which raises RoboflowError
        result = {"ok": False, "stage": stage, "error": f"{type(exc).__name__}: {exc}"[:4000]}
    result_path.write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(_child_main())
