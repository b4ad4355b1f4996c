"""Dataset versions in the object store, and the one way they are written.

Layout of a version (docs/datasets.md)::

    datasets/<dataset_id>/<version>/data.yaml
    datasets/<dataset_id>/<version>/{train,valid,test}/images/<file>
    datasets/<dataset_id>/<version>/{train,valid,test}/labels/<stem>.txt   ("" for a background)
    datasets/<dataset_id>/<version>/unlabeled/images/<file>                 (auto-collect only)
    datasets/<dataset_id>/<version>/auto_labeled/{images,labels}/...        (auto-collect: model labels,
                                                                             unverified, not trained on)

Every version is a complete snapshot with labels in model class ids. ``publish_version`` writes
one atomically: a marker object reserves the version prefix, all files are uploaded in parallel,
then data.yaml, then the ``datasets`` / ``dataset_versions`` rows are committed in one
transaction. Any failure deletes everything under the prefix and writes no rows. The marker is
removed last; a crash that skips the clean-up leaves the marker behind, so that version number
is never reused (versions increase, but may have gaps).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.export_reader import SPLITS, YAML_SPLIT_KEYS, ExportError, read_export
from detection_service.errors import Conflict, DomainError, Invalid, NotFound
from detection_service.ml.classes import MODEL_CLASSES
from detection_service.storage import ObjectStore, StorageError, guess_content_type, keys
from schemas.datasets import ClassCount, ClassDistribution, FileProblem, ImportResult, SplitCount
from schemas.db import Dataset, DatasetVersion, utcnow

log = logging.getLogger(__name__)

DATASET_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,49}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")
_AUTO_VERSION_RE = re.compile(r"v(\d{1,9})")
UPLOAD_WORKERS = 8  # uploads wait on I/O (S3 round trips, fsync), not on the 2 CPUs
DEFAULT_MAX_PROBLEM_RATIO = 0.5
UNLABELED = "unlabeled"
# Captures the user has not verified, labelled by the deployed model: kept with the version for
# review, never listed in data.yaml, so never trained on or evaluated against verified labels.
AUTO_LABELED = "auto_labeled"
EXTRA_FOLDERS = (UNLABELED, AUTO_LABELED)
MARKER_NAME = ".importing"
_MAX_STORED_PROBLEMS = 100  # in dataset_versions.changes; the full list is in the ImportResult


# --------------------------------------------------------------------------------- errors


class DatasetError(DomainError):
    """Base of the dataset errors; the kind it mixes in (Invalid, NotFound, Conflict) says which."""

    code = "DATASET_ERROR"


class InvalidDataset(DatasetError, Invalid):
    code = "DATASET_ERROR"


class InvalidDatasetId(DatasetError, Invalid, ValueError):
    code = "INVALID_DATASET_ID"


class InvalidVersionLabel(DatasetError, Invalid, ValueError):
    code = "INVALID_VERSION"


class DatasetNotFound(DatasetError, NotFound):
    code = "NOT_FOUND"


class DatasetConflict(DatasetError, Conflict):
    code = "CONFLICT"


class ImportRejected(ExportError):
    """Files were rejected and ``strict`` was set, or too many were: nothing was imported."""

    code = "IMPORT_REJECTED"


class NothingToCollect(DatasetError, Conflict):
    """auto-collect found no new verified event with a usable image: no version was made."""

    code = "NOTHING_TO_COLLECT"


# --------------------------------------------------------------------------------- names


def validate_dataset_id(dataset_id: str) -> str:
    """A dataset_id is a slug ``[a-z0-9][a-z0-9_.-]*`` of at most 50 characters, not all digits
    (a number in the API path means the numeric id) and without ``..``."""
    if not isinstance(dataset_id, str) or not DATASET_ID_RE.fullmatch(dataset_id) or ".." in dataset_id:
        raise InvalidDatasetId(
            f"invalid dataset_id {dataset_id!r}: 1-50 of a-z 0-9 _ . -, starting with a letter or digit, no '..'"
        )
    if dataset_id.isdigit():
        raise InvalidDatasetId(
            f"invalid dataset_id {dataset_id!r}: must not be all digits (that reads as a numeric id)"
        )
    return dataset_id


def validate_version_label(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or ".." in version:
        raise InvalidVersionLabel(f"invalid version {version!r}: 1-20 of A-Z a-z 0-9 _ . -, no '..'")
    return version


def slugify(text: str, max_len: int = 50) -> str:
    """A dataset_id from free text ("Packages v2.1" -> "packages-v2.1"); "" when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_.]+", "-", ascii_text.lower()).strip("-._")
    slug = re.sub(r"\.{2,}", ".", slug)[:max_len].rstrip("-._")
    return f"ds-{slug}" if slug.isdigit() else slug


def version_prefix(dataset_id: str, version: str) -> str:
    return keys.dataset_version_root(dataset_id, version)


def data_yaml_text(splits: Iterable[str], path: str = ".") -> str:
    """data.yaml of a version: relative split folders, the fixed model classes."""
    present = set(splits)
    data: dict[str, Any] = {"path": path}
    for split in SPLITS:
        if split in present:
            data[YAML_SPLIT_KEYS[split]] = f"{split}/images"
    data["nc"] = len(MODEL_CLASSES)
    data["names"] = list(MODEL_CLASSES)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------------- version files


@dataclass(frozen=True, slots=True)
class StoreObject:
    """An image already in the store (a previous version, an event capture): copied."""

    key: str


ImageSource = Path | bytes | StoreObject


@dataclass(frozen=True, slots=True)
class VersionFile:
    split: str  # train, valid, test, unlabeled or auto_labeled
    name: str  # image file name; the label is <stem>.txt
    image: ImageSource
    label: str | None  # YOLO text in model ids; "" background; None: no label file (unlabeled/)

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name


@dataclass
class VersionDraft:
    """Everything publish_version needs besides the store and the database."""

    dataset_id: str
    files: list[VersionFile]
    source: str  # upload, path, roboflow, auto_collect
    source_detail: str = ""  # file name, "workspace/project/version", ...
    version: str | None = None  # None: the next "vN"
    name: str | None = None  # used only when the dataset is created
    description: str | None = None
    class_mapping: dict[str, str] = field(default_factory=dict)
    original_classes: list[str] = field(default_factory=list)
    dropped_classes: list[str] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    rejected: int = 0
    base_version: str | None = None
    roboflow: tuple[str, str] | None = None  # (project, version)
    collected_events: list[int] = field(default_factory=list)
    extra_changes: dict[str, Any] = field(default_factory=dict)


class _Stats(msgspec.Struct, kw_only=True):
    splits: dict[str, SplitCount]
    distribution: dict[str, ClassDistribution]
    total_images: int
    total_labels: int
    backgrounds: int
    unlabeled: int
    auto_labeled: int = 0


def compute_stats(files: Iterable[VersionFile]) -> _Stats:
    splits: dict[str, SplitCount] = {}
    dist = {name: ClassDistribution() for name in MODEL_CLASSES}
    total_images = total_labels = backgrounds = unlabeled = auto_labeled = 0
    for f in files:
        if f.split == UNLABELED:
            unlabeled += 1
            continue
        if f.split == AUTO_LABELED:  # not training data: counted apart, not in the class distribution
            auto_labeled += 1
            continue
        count = splits.setdefault(f.split, SplitCount())
        count.images += 1
        total_images += 1
        ids: list[int] = []
        for line in (f.label or "").splitlines():
            token = line.split(maxsplit=1)[0] if line.strip() else ""
            if token.isdigit() and int(token) < len(MODEL_CLASSES):
                ids.append(int(token))
        if not ids:
            count.backgrounds += 1
            backgrounds += 1
        count.labels += len(ids)
        total_labels += len(ids)
        for cls in set(ids):
            entry = dist[MODEL_CLASSES[cls]]
            entry.images += 1
            entry.by_split.setdefault(f.split, ClassCount()).images += 1
        for cls in ids:
            entry = dist[MODEL_CLASSES[cls]]
            entry.instances += 1
            entry.by_split.setdefault(f.split, ClassCount()).instances += 1
    ordered = {s: splits[s] for s in SPLITS if s in splits}
    return _Stats(
        splits=ordered,
        distribution=dist,
        total_images=total_images,
        total_labels=total_labels,
        backgrounds=backgrounds,
        unlabeled=unlabeled,
        auto_labeled=auto_labeled,
    )


# --------------------------------------------------------------------------------- locking


_locks_guard = threading.Lock()
_dataset_locks: dict[str, threading.Lock] = {}


def _dataset_lock(dataset_id: str) -> threading.Lock:
    with _locks_guard:
        return _dataset_locks.setdefault(dataset_id, threading.Lock())


def _prefix_used(store: ObjectStore, prefix: str) -> bool:
    return next(iter(store.list(prefix)), None) is not None


def _reserve_version(
    session_factory: sessionmaker[Session], store: ObjectStore, dataset_id: str, requested: str | None
) -> str:
    """Pick the version and write its marker. Serialised per dataset in this process; another
    process sees the marker (or the files) and moves on to the next number."""
    with _dataset_lock(dataset_id):
        with session_factory() as session:
            existing = set(
                session.scalars(sa.select(DatasetVersion.version).join(Dataset).where(Dataset.dataset_id == dataset_id))
            )
        if requested is not None:
            version = validate_version_label(requested)
            if version in existing or _prefix_used(store, version_prefix(dataset_id, version)):
                raise DatasetConflict(f"dataset {dataset_id!r} already has a version {version!r}")
        else:
            numbers = [int(m.group(1)) for v in existing if (m := _AUTO_VERSION_RE.fullmatch(v))]
            n = max(numbers, default=0) + 1
            for _ in range(1000):
                if f"v{n}" not in existing and not _prefix_used(store, version_prefix(dataset_id, f"v{n}")):
                    break
                n += 1
            else:
                raise DatasetConflict(f"no free version number for {dataset_id!r} after v{n}")
            version = f"v{n}"
        marker = {"token": uuid.uuid4().hex, "started_at": utcnow().isoformat() + "Z"}
        key = version_prefix(dataset_id, version) + MARKER_NAME
        store.put_bytes(key, json.dumps(marker).encode(), guess_content_type(key))
        return version


# --------------------------------------------------------------------------------- publishing


def _run_parallel(tasks: list[Callable[[], None]], workers: int = UPLOAD_WORKERS) -> None:
    """Run all tasks; on the first failure cancel what has not started, wait for what has, and
    re-raise it. Nothing is still writing when this returns or raises."""
    if not tasks:
        return
    pool = ThreadPoolExecutor(min(workers, len(tasks)), thread_name_prefix="dataset-upload")
    try:
        futures = [pool.submit(task) for task in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise future.exception()  # type: ignore[misc]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _upload_tasks(store: ObjectStore, prefix: str, files: list[VersionFile]) -> list[Callable[[], None]]:
    tasks: list[Callable[[], None]] = []
    for f in files:
        image_key = f"{prefix}{f.split}/images/{f.name}"
        image = f.image
        if isinstance(image, Path):
            tasks.append(lambda k=image_key, p=image: store.put_file(k, p))
        elif isinstance(image, bytes):
            tasks.append(lambda k=image_key, b=image: store.put_bytes(k, b, guess_content_type(k)))
        else:
            tasks.append(
                lambda k=image_key, src=image.key: store.put_bytes(k, store.get_bytes(src), guess_content_type(k))
            )
        label = f.label if f.label is not None or f.split == UNLABELED else ""
        if label is not None:
            label_key = f"{prefix}{f.split}/labels/{f.stem}.txt"
            tasks.append(lambda k=label_key, t=label: store.put_bytes(k, t.encode(), "text/plain"))
    return tasks


def _check_files(files: list[VersionFile]) -> None:
    seen: set[tuple[str, str]] = set()
    for f in files:
        if f.split not in (*SPLITS, *EXTRA_FOLDERS):
            raise ValueError(f"unknown split {f.split!r}")
        if (f.split, f.stem) in seen:
            raise ValueError(f"two files named {f.stem!r} in {f.split}")
        seen.add((f.split, f.stem))


def publish_version(session_factory: sessionmaker[Session], store: ObjectStore, draft: VersionDraft) -> ImportResult:
    """Write ``draft`` as a new version (see the module docstring). Creates the dataset row when
    the dataset does not exist yet. Raises DatasetConflict, StorageError, SQLAlchemy errors."""
    started = time.perf_counter()
    dataset_id = validate_dataset_id(draft.dataset_id)
    _check_files(draft.files)
    stats = compute_stats(draft.files)
    if stats.total_images == 0 and stats.unlabeled == 0 and stats.auto_labeled == 0:
        raise ExportError("nothing to store: the new version would hold no image")
    version = _reserve_version(session_factory, store, dataset_id, draft.version)
    prefix = version_prefix(dataset_id, version)
    yaml_key = prefix + "data.yaml"
    try:
        _run_parallel(_upload_tasks(store, prefix, draft.files))
        present = [s for s in SPLITS if s in stats.splits]
        store.put_bytes(yaml_key, data_yaml_text(present).encode(), guess_content_type(yaml_key))
        changes = _changes(draft, stats)
        _commit(session_factory, draft, version, yaml_key, stats, changes)
    except BaseException:
        try:
            store.delete_prefix(prefix)
        except Exception:  # keep the original error; the marker keeps the version number retired
            log.exception("could not remove %s after a failed import", prefix)
        raise
    try:
        store.delete(prefix + MARKER_NAME)
    except StorageError:
        log.warning("could not remove the import marker of %s", prefix, exc_info=True)
    return ImportResult(
        dataset_id=dataset_id,
        version=version,
        storage_path=prefix,
        yaml_path=yaml_key,
        total_images=stats.total_images,
        total_labels=stats.total_labels,
        background_images=stats.backgrounds,
        class_distribution=stats.distribution,
        splits=stats.splits,
        rejected=draft.rejected,
        problems=draft.problems,
        source=draft.source,
        class_mapping=draft.class_mapping,
        base_version=draft.base_version,
        unlabeled_images=stats.unlabeled,
        auto_labeled_images=stats.auto_labeled,
        collected_events=draft.collected_events,
        duration_s=round(time.perf_counter() - started, 3),
    )


def _changes(draft: VersionDraft, stats: _Stats) -> dict[str, Any]:
    errors = sum(1 for p in draft.problems if p.severity == "error")
    changes: dict[str, Any] = {
        "kind": draft.source,
        "source": draft.source_detail,
        "base_version": draft.base_version,
        "splits": msgspec.to_builtins(stats.splits),
        "class_distribution": msgspec.to_builtins(stats.distribution),
        "background_images": stats.backgrounds,
        "unlabeled_images": stats.unlabeled,
        "auto_labeled_images": stats.auto_labeled,
        "original_classes": draft.original_classes,
        "class_mapping": draft.class_mapping,
        "dropped_classes": draft.dropped_classes,
        "rejected": draft.rejected,
        "problem_count": {"error": errors, "warning": len(draft.problems) - errors},
        "problems": msgspec.to_builtins(draft.problems[:_MAX_STORED_PROBLEMS]),
        # The ids auto-collect has put into this dataset (only the new ones of this version).
        "events_collected": sorted(draft.collected_events),
    }
    if draft.roboflow:
        changes["roboflow"] = {"project": draft.roboflow[0], "version": draft.roboflow[1]}
    changes.update(draft.extra_changes)
    return changes


def _commit(
    session_factory: sessionmaker[Session],
    draft: VersionDraft,
    version: str,
    yaml_key: str,
    stats: _Stats,
    changes: dict[str, Any],
) -> None:
    now = utcnow()
    with session_factory.begin() as session:
        # A no-op UPDATE first, not SELECT ... FOR UPDATE (SQLite ignores that): it takes SQLite's
        # write lock / the InnoDB row lock, so writers of one dataset are serialised.
        session.execute(
            sa.update(Dataset)
            .where(Dataset.dataset_id == draft.dataset_id)
            .values(updated_at=Dataset.updated_at)
            .execution_options(synchronize_session=False)
        )
        dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == draft.dataset_id))
        if dataset is None:
            dataset = Dataset(
                dataset_id=draft.dataset_id,
                name=(draft.name or draft.dataset_id)[:100],
                description=draft.description,
                version=version,
                storage_path=keys.dataset_root(draft.dataset_id),
                yaml_path=yaml_key,
            )
            session.add(dataset)
            try:
                session.flush()
            except sa.exc.IntegrityError:
                raise DatasetConflict(f"dataset {draft.dataset_id!r} was created concurrently; try again") from None
        elif (
            session.scalar(
                sa.select(DatasetVersion.id).where(
                    DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == version
                )
            )
            is not None
        ):
            raise DatasetConflict(f"dataset {draft.dataset_id!r} already has a version {version!r}")
        dataset.version = version
        dataset.yaml_path = yaml_key
        dataset.total_images = stats.total_images
        dataset.total_labels = stats.total_labels
        dataset.class_distribution = msgspec.to_builtins(stats.distribution)
        if draft.roboflow:
            dataset.roboflow_project = draft.roboflow[0][:100]
            dataset.roboflow_version = str(draft.roboflow[1])[:20]
            dataset.last_sync_at = now
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=version,
                image_count=stats.total_images,
                changes=json.dumps(changes, ensure_ascii=False),
            )
        )


# --------------------------------------------------------------------------------- reading back


def parse_changes(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}  # free text written by hand or another tool
    return value if isinstance(value, dict) else {"value": value}


def latest_version(session: Session, dataset_id: str) -> tuple[Dataset | None, DatasetVersion | None]:
    dataset = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == dataset_id))
    if dataset is None:
        return None, None
    row = (
        session.scalar(
            sa.select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == dataset.version)
            .order_by(DatasetVersion.id.desc())
            .limit(1)
        )
        if dataset.version
        else None
    )
    return dataset, row


def load_version_files(store: ObjectStore, dataset_id: str, version: str) -> list[VersionFile]:
    """The files of a stored version, images as StoreObject (copied on publish), labels read."""
    prefix = version_prefix(dataset_id, version)
    images: dict[tuple[str, str], tuple[str, str]] = {}  # (split, stem) -> (name, key)
    label_keys: dict[tuple[str, str], str] = {}
    for info in store.list(prefix):
        parts = info.key[len(prefix) :].split("/")
        if len(parts) != 3 or parts[0] not in (*SPLITS, *EXTRA_FOLDERS):
            continue  # data.yaml, the marker, anything foreign
        split, kind, name = parts
        stem = name.rsplit(".", 1)[0] if "." in name else name
        if kind == "images":
            images[(split, stem)] = (name, info.key)
        elif kind == "labels" and name.endswith(".txt"):
            label_keys[(split, stem)] = info.key
    wanted = [(k, label_keys[k]) for k in images if k in label_keys]
    texts: dict[tuple[str, str], str] = {}
    lock = threading.Lock()

    def fetch(item: tuple[tuple[str, str], str]) -> None:
        text = store.get_bytes(item[1]).decode("utf-8", "replace")
        with lock:
            texts[item[0]] = text

    _run_parallel([lambda i=item: fetch(i) for item in wanted])
    files = []
    for (split, stem), (name, key) in sorted(images.items()):
        label = texts.get((split, stem))
        if label is None and split != UNLABELED:
            label = ""
        files.append(VersionFile(split, name, StoreObject(key), label))
    return files


# --------------------------------------------------------------------------------- import


def check_problems(
    problems: list[FileProblem], rejected: int, seen: int, strict: bool, max_problem_ratio: float
) -> None:
    """Rejected files: imported without them, unless ``strict`` or more than ``max_problem_ratio``
    of the images were rejected (then the export is probably not what it claims): ImportRejected."""
    if not rejected:
        return
    errors = [msgspec.to_builtins(p) for p in problems if p.severity == "error"]
    details = {"rejected": rejected, "images": seen, "problems": errors[:500], "problem_count": len(errors)}
    if strict:
        raise ImportRejected(f"{rejected} of {seen} images rejected and strict is set: nothing imported", details)
    if seen and rejected / seen > max_problem_ratio:
        raise ImportRejected(
            f"{rejected} of {seen} images rejected (more than {max_problem_ratio:.0%}): nothing imported", details
        )


def import_dataset(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    source: str | Path,
    dataset_id: str,
    name: str | None = None,
    description: str | None = None,
    class_mapping: Mapping[str, str | None] | None = None,
    roboflow: tuple[str, str | int] | None = None,
    *,
    version: str | None = None,
    strict: bool = False,
    max_problem_ratio: float = DEFAULT_MAX_PROBLEM_RATIO,
    merge: bool = False,
    source_kind: str = "path",
    source_name: str | None = None,
    work_dir: str | Path | None = None,
) -> ImportResult:
    """Import a Roboflow-style export (folder or zip) as a new version of ``dataset_id``.

    Creates the dataset (``name``, ``description``) when it does not exist, else adds the next
    version ("v1", "v2", ... unless ``version`` names it). The export replaces the dataset's
    content; ``merge=True`` carries the latest version's files over (the export wins on equal
    names). Rejected files are left out and reported (``problems``, ``rejected``) unless
    ``strict`` or more than ``max_problem_ratio`` were rejected: then ImportRejected, nothing
    stored. ``roboflow=(project, version)`` records where the export came from.
    Raises ExportError subclasses (bad export, unknown classes), DatasetConflict, StorageError.
    """
    dataset_id = validate_dataset_id(dataset_id)
    if version is not None:
        validate_version_label(version)
    with read_export(source, class_mapping, work_dir=work_dir) as report:
        check_problems(report.problems, report.rejected, report.images_seen, strict, max_problem_ratio)
        files = [VersionFile(item.split, item.name, item.image, item.label) for item in report.items]
        problems = list(report.problems)
        base_version = None
        if merge:
            with session_factory() as session:
                dataset, _ = latest_version(session, dataset_id)
            if dataset is not None and dataset.version:
                base_version = dataset.version
                new_names = {(f.split, f.stem) for f in files}
                replaced = 0
                for old in load_version_files(store, dataset_id, dataset.version):
                    if (old.split, old.stem) in new_names:
                        replaced += 1
                    else:
                        files.append(old)
                if replaced:
                    problems.append(
                        FileProblem(
                            file=f"{dataset_id}/{base_version}",
                            severity="warning",
                            problem=f"{replaced} file(s) of {base_version} replaced by files of the same name",
                        )
                    )
        draft = VersionDraft(
            dataset_id=dataset_id,
            files=files,
            source=source_kind,
            source_detail=source_name or Path(source).name,
            version=version,
            name=name,
            description=description,
            class_mapping=report.class_mapping,
            original_classes=report.names,
            dropped_classes=report.dropped_classes,
            problems=problems,
            rejected=report.rejected,
            base_version=base_version,
            roboflow=(roboflow[0], str(roboflow[1])) if roboflow else None,
        )
        return publish_version(session_factory, store, draft)


def create_dataset(
    session_factory: sessionmaker[Session], name: str, description: str | None = None, dataset_id: str | None = None
) -> Dataset:
    """An empty dataset (no version yet: ``version`` and ``yaml_path`` are ""). DatasetConflict
    when the dataset_id is taken."""
    if not name or not name.strip():
        raise InvalidDataset("name must not be empty")
    if dataset_id is None:
        dataset_id = slugify(name) or f"dataset-{uuid.uuid4().hex[:8]}"
    validate_dataset_id(dataset_id)
    try:
        with session_factory.begin() as session:
            if session.scalar(sa.select(Dataset.id).where(Dataset.dataset_id == dataset_id)) is not None:
                raise DatasetConflict(f"dataset {dataset_id!r} already exists", {"dataset_id": dataset_id})
            dataset = Dataset(
                dataset_id=dataset_id,
                name=name.strip()[:100],
                description=description,
                version="",
                storage_path=keys.dataset_root(dataset_id),
                yaml_path="",
                total_images=0,
                total_labels=0,
                class_distribution=None,
            )
            session.add(dataset)
            session.flush()
            return dataset
    except sa.exc.IntegrityError:  # created concurrently between the check and the insert
        raise DatasetConflict(f"dataset {dataset_id!r} already exists", {"dataset_id": dataset_id}) from None
