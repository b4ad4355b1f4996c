"""What a model is trained on: dataset versions resolved to local folders, teacher overlays found,
and the lineage recorded with the model.

A training run names its data as dataset-version refs: the Dagster partition (``dataset@version``)
plus ``mix`` refs (``dataset@version``, or a bare ``dataset`` = its latest version). For each, the
teacher overlay of that version, if one exists, comes along (dataset ``<dataset>-teacher``, see
``detection_service/ml/teacher.py``). Each entry of the lineage says which version, in which role:

- ``human``: labels a person made (an export, an upload, Roboflow);
- ``teacher``: boxes a model from elsewhere drew for classes the human labels lack;
- ``collected``: verified events auto-collected from the door (``auto_collect``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.importer import parse_changes
from detection_service.ml.mixing import MixSource, split_images
from detection_service.ml.registry import fetch_dataset_version
from detection_service.storage import ObjectStore
from schemas.db import Dataset, DatasetVersion

TEACHER_SUFFIX = "-teacher"


class LineageEntry(msgspec.Struct, kw_only=True, frozen=True):
    ref: str  # dataset_id@version
    role: str  # human | teacher | collected
    group: str  # entries of one group label the same images
    labels_for: str | None = None  # teacher overlays: the ref whose images they label


class DataNotFound(LookupError):
    pass


def teacher_dataset_id(dataset_id: str) -> str:
    return f"{dataset_id}{TEACHER_SUFFIX}"[:50]


def split_ref(ref: str) -> tuple[str, str | None]:
    dataset_id, sep, version = ref.rpartition("@")
    return (dataset_id, version) if sep else (ref, None)


def resolve_ref(session: Session, ref: str) -> tuple[str, str, dict]:
    """(dataset_id, version, changes) of a ref; a bare dataset id means its latest version."""
    dataset_id, version = split_ref(ref)
    dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == dataset_id))
    if dataset is None:
        raise DataNotFound(f"dataset {dataset_id!r} does not exist")
    version = version or dataset.version
    row = (
        session.scalar(
            sa.select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == version)
            .order_by(DatasetVersion.id.desc())
            .limit(1)
        )
        if version
        else None
    )
    if row is None:
        raise DataNotFound(f"dataset {dataset_id!r} has no version {version!r}")
    return dataset_id, version, parse_changes(row.changes) or {}


def teacher_overlay(session: Session, dataset_id: str, version: str) -> str | None:
    """The newest teacher-label version made for ``dataset_id@version``, or a version a person
    uploaded to the teacher dataset to correct them (it wins when it is newer). None if none."""
    teacher = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == teacher_dataset_id(dataset_id)))
    if teacher is None:
        return None
    rows = session.execute(
        sa.select(DatasetVersion.version, DatasetVersion.changes)
        .where(DatasetVersion.dataset_id == teacher.id)
        .order_by(DatasetVersion.id.desc())
    ).all()
    for teacher_version, text in rows:
        changes = parse_changes(text) or {}
        made_for = (changes.get("teacher") or {}).get("base")
        if made_for == f"{dataset_id}@{version}" or (made_for is None and changes.get("kind") != "teacher"):
            return f"{teacher.dataset_id}@{teacher_version}"
    return None


def role_of(changes: dict) -> str:
    if changes.get("kind") == "auto_collect":
        return "collected"
    if changes.get("kind") == "teacher":
        return "teacher"
    return "human"


def training_sources(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    cache_dir: Path,
    refs: list[str],
    max_images_per_source: int | None = None,
) -> tuple[list[MixSource], list[LineageEntry]]:
    """Fetch every ref (and its teacher overlay) into the cache; the mix sources and the lineage.

    ``max_images_per_source``: keep at most about this many train images of each ref (a
    deterministic sample, the same for its overlay), so one large source does not drown the others.
    """
    sources: list[MixSource] = []
    lineage: list[LineageEntry] = []
    seen: set[str] = set()
    with session_factory() as session:
        resolved = []
        for ref in refs:
            dataset_id, version, changes = resolve_ref(session, ref)
            if f"{dataset_id}@{version}" in seen:
                continue
            seen.add(f"{dataset_id}@{version}")
            resolved.append((dataset_id, version, role_of(changes), teacher_overlay(session, dataset_id, version)))
    for dataset_id, version, role, overlay in resolved:
        ref = f"{dataset_id}@{version}"
        data_yaml = fetch_dataset_version(store, dataset_id, version, cache_dir)
        train_images = len(split_images(data_yaml, "train"))
        fraction = min(1.0, max_images_per_source / train_images) if max_images_per_source and train_images else 1.0
        sources.append(MixSource(data_yaml, group=dataset_id, role=role, train_fraction=fraction, ref=ref))
        lineage.append(LineageEntry(ref=ref, role=role, group=dataset_id))
        if overlay:
            overlay_id, overlay_version = split_ref(overlay)
            overlay_yaml = fetch_dataset_version(store, overlay_id, overlay_version or "", cache_dir)
            sources.append(
                MixSource(overlay_yaml, group=dataset_id, role="teacher", train_fraction=fraction, ref=overlay)
            )
            lineage.append(LineageEntry(ref=overlay, role="teacher", group=dataset_id, labels_for=ref))
    return sources, lineage
