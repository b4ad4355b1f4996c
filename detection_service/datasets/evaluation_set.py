"""The fixed evaluation set: what the champion/challenger gate measures every model on.

A dataset version of its own (``evaluation-set`` v1, v2, ...), built only by appending:

- the **valid split of each base (human-labelled) dataset** the compared models were trained on
  (their ``metrics.lineage`` refs of role ``human``; e.g. doorbell-camera-alert-v4 for package,
  person-capston2-v11 for person), frozen the first time that dataset appears. Valid images with
  a near-duplicate in the same dataset's train split (256-bit dHash within ``max_bits``,
  ``ml/near_duplicates``) are left out: they measure memory, not generalisation;
- a **frozen share of collected verified images**: the ``valid/`` captures of the auto-collect
  dataset (events chosen by a hash of their id, never trained on), frozen per event the first time
  they are seen; near-duplicates of any train image of the sources are left out too. Model-labelled
  (``auto_labeled/``) captures are never part of it.

A new version = every file of the previous version + the newly frozen ones; nothing is ever
dropped, so a model evaluated today and one evaluated next month see the same images plus, at
most, new ones (both sides of a comparison always use the same version).

**Scopes.** Files are named ``<group>__<file>``; ``changes.scopes`` says which classes each group
is authoritative for: a base dataset's group for the classes labelled in its valid split (the
doorbell frames have their parcels labelled but not the people in them, so a model finding those
people is not penalised), a collected event's group (``collected-<class>``) for its labelled
class, verified false positives (``collected``, empty labels) for every class.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.auto_collect import event_id_of
from detection_service.datasets.export_reader import IMAGE_SUFFIXES
from detection_service.datasets.importer import (
    VersionDraft,
    VersionFile,
    latest_version,
    load_version_files,
    parse_changes,
    publish_version,
)
from detection_service.ml.classes import MODEL_CLASSES
from detection_service.ml.evaluation import EvalImage, split_images
from detection_service.ml.near_duplicates import DEFAULT_MAX_BITS, hash_files, min_distances
from detection_service.ml.registry import fetch_dataset_version
from detection_service.storage import ObjectStore, keys
from schemas.db import Dataset, DatasetVersion, Model

log = logging.getLogger(__name__)

EVALUATION_SET_ID = "evaluation-set"
SOURCE_KIND = "evaluation_set"
COLLECTED_GROUP = "collected"
BASE_KINDS = ("upload", "path", "roboflow")  # human-labelled imports
_GROUP_RE = re.compile(r"[^a-z0-9_.-]+")


class NoEvaluationSet(LookupError):
    """No evaluation-set version exists and none could be built (no base dataset)."""


@dataclass
class EvaluationSetUpdate:
    version: str
    created: bool  # a new version was published
    images: int
    groups: dict[str, int]  # images per group in the version
    scopes: dict[str, list[str]]
    added: dict[str, int] = field(default_factory=dict)  # group -> images added by this update
    near_duplicates_dropped: dict[str, int] = field(default_factory=dict)
    frozen_events: int = 0

    @property
    def ref(self) -> str:
        return f"{EVALUATION_SET_ID}@{self.version}"


def _group(name: str) -> str:
    return _GROUP_RE.sub("-", name.lower()).strip("-")[:40] or "dataset"


def model_base_refs(model: Model | None) -> list[str]:
    """The human-labelled dataset versions a model was trained on: ``metrics.lineage`` entries of
    role ``human``, else its single training dataset (models trained before lineage existed)."""
    if model is None:
        return []
    metrics = model.metrics or {}
    lineage = metrics.get("lineage")
    if isinstance(lineage, list) and lineage:
        return [e["ref"] for e in lineage if isinstance(e, dict) and e.get("role") == "human" and e.get("ref")]
    dataset = metrics.get("dataset") or {}
    if dataset.get("dataset_id") and dataset.get("version"):
        return [f"{dataset['dataset_id']}@{dataset['version']}"]
    return []


def imported_dataset_refs(session: Session) -> list[str]:
    """Fallback when no model names its data: the latest version of every imported (human-labelled)
    dataset, i.e. not collected, not a teacher overlay, not this set."""
    refs = []
    for dataset in session.scalars(sa.select(Dataset).where(Dataset.version != "").order_by(Dataset.id)):
        if dataset.dataset_id == EVALUATION_SET_ID:
            continue
        row = session.scalar(
            sa.select(DatasetVersion).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == dataset.version
            )
        )
        if row is not None and (parse_changes(row.changes) or {}).get("kind") in BASE_KINDS:
            refs.append(f"{dataset.dataset_id}@{dataset.version}")
    return refs


def _split_files(data_yaml: Path, key: str) -> list[Path]:
    spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    entry = spec.get(key)
    if not entry:
        return []
    root = Path(spec.get("path") or Path(data_yaml).parent)
    folder = root / entry if not Path(entry).is_absolute() else Path(entry)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_path(image: Path) -> Path:
    return image.parent.parent / "labels" / f"{image.stem}.txt"


def _label_classes(text: str) -> set[int]:
    out = set()
    for line in text.splitlines():
        token = line.split(maxsplit=1)[0] if line.strip() else ""
        if token.isdigit() and int(token) < len(MODEL_CLASSES):
            out.add(int(token))
    return out


def update_evaluation_set(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    cache_dir: Path,
    sources: list[str],
    collected_dataset_id: str | None = None,
    *,
    max_bits: int = DEFAULT_MAX_BITS,
) -> EvaluationSetUpdate:
    """Append what is new (base datasets not yet in the set, collected valid events not yet frozen)
    as a new version, or return the latest version unchanged. ``sources``: "dataset_id@version"
    refs of base datasets. Raises NoEvaluationSet when there is neither a version nor a source."""
    cache_dir = Path(cache_dir)
    with session_factory() as session:
        dataset, row = latest_version(session, EVALUATION_SET_ID)
        previous = (parse_changes(row.changes) or {}) if row is not None else {}
        prev_version = dataset.version if dataset is not None and dataset.version else None
    prev_sources: dict[str, Any] = dict(previous.get("sources") or {})
    scopes: dict[str, list[str]] = {k: list(v) for k, v in (previous.get("scopes") or {}).items()}
    frozen_events: set[int] = {int(i) for i in previous.get("frozen_events") or []}
    new_files: list[VersionFile] = []
    added: dict[str, int] = {}
    dropped: dict[str, int] = {}
    train_hashes: list[Any] = []
    new_sources: dict[str, Any] = {}

    for ref in dict.fromkeys(sources):  # keep order, no repeats
        dataset_id, _, version = ref.rpartition("@")
        if not dataset_id or dataset_id == EVALUATION_SET_ID:
            continue
        local_yaml = fetch_dataset_version(store, dataset_id, version, cache_dir)
        train = _split_files(local_yaml, "train")
        _, hashes = hash_files(train)
        train_hashes.append(hashes)
        if dataset_id in prev_sources or dataset_id in new_sources:
            continue  # frozen the first time it appeared; later versions do not move the set
        group = _group(dataset_id)
        kept_paths, valid_hashes = hash_files(_split_files(local_yaml, "val"))
        distances = min_distances(valid_hashes, hashes)
        classes: set[int] = set()
        count = near = 0
        for image, distance in zip(kept_paths, distances):
            if distance <= max_bits:
                near += 1
                continue
            label = _label_path(image)
            text = label.read_text() if label.is_file() else ""
            classes |= _label_classes(text)
            new_files.append(VersionFile("valid", f"{group}__{image.name}", image, text))
            count += 1
        if not count:
            continue
        scopes[group] = [MODEL_CLASSES[c] for c in sorted(classes)]
        new_sources[dataset_id] = {
            "ref": ref,
            "group": group,
            "images": count,
            "near_duplicates_dropped": near,
            "classes": scopes[group],
        }
        added[group], dropped[group] = count, near

    if collected_dataset_id:
        new_files += _frozen_collected(
            session_factory,
            store,
            cache_dir,
            collected_dataset_id,
            frozen_events,
            train_hashes,
            max_bits,
            scopes,
            added,
            dropped,
        )

    if not new_files:
        if prev_version is None:
            raise NoEvaluationSet(
                "no evaluation set yet and no base dataset to build one from (train or import a dataset first)"
            )
        # Candidates that were all near-duplicates leave the set as it is (they would be dropped
        # again: the references only grow); the count is still reported.
        return _summary(store, prev_version, previous, created=False, dropped=dropped)
    files = (load_version_files(store, EVALUATION_SET_ID, prev_version) if prev_version else []) + new_files
    all_sources = {**prev_sources, **new_sources}
    draft = VersionDraft(
        dataset_id=EVALUATION_SET_ID,
        files=files,
        source=SOURCE_KIND,
        source_detail=", ".join(f"+{n} {g}" for g, n in added.items()),
        name="Evaluation set",
        description="Fixed evaluation set of the champion/challenger gate (append-only)",
        base_version=prev_version,
        extra_changes={
            "sources": all_sources,
            "scopes": scopes,
            "frozen_events": sorted(frozen_events),
            "added": added,
            "near_duplicates_dropped": dropped,
            "max_bits": max_bits,
        },
    )
    result = publish_version(session_factory, store, draft)
    log.info("evaluation set %s: %d images (%s)", result.version, result.total_images, draft.source_detail)
    return _summary(store, result.version, draft.extra_changes, created=True, added=added, dropped=dropped)


def _frozen_collected(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    cache_dir: Path,
    dataset_id: str,
    frozen_events: set[int],
    train_hashes: list[Any],
    max_bits: int,
    scopes: dict[str, list[str]],
    added: dict[str, int],
    dropped: dict[str, int],
) -> list[VersionFile]:
    import numpy as np

    with session_factory() as session:
        dataset, _ = latest_version(session, dataset_id)
        version = dataset.version if dataset is not None and dataset.version else None
    if version is None:
        return []
    local_yaml = fetch_dataset_version(store, dataset_id, version, cache_dir)
    train = _split_files(local_yaml, "train")
    _, own = hash_files(train)
    references = np.concatenate([own, *train_hashes]) if train_hashes else own
    candidates = [
        p for p in _split_files(local_yaml, "val") if (e := event_id_of(p.name)) is not None and e not in frozen_events
    ]
    paths, hashes = hash_files(candidates)
    distances = min_distances(hashes, references)
    files: list[VersionFile] = []
    for image, distance in zip(paths, distances):
        event_id = event_id_of(image.name)
        frozen_events.add(event_id)  # decided once: kept or dropped, it never comes back
        if distance <= max_bits:
            dropped[COLLECTED_GROUP] = dropped.get(COLLECTED_GROUP, 0) + 1
            continue
        label = _label_path(image)
        text = label.read_text() if label.is_file() else ""
        classes = _label_classes(text)
        group = f"{COLLECTED_GROUP}-{MODEL_CLASSES[min(classes)]}" if len(classes) == 1 else COLLECTED_GROUP
        scopes[group] = [MODEL_CLASSES[min(classes)]] if len(classes) == 1 else list(MODEL_CLASSES)
        files.append(VersionFile("valid", f"{group}__{image.name}", image, text))
        added[group] = added.get(group, 0) + 1
    return files


def _summary(
    store: ObjectStore,
    version: str,
    changes: dict[str, Any],
    *,
    created: bool,
    added: dict[str, int] | None = None,
    dropped: dict[str, int] | None = None,
) -> EvaluationSetUpdate:
    groups: dict[str, int] = {}
    prefix = keys.dataset_split_images(EVALUATION_SET_ID, version, "valid")
    for info in store.list(prefix):
        name = info.key[len(prefix) :]
        group = name.split("__", 1)[0] if "__" in name else ""
        groups[group] = groups.get(group, 0) + 1
    return EvaluationSetUpdate(
        version=version,
        created=created,
        images=sum(groups.values()),
        groups=groups,
        scopes=dict(changes.get("scopes") or {}),
        added=added or {},
        near_duplicates_dropped=dropped or {},
        frozen_events=len(changes.get("frozen_events") or []),
    )


def latest_evaluation_set(session_factory: sessionmaker[Session]) -> tuple[str, dict[str, list[str]]] | None:
    """(version, scopes) of the newest evaluation-set version, or None."""
    with session_factory() as session:
        dataset, row = latest_version(session, EVALUATION_SET_ID)
        if dataset is None or row is None:
            return None
        return dataset.version, dict((parse_changes(row.changes) or {}).get("scopes") or {})


def evaluation_images(
    session_factory: sessionmaker[Session], store: ObjectStore, cache_dir: Path, version: str | None = None
) -> tuple[str, list[EvalImage]]:
    """("evaluation-set@<version>", its images with their scopes), the latest version by default."""
    latest = latest_evaluation_set(session_factory)
    if latest is None:
        raise NoEvaluationSet("no evaluation set has been built yet")
    if version is None or version == latest[0]:
        version, scopes = latest
    else:
        with session_factory() as session:
            row = session.scalar(
                sa.select(DatasetVersion)
                .join(Dataset)
                .where(Dataset.dataset_id == EVALUATION_SET_ID, DatasetVersion.version == version)
            )
            if row is None:
                raise NoEvaluationSet(f"evaluation set has no version {version!r}")
            scopes = dict((parse_changes(row.changes) or {}).get("scopes") or {})
    local_yaml = fetch_dataset_version(store, EVALUATION_SET_ID, version, Path(cache_dir))
    return f"{EVALUATION_SET_ID}@{version}", split_images(local_yaml, "val", scopes)
