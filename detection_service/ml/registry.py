"""Moving datasets and models between the object store, the local cache and the ``models`` table.

Shared by the Dagster assets (which train and register) and the service (which deploys and serves
``aidoor model pull``): one copy of the layout rules.

Store layout:
- ``datasets/<dataset_id>/<version>/...`` + ``data.yaml`` (written by detection_service.datasets)
- ``models/<model_id>/best.pt``, ``best.onnx``, ``aidoor.json`` (inference config)
"""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session, sessionmaker

from detection_service.storage import ObjectStore, keys
from schemas.db import Model, utcnow

WEIGHTS_NAME = "best.pt"
ONNX_NAME = "best.onnx"
CONFIG_NAME = "aidoor.json"
_COMPLETE = ".complete"


def fetch_dataset_version(store: ObjectStore, dataset_id: str, version: str, cache_root: Path) -> Path:
    """Download one stored dataset version into ``cache_root`` (once) and return a data.yaml with
    an absolute ``path:`` that Ultralytics can train on."""
    target = Path(cache_root) / "datasets" / dataset_id / version
    data_yaml = target / "data.local.yaml"
    if (target / _COMPLETE).exists() and data_yaml.exists():
        return data_yaml
    prefix = keys.dataset_version_root(dataset_id, version)
    objects = list(store.list(prefix))
    if not objects:
        raise FileNotFoundError(f"dataset {dataset_id} {version}: nothing stored under {prefix}")
    staging = target.with_name(f".{version}.partial")
    shutil.rmtree(staging, ignore_errors=True)

    def download(key: str) -> None:
        path = staging / key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        store.download_file(key, path)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(download, [info.key for info in objects]))
    stored_yaml = staging / "data.yaml"
    if not stored_yaml.exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise FileNotFoundError(f"dataset {dataset_id} {version} has no data.yaml")
    spec = yaml.safe_load(stored_yaml.read_text()) or {}
    spec["path"] = str(target.resolve())
    (staging / data_yaml.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    (staging / _COMPLETE).write_text(f"{len(objects)}\n")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return data_yaml


def next_model_id(session: Session) -> tuple[str, str]:
    """``yolo_v<n>`` / version ``<n>.0``, n one above the highest registered."""
    count = session.scalar(sa.select(sa.func.count()).select_from(Model)) or 0
    n = count + 1
    existing = set(session.scalars(sa.select(Model.model_id)))
    while f"yolo_v{n}" in existing:
        n += 1
    return f"yolo_v{n}", f"{n}.0"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def register_model(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    weights: Path,
    *,
    model_name: str,
    metrics: dict[str, Any],
    inference_ms: float | None,
    onnx: Path | None = None,
    created_by: str = "dagster",
) -> Model:
    """Upload weights (+ ONNX + inference config) to ``models/<model_id>/`` and add the row.

    Objects go first, the row last: a crash in between leaves unreferenced objects (swept by the
    clean-up), never a row that points at nothing.
    """
    weights = Path(weights)
    with session_factory() as session:
        model_id, version = next_model_id(session)
    prefix = keys.model_root(model_id)
    store.put_file(prefix + WEIGHTS_NAME, weights, "application/octet-stream")
    config = weights.parent / CONFIG_NAME
    if config.exists():
        store.put_file(prefix + CONFIG_NAME, config, "application/json")
    onnx_key = None
    if onnx is not None and Path(onnx).exists():
        onnx_key = prefix + ONNX_NAME
        store.put_file(onnx_key, Path(onnx), "application/octet-stream")
    map50 = metrics.get("map50")
    with session_factory.begin() as session:
        row = Model(
            model_id=model_id,
            model_name=model_name[:100],
            model_path=prefix + WEIGHTS_NAME,
            model_size=weights.stat().st_size,
            version=version,
            accuracy=round(float(map50), 4) if map50 is not None else None,
            inference_time=round(inference_ms) if inference_ms is not None else None,
            status="ready",
            metrics={**metrics, "sha256": sha256_of(weights)},
            weights_onnx_path=onnx_key,
            created_by=created_by,
        )
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


def register_model_folder(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    folder: Path,
    *,
    model_name: str,
    metrics: dict[str, Any],
    created_by: str = "cli",
) -> Model:
    """Register an inference-only export folder (``*_openvino_model``): every file goes to
    ``models/<model_id>/<folder name>/``; ``model_path`` is that prefix (ending in ``/``)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    with session_factory() as session:
        model_id, version = next_model_id(session)
    prefix = f"{keys.model_root(model_id)}{folder.name}/"
    for path in files:
        store.put_file(prefix + path.name, path, "application/octet-stream")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + sha256_of(path).encode())
    with session_factory.begin() as session:
        row = Model(
            model_id=model_id,
            model_name=model_name[:100],
            model_path=prefix,
            model_size=sum(p.stat().st_size for p in files),
            version=version,
            status="ready",
            metrics={**metrics, "sha256": digest.hexdigest()},
            created_by=created_by,
        )
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


def fetch_model(store: ObjectStore, model_id: str, model_path: str, cache_root: Path) -> Path:
    """The model's .pt (and its aidoor.json) in the local cache; downloaded once. A model
    registered as an export folder (``model_path`` ends in ``/``) comes back as that folder."""
    target = Path(cache_root) / "models" / model_id
    if model_path.endswith("/"):
        folder = target / model_path.rstrip("/").rsplit("/", 1)[-1]
        if (folder / _COMPLETE).exists():
            return folder
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for info in store.list(model_path):
            store.download_file(info.key, partial / info.key[len(model_path) :])
        (partial / _COMPLETE).write_text("ok\n")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        return folder
    weights = target / WEIGHTS_NAME
    if weights.exists():
        return weights
    target.mkdir(parents=True, exist_ok=True)
    partial = target / (WEIGHTS_NAME + ".partial")
    store.download_file(model_path, partial)
    config_key = keys.model_root(model_id) + CONFIG_NAME
    if store.exists(config_key):
        store.download_file(config_key, target / CONFIG_NAME)
    partial.rename(weights)
    return weights


def set_current_model(session_factory: sessionmaker[Session], model_pk: int, actor: str = "api") -> None:
    """Make one model current, all others not, in one transaction."""
    with session_factory.begin() as session:
        now = utcnow()
        for row in session.scalars(sa.select(Model).where(Model.is_current.is_(True), Model.id != model_pk)):
            row.is_current, row.status, row.updated_by, row.updated_at = False, "ready", actor, now
        row = session.get(Model, model_pk)
        if row is None:
            raise LookupError(model_pk)
        row.is_current, row.status, row.updated_by, row.updated_at = True, "deployed", actor, now
