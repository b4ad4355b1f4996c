"""Datasets: reading Roboflow exports, importing them as versions in the object store, Roboflow
sync and auto-collect from verified events (docs/datasets.md).

Names are exported lazily: ``python -m detection_service.datasets.roboflow_sync`` (the SDK child
process) imports this package and must not pay for OpenCV and SQLAlchemy.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from detection_service.config import Settings
    from detection_service.storage import ObjectStore
    from schemas.datasets import ImportResult

_EXPORTS = {
    "read_export": "export_reader",
    "ExportReport": "export_reader",
    "ExportItem": "export_reader",
    "ExportError": "export_reader",
    "UnknownClassesError": "export_reader",
    "import_dataset": "importer",
    "create_dataset": "importer",
    "publish_version": "importer",
    "DatasetError": "importer",
    "DatasetNotFound": "importer",
    "DatasetConflict": "importer",
    "ImportRejected": "importer",
    "NothingToCollect": "importer",
    "collect_verified": "auto_collect",
    "sync_roboflow": "roboflow_sync",
    "roboflow_credentials": "roboflow_sync",
    "RoboflowError": "roboflow_sync",
    "RoboflowNotConfigured": "roboflow_sync",
}

__all__ = sorted([*_EXPORTS, "run_dataset_update"])


def run_dataset_update(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    parameters: dict[str, Any],
    work_dir: str | Path,
    settings: Settings | None = None,
) -> ImportResult:
    """Execute a ``dataset_update`` batch job as ``/api/datasets`` queues it (``parameters`` =
    ``batch_jobs.parameters``). ``{"source": "roboflow", workspace, project_name, version, dataset_id,
    class_mapping}``: the API key (and API URL, timeout) come from ``settings`` (AIDOOR_ROBOFLOW_*)
    here, never from the job row; without settings a Roboflow job fails as not configured.
    ``{"source": "auto_collect", dataset_id, auto_label, since_version}`` (with ``auto_label`` the
    deployed model labels unverified unclassified captures into ``auto_labeled/``).
    Raises what the functions raise; NothingToCollect means "done, nothing new"."""
    from detection_service.datasets.auto_collect import collect_verified
    from detection_service.datasets.roboflow_sync import roboflow_credentials, sync_roboflow

    source = parameters.get("source")
    if source == "roboflow":
        credentials = roboflow_credentials(settings)
        return sync_roboflow(
            session_factory,
            store,
            parameters.get("workspace") or credentials.workspace,
            credentials.api_key,
            parameters["project_name"],
            parameters["version"],
            work_dir,
            parameters.get("dataset_id"),
            api_url=credentials.api_url,
            class_mapping=parameters.get("class_mapping"),
            timeout_s=credentials.timeout_s,
        )
    if source == "auto_collect":
        auto_label = bool(parameters.get("auto_label", True))
        labeler = None
        if auto_label:  # unverified unclassified captures get the deployed model's labels (kept apart)
            from detection_service.ml.pseudo_label import deployed_model_labeler

            labeler = deployed_model_labeler(session_factory, store, Path(work_dir) / "models")
        return collect_verified(
            session_factory,
            store,
            parameters["dataset_id"],
            auto_label,
            parameters.get("since_version"),
            labeler=labeler[1] if labeler else None,
            labeler_model=labeler[0] if labeler else None,
        )
    if source == "path":
        # An export folder or zip on this machine (the starter-model bootstrap uses this).
        from detection_service.datasets.importer import import_dataset

        # ``with_paths``: more exports the training mixes in (the starter's person photos),
        # imported first as their own datasets unless a version of them exists already.
        for extra in parameters.get("with_paths") or []:
            import_missing(session_factory, store, Path(extra["path"]), extra["dataset_id"], work_dir)
        return import_dataset(
            session_factory,
            store,
            Path(parameters["path"]),
            parameters["dataset_id"],
            name=parameters.get("name"),
            description=parameters.get("description"),
            class_mapping=parameters.get("class_mapping"),
            work_dir=work_dir,
        )
    raise ValueError(f"unknown dataset_update source {source!r} (roboflow, auto_collect or path)")


def import_missing(
    session_factory: sessionmaker[Session], store: ObjectStore, path: Path, dataset_id: str, work_dir: str | Path
) -> str:
    """Import ``path`` as ``dataset_id`` unless that dataset has a version already; its latest version."""
    from detection_service.datasets.importer import import_dataset, latest_version

    with session_factory() as session:
        dataset, row = latest_version(session, dataset_id)
        if dataset is not None and row is not None:
            return row.version
    return import_dataset(
        session_factory,
        store,
        path,
        dataset_id,
        name=path.name,
        description="training mix (bootstrap)",
        work_dir=work_dir,
    ).version


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
