"""data.yaml versions of a dataset: validation against the object store, versions, activation and
change history (tables ``data_yaml`` / ``data_yaml_history``; rules in ``docs/data_yaml.md``).

A dataset version's files live under ``datasets/<dataset_id>/<version>/``. Split paths in a
data.yaml are relative to that folder; rows store them resolved to object-store prefixes
(``datasets/<dataset_id>/<version>/train/images``), so a row keeps pointing at the same data when a
newer dataset version is imported (``path: .`` alone would silently follow the newest version).

Every public method takes a dataset reference: a ``Dataset`` row, its primary key, or a string
(a numeric string is tried as the primary key first, then as ``datasets.dataset_id``).

Store I/O (validation lists objects) happens outside database transactions; every write
transaction starts by locking the dataset row (``_lock_dataset``), so concurrent creates, updates
and activations of one dataset cannot break "one active yaml" or the version numbering.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.yaml_loader import load_yaml
from detection_service.errors import DomainError, Invalid, NotFound
from detection_service.ml.classes import MODEL_CLASSES, map_class_name
from detection_service.storage import keys
from detection_service.storage.base import InvalidKey, ObjectStore, validate_key
from schemas.data_yaml import (
    DataYamlChange,
    DataYamlInfo,
    DataYamlSummary,
    ParsedDataYaml,
    ValidationResult,
    YamlProblem,
)
from schemas.db import Dataset, DataYaml, DataYamlHistory
from schemas.enums import YamlChangeType

log = logging.getLogger(__name__)

DatasetRef = Dataset | int | str

DATASETS_PREFIX: Final = "datasets"
# yaml_content and the history's old/new_content are TEXT: 65,535 bytes on MySQL.
MAX_YAML_BYTES: Final = 65_535
MAX_PATH_CHARS: Final = 500  # train_path, val_path, test_path, download_url: VARCHAR(500)
MAX_VERSION_CHARS: Final = 20  # yaml_version: VARCHAR(20)
# Ultralytics' image formats; a split folder must hold at least one of them.
IMAGE_SUFFIXES: Final = frozenset(
    {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}
)
# Give up looking for an image after this many other objects (bounded S3 listing).
IMAGE_SCAN_LIMIT: Final = 1000
# (yaml key, column, required)
SPLITS: Final = (("train", "train_path", True), ("val", "val_path", True), ("test", "test_path", False))
# Columns compared in changes_summary["fields"].
DIFF_FIELDS: Final = ("yaml_version", "train_path", "val_path", "test_path", "nc", "names", "download_url")

_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:")
_PRIMARY_KEY = re.compile(r"[0-9]{1,18}")


class DataYamlError(DomainError):
    """Base of this service's errors."""


class DatasetNotFound(DataYamlError, NotFound, LookupError):
    def __init__(self, dataset: object) -> None:
        super().__init__(f"dataset {dataset!r} not found", {"dataset": dataset})


class DataYamlNotFound(DataYamlError, NotFound, LookupError):
    """No such yaml, or it belongs to another dataset."""

    def __init__(self, yaml_id: int, ds_pk: int) -> None:
        super().__init__(f"no data.yaml {yaml_id} in this dataset", {"dataset": ds_pk, "yaml_id": yaml_id})


class InvalidDataYaml(DataYamlError, Invalid, ValueError):
    """The yaml (or the requested version label) is not acceptable; nothing was stored."""

    code = "INVALID_DATA_YAML"

    def __init__(self, problems: Sequence[YamlProblem]) -> None:
        self.problems = list(problems)
        first = "; ".join(f"{p.field}: {p.message}" for p in self.problems[:3])
        more = f" (+{len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        super().__init__(f"invalid data.yaml: {first}{more}", self.problems)


def file_hash(content: str) -> str:
    # surrogatepass: never fail here; validation reports text that is not valid Unicode.
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


class DataYamlService:
    def __init__(self, session_factory: sessionmaker[Session], store: ObjectStore) -> None:
        self._session_factory = session_factory
        self._store = store

    # --- validation -------------------------------------------------------------------------

    def parse_and_validate(
        self, dataset: DatasetRef, yaml_content: str, *, base_version: str | None = None
    ) -> tuple[ParsedDataYaml | None, list[YamlProblem]]:
        """(parsed, []) for a valid yaml, else (None, every problem found).

        ``base_version``: the dataset version ``path: .`` (or no ``path``) means; default the
        dataset's current version.
        """
        key, current = self._dataset_key(dataset)
        return self._validate(key, base_version or current, yaml_content)

    def validate(self, dataset: DatasetRef, yaml_content: str) -> ValidationResult:
        parsed, problems = self.parse_and_validate(dataset, yaml_content)
        return ValidationResult(valid=not problems, problems=problems, parsed=parsed)

    def _validate(
        self, dataset_key: str, base_version: str, content: str
    ) -> tuple[ParsedDataYaml | None, list[YamlProblem]]:
        problems: list[YamlProblem] = []

        def problem(field: str, message: str) -> None:
            problems.append(YamlProblem(field=field, message=message))

        data = _load(content, problem)
        if data is None:
            return None, problems

        names = _check_names(data.get("names"), problem)
        nc = data.get("nc")
        if nc is None:
            problem("nc", "is required: the number of classes")
        elif not isinstance(nc, int) or isinstance(nc, bool):
            problem("nc", f"must be an integer, got {_short(nc)}")
        elif nc < 1:
            problem("nc", "must be at least 1")
        elif names is not None and nc != len(names):
            problem("nc", f"is {nc} but names lists {len(names)} class(es)")

        root = _resolve_root(data.get("path"), dataset_key, base_version, problem)
        resolved: dict[str, str | None] = {}
        checked: dict[str, str | None] = {}  # prefix -> problem (train and val may share a folder)
        for yaml_key, column, required in SPLITS:
            value = data.get(yaml_key)
            resolved[column] = None
            if value is None:
                if required:
                    problem(yaml_key, f"is required: the {yaml_key} images folder, e.g. {_EXAMPLES[yaml_key]}")
                continue
            if isinstance(value, list):
                problem(yaml_key, "must be one folder path (lists of folders are not supported)")
                continue
            relative = _relative_path(yaml_key, value, problem)
            if relative is None or root is None:
                continue
            prefix = f"{root[0]}/{relative}" if relative else root[0]
            if len(prefix) > MAX_PATH_CHARS:
                problem(yaml_key, f"resolves to a key longer than {MAX_PATH_CHARS} characters")
                continue
            try:
                validate_key(prefix)
            except InvalidKey as exc:
                problem(yaml_key, f"is not a usable object-store path: {exc}")
                continue
            if prefix not in checked:
                checked[prefix] = self._image_problem(prefix)
            if checked[prefix]:
                problem(yaml_key, checked[prefix])  # type: ignore[arg-type]
                continue
            resolved[column] = prefix

        download_url = data.get("download_url")
        if download_url is not None and (not isinstance(download_url, str) or len(download_url) > MAX_PATH_CHARS):
            problem("download_url", f"must be a string of at most {MAX_PATH_CHARS} characters")

        if problems:
            return None, problems
        assert names is not None and root is not None and isinstance(nc, int)
        return (
            ParsedDataYaml(
                dataset_version=root[1],
                train_path=resolved["train_path"],  # type: ignore[arg-type]
                val_path=resolved["val_path"],  # type: ignore[arg-type]
                test_path=resolved["test_path"],
                nc=nc,
                names=names,
                class_mapping=_class_mapping(names),
                download_url=download_url,
            ),
            [],
        )

    def _image_problem(self, prefix: str) -> str | None:
        """None if at least one image lies under ``prefix/``, else what is wrong."""
        others = 0
        for info in self._store.list(prefix + "/"):
            if PurePosixPath(info.key).suffix.lower() in IMAGE_SUFFIXES:
                return None
            others += 1
            if others >= IMAGE_SCAN_LIMIT:
                return f"{prefix}/ has no image among its first {IMAGE_SCAN_LIMIT} objects"
        if others == 0:
            return f"{prefix}/ does not exist in the object store (no objects under it)"
        return f"{prefix}/ holds no images ({others} other object(s))"

    # --- writes -----------------------------------------------------------------------------

    def create(
        self, dataset: DatasetRef, yaml_content: str, version: str | None = None, activate: bool = False
    ) -> DataYamlInfo:
        """Store a new yaml (InvalidDataYaml lists every problem; nothing is stored then). The
        first yaml of a dataset becomes active; later ones only with ``activate=True``."""
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            ds_pk, ds_key, current = ds.id, ds.dataset_id, ds.version
            used = _used_versions(session, ds_pk)
        label, version_problems = _check_version_label(version, used)
        parsed, problems = self._validate(ds_key, current, yaml_content)
        if problems or version_problems:
            raise InvalidDataYaml([*problems, *version_problems])
        assert parsed is not None

        with self._session_factory.begin() as session:
            self._lock_dataset(session, ds_pk)
            used = _used_versions(session, ds_pk)
            if label is None:
                label = _next_version(used)
            elif label in used:  # taken since we checked (concurrent create)
                raise InvalidDataYaml([_version_taken(label, used[label])])
            row = self._insert(session, ds_pk, yaml_content, parsed, label)
            has_active = session.scalar(
                sa.select(DataYaml.id).where(DataYaml.dataset_id == ds_pk, DataYaml.is_active == sa.true())
            )
            if activate or has_active is None:
                _activate_in(session, ds_pk, row)
            return _info(row)

    def update(self, dataset: DatasetRef, yaml_id: int, yaml_content: str) -> tuple[DataYamlInfo, bool]:
        """Replace a yaml's content: (row, changed). The same content is a no-op (no history)."""
        new_hash = file_hash(yaml_content)
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            ds_pk, ds_key, current = ds.id, ds.dataset_id, ds.version
            row = _load_yaml(session, ds_pk, yaml_id)
            if row.file_hash == new_hash:
                return _info(row), False
            # "path: ." keeps meaning the version the row already refers to, not the newest one.
            base_version = _row_version(row, ds_key) or current
        parsed, problems = self._validate(ds_key, base_version, yaml_content)
        if problems:
            raise InvalidDataYaml(problems)
        assert parsed is not None

        with self._session_factory.begin() as session:
            self._lock_dataset(session, ds_pk)
            row = _load_yaml(session, ds_pk, yaml_id)
            if row.file_hash == new_hash:
                return _info(row), False
            old_fields, old_content, old_hash = _fields(row), row.yaml_content, row.file_hash
            _apply(row, yaml_content, parsed)
            summary = _diff(old_fields, _fields(row), old_hash, row.file_hash)
            session.add(
                DataYamlHistory(
                    yaml_config_id=row.id,
                    change_type=YamlChangeType.UPDATED.value,
                    old_content=old_content,
                    new_content=yaml_content,
                    changes_summary=summary,
                )
            )
            session.flush()
            return _info(row), True

    def activate(self, dataset: DatasetRef, yaml_id: int) -> DataYamlInfo:
        """Make this yaml the dataset's only active one. Already active: nothing changes."""
        with self._session_factory() as session:
            ds_pk = self._load_dataset(session, dataset).id
        with self._session_factory.begin() as session:
            self._lock_dataset(session, ds_pk)
            row = _load_yaml(session, ds_pk, yaml_id)
            _activate_in(session, ds_pk, row)
            return _info(row)

    def ensure_generated(self, dataset: DatasetRef, version: str) -> tuple[DataYamlInfo, bool]:
        """Create and activate the yaml row of an imported dataset version from its generated
        ``datasets/<dataset_id>/<version>/data.yaml``: (row, created).

        Idempotent: if the dataset already has a row labelled ``version`` (yaml_version), or a row
        with the same file hash pointing into this version, that row is returned unchanged (its
        activation is left alone, so a later manual activation is respected). Raises
        storage.ObjectNotFound if the file is missing and InvalidDataYaml if it is invalid.
        """
        if not version or len(version) > MAX_VERSION_CHARS or "/" in version or version in (".", ".."):
            raise ValueError(f"bad dataset version {version!r}")
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            ds_pk, ds_key = ds.id, ds.dataset_id
        key = keys.dataset_version_root(ds_key, version) + "data.yaml"
        try:
            content = self._store.get_bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidDataYaml([YamlProblem(field="yaml_content", message=f"{key} is not UTF-8 text")]) from None
        digest = file_hash(content)
        with self._session_factory() as session:
            existing = _generated_row(session, ds_pk, ds_key, version, digest)
            if existing is not None:
                return _info(existing), False
        parsed, problems = self._validate(ds_key, version, content)  # "path: ." = the file's own folder
        if problems:
            raise InvalidDataYaml(problems)
        assert parsed is not None

        with self._session_factory.begin() as session:
            self._lock_dataset(session, ds_pk)
            existing = _generated_row(session, ds_pk, ds_key, version, digest)
            if existing is not None:  # a concurrent call won
                return _info(existing), False
            row = self._insert(session, ds_pk, content, parsed, version)
            _activate_in(session, ds_pk, row)
            log.info("data.yaml %s of dataset %s version %s created and activated", row.id, ds_key, version)
            return _info(row), True

    def _insert(self, session: Session, ds_pk: int, content: str, parsed: ParsedDataYaml, label: str) -> DataYaml:
        row = DataYaml(dataset_id=ds_pk, yaml_version=label)
        _apply(row, content, parsed)
        session.add(row)
        session.flush()
        session.add(
            DataYamlHistory(
                yaml_config_id=row.id,
                change_type=YamlChangeType.CREATED.value,
                old_content=None,
                new_content=content,
                changes_summary=_diff(None, _fields(row), None, row.file_hash),
            )
        )
        session.flush()
        return row

    # --- reads ------------------------------------------------------------------------------

    def get_active(self, dataset: DatasetRef) -> DataYamlInfo | None:
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            row = session.scalars(
                sa.select(DataYaml).where(DataYaml.dataset_id == ds.id, DataYaml.is_active == sa.true())
            ).first()
            return _info(row) if row is not None else None

    def get(self, dataset: DatasetRef, yaml_id: int) -> DataYamlInfo:
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            return _info(_load_yaml(session, ds.id, yaml_id))

    def versions(self, dataset: DatasetRef) -> list[DataYamlSummary]:
        """Every yaml of the dataset, newest first (by id: created_at has whole seconds only)."""
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            rows = session.scalars(
                sa.select(DataYaml).where(DataYaml.dataset_id == ds.id).order_by(DataYaml.id.desc())
            ).all()
            return [_summary(row) for row in rows]

    def changes(self, dataset: DatasetRef, yaml_id: int) -> list[DataYamlChange]:
        """The yaml's history rows, newest first."""
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            _load_yaml(session, ds.id, yaml_id)
            rows = session.scalars(
                sa.select(DataYamlHistory)
                .where(DataYamlHistory.yaml_config_id == yaml_id)
                .order_by(DataYamlHistory.id.desc())
            ).all()
            return [_change(row) for row in rows]

    # --- datasets ---------------------------------------------------------------------------

    def _dataset_key(self, dataset: DatasetRef) -> tuple[str, str]:
        if isinstance(dataset, Dataset):
            return dataset.dataset_id, dataset.version
        with self._session_factory() as session:
            ds = self._load_dataset(session, dataset)
            return ds.dataset_id, ds.version

    @staticmethod
    def _load_dataset(session: Session, dataset: DatasetRef) -> Dataset:
        def query(*where: Any) -> Dataset | None:
            return session.scalars(sa.select(Dataset).where(*where)).first()

        found: Dataset | None
        if isinstance(dataset, Dataset):
            found = query(Dataset.id == dataset.id)
        elif isinstance(dataset, int) and not isinstance(dataset, bool):
            found = query(Dataset.id == dataset)
        elif isinstance(dataset, str):
            found = query(Dataset.id == int(dataset)) if _PRIMARY_KEY.fullmatch(dataset) else None
            if found is None:
                found = query(Dataset.dataset_id == dataset)
        else:
            raise TypeError(f"dataset reference must be a Dataset, int or str, not {type(dataset).__name__}")
        if found is None:
            raise DatasetNotFound(dataset.id if isinstance(dataset, Dataset) else dataset)
        return found

    @staticmethod
    def _lock_dataset(session: Session, ds_pk: int) -> Dataset:
        """The first statement of every write transaction: serialises writers of one dataset.

        A no-op UPDATE rather than SELECT ... FOR UPDATE: SQLite ignores FOR UPDATE, and pysqlite
        only opens a transaction at the first write, so reads before it would see rows another
        writer is about to change. The UPDATE takes SQLite's write lock (waiting busy_timeout) and
        an InnoDB row lock, and, coming first, keeps MySQL's snapshot from predating the lock.
        """
        session.execute(
            sa.update(Dataset)
            .where(Dataset.id == ds_pk)
            .values(updated_at=Dataset.updated_at)  # named, so the ORM's onupdate does not bump it
            .execution_options(synchronize_session=False)
        )
        found = session.scalars(sa.select(Dataset).where(Dataset.id == ds_pk)).first()
        if found is None:
            raise DatasetNotFound(ds_pk)
        return found


# --- validation helpers ---------------------------------------------------------------------

_EXAMPLES = {"train": "train/images", "val": "valid/images", "test": "test/images"}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(content: Any, problem: Callable[[str, str], None]) -> dict[Any, Any] | None:
    if not isinstance(content, str):
        problem("yaml_content", "must be a string")
        return None
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        problem("yaml_content", "is not valid Unicode text (lone surrogate)")
        return None
    if size > MAX_YAML_BYTES:
        problem("yaml_content", f"is {size} bytes; at most {MAX_YAML_BYTES} are stored")
        return None
    if not content.strip():
        problem("yaml_content", "is empty")
        return None
    try:
        data = load_yaml(content)  # safe loader: plain data only; aliases refused (alias bombs)
    except yaml.YAMLError as exc:
        problem("yaml_content", "is not valid YAML: " + " ".join(str(exc).split()))
        return None
    if not isinstance(data, dict):
        problem("yaml_content", "must be a YAML mapping (key: value lines)")
        return None
    return data


def _check_names(raw: Any, problem: Callable[[str, str], None]) -> list[str] | None:
    """The class names as a list (a mapping id -> name is put in id order), or None if unusable.
    Each unknown or bad name is its own problem."""
    if raw is None:
        problem("names", "is required: the class names, a list or a mapping id -> name")
        return None
    if isinstance(raw, dict):
        try:
            by_id = {int(k): v for k, v in raw.items() if not isinstance(k, bool | float)}
        except (TypeError, ValueError):
            by_id = {}
        if len(by_id) != len(raw) or sorted(by_id) != list(range(len(raw))):
            problem("names", "as a mapping, its keys must be the class ids 0..n-1")
            return None
        names = [by_id[i] for i in range(len(raw))]
    elif isinstance(raw, list):
        names = list(raw)
    else:
        problem("names", f"must be a list of class names or a mapping id -> name, got {_short(raw)}")
        return None
    if not names:
        problem("names", "must name at least one class")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        field = f"names[{i}]"
        if not isinstance(name, str) or not name.strip():
            problem(field, f"must be a non-empty string, got {_short(name)}")
            continue
        folded = name.strip().lower()
        if folded in seen:
            problem(field, f"{name!r} repeats names[{seen[folded]}]")
        seen.setdefault(folded, i)
        if map_class_name(name) is None:
            problem(
                field,
                f"unknown class {name!r}: not a model class ({', '.join(MODEL_CLASSES)}) and no known mapping to one",
            )
    # Returned even with bad entries: its length still makes the nc check meaningful.
    return names


def _relative_path(field: str, value: Any, problem: Callable[[str, str], None]) -> str | None:
    """A safe path relative to the dataset folder ('' for '.'), or None after a problem."""
    if not isinstance(value, str) or not value.strip():
        problem(field, f"must be a folder path relative to the dataset, got {_short(value)}")
        return None
    text = value.strip()
    if text.startswith(("/", "~", "\\")) or _WINDOWS_ABSOLUTE.match(text) or "://" in text:
        example = _EXAMPLES.get(field, "v1")
        problem(field, f"{text!r} must be relative to the dataset in the object store (e.g. {example})")
        return None
    if "\\" in text:
        problem(field, f"{text!r}: use '/' between folders")
        return None
    segments = [s for s in text.split("/") if s not in ("", ".")]
    if ".." in segments:
        problem(field, f"{text!r} must not contain '..': paths stay inside the dataset folder")
        return None
    return "/".join(segments)


def _resolve_root(
    value: Any, dataset_key: str, base_version: str, problem: Callable[[str, str], None]
) -> tuple[str, str] | None:
    """(root prefix, dataset version) that split paths are relative to.

    ``path`` absent, empty or '.': ``datasets/<dataset_id>/<base_version>``. ``path: v2`` (or
    ``v2/sub``): that folder of this dataset. ``path: datasets/<dataset_id>/v2``: the same, spelt
    out. Anything else is a problem.
    """
    if value is None or value == "":
        segments: list[str] = []
    else:
        relative = _relative_path("path", value, problem)
        if relative is None:
            return None
        segments = relative.split("/") if relative else []
    if segments[:1] == [DATASETS_PREFIX]:
        if segments[1:2] != [dataset_key]:
            problem("path", f"{value!r} names another dataset; it must stay inside {keys.dataset_root(dataset_key)}")
            return None
        segments = segments[2:]
    if not segments:
        segments = [base_version]
    return keys.dataset_root(dataset_key) + "/".join(segments), segments[0]


def _class_mapping(names: Sequence[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for name in names:
        target = map_class_name(name) if isinstance(name, str) else None
        if target is not None:
            mapping[name] = target
    return mapping


def _check_version_label(version: str | None, used: Mapping[str, int]) -> tuple[str | None, list[YamlProblem]]:
    if version is None or not version.strip():
        return None, []
    label = version.strip()
    if len(label) > MAX_VERSION_CHARS:
        return label, [YamlProblem(field="version", message=f"must be at most {MAX_VERSION_CHARS} characters")]
    if label in used:
        return label, [_version_taken(label, used[label])]
    return label, []


def _version_taken(label: str, yaml_id: int) -> YamlProblem:
    return YamlProblem(field="version", message=f"{label!r} is already used by yaml {yaml_id} of this dataset")


# --- database helpers -----------------------------------------------------------------------


def _used_versions(session: Session, ds_pk: int) -> dict[str, int]:
    rows = session.execute(sa.select(DataYaml.yaml_version, DataYaml.id).where(DataYaml.dataset_id == ds_pk)).all()
    return {label: yaml_id for label, yaml_id in rows if label is not None}


def _next_version(used: Mapping[str, int]) -> str:
    """ "1", "2", ...: past both the row count and the highest numeric label, never a used one."""
    numbers = [int(label) for label in used if label.isdecimal() and len(label) < 10]
    n = max([len(used), *numbers]) + 1
    while str(n) in used:
        n += 1
    return str(n)


def _load_yaml(session: Session, ds_pk: int, yaml_id: int) -> DataYaml:
    row = session.get(DataYaml, yaml_id)
    if row is None or row.dataset_id != ds_pk:  # another dataset's yaml is "not found" too
        raise DataYamlNotFound(yaml_id, ds_pk)
    return row


def _generated_row(session: Session, ds_pk: int, ds_key: str, version: str, digest: str) -> DataYaml | None:
    inside = keys.dataset_version_root(ds_key, version)
    rows = session.scalars(
        sa.select(DataYaml)
        .where(
            DataYaml.dataset_id == ds_pk,
            sa.or_(DataYaml.yaml_version == version, DataYaml.file_hash == digest),
        )
        .order_by(DataYaml.id)
    ).all()
    for row in rows:
        if row.yaml_version == version or (row.train_path or "").startswith(inside):
            return row
    return None


def _row_version(row: DataYaml, ds_key: str) -> str | None:
    """The dataset version a stored row points into (from its resolved train path)."""
    prefix = keys.dataset_root(ds_key)
    if row.train_path and row.train_path.startswith(prefix):
        return row.train_path[len(prefix) :].split("/", 1)[0] or None
    return None


def _apply(row: DataYaml, content: str, parsed: ParsedDataYaml) -> None:
    row.yaml_content = content
    row.file_hash = file_hash(content)
    row.train_path = parsed.train_path
    row.val_path = parsed.val_path
    row.test_path = parsed.test_path
    row.nc = parsed.nc
    row.names = list(parsed.names)
    row.download_url = parsed.download_url


def _activate_in(session: Session, ds_pk: int, row: DataYaml) -> bool:
    """Deactivate the current active yaml(s), then activate ``row``, with history rows. The caller
    holds the dataset lock and commits. False if ``row`` was already active."""
    if row.is_active:
        return False
    previous = session.scalars(
        sa.select(DataYaml).where(DataYaml.dataset_id == ds_pk, DataYaml.is_active == sa.true(), DataYaml.id != row.id)
    ).all()
    for old in previous:
        old.is_active = None  # NULL, never FALSE: see DataYaml / docs/schema.md
        session.add(
            DataYamlHistory(
                yaml_config_id=old.id,
                change_type=YamlChangeType.DEACTIVATED.value,
                changes_summary={
                    "fields": {"is_active": {"old": True, "new": False}},
                    "content_changed": False,
                    "activated_yaml_id": row.id,
                },
            )
        )
    # The old row must be NULL in the database before the new one turns TRUE, or the unique
    # (dataset_id, is_active) key sees two active rows; one flush could order the UPDATEs either way.
    session.flush()
    row.is_active = True
    session.add(
        DataYamlHistory(
            yaml_config_id=row.id,
            change_type=YamlChangeType.ACTIVATED.value,
            changes_summary={
                "fields": {"is_active": {"old": False, "new": True}},
                "content_changed": False,
                "deactivated_yaml_ids": [old.id for old in previous],
            },
        )
    )
    session.flush()
    return True


def _fields(row: DataYaml) -> dict[str, Any]:
    return {name: getattr(row, name) for name in DIFF_FIELDS}


def _diff(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], old_hash: str | None, new_hash: str | None
) -> dict[str, Any]:
    """changes_summary: {"fields": {name: {"old", "new"[, "added", "removed", "order_changed"]}},
    "content_changed", "file_hash": {"old", "new"}}. Only changed fields are listed; on "created"
    every set field is listed with old = null."""
    fields: dict[str, Any] = {}
    for name in DIFF_FIELDS:
        before = old.get(name) if old is not None else None
        after = new.get(name)
        if before == after:
            continue
        entry: dict[str, Any] = {"old": before, "new": after}
        if name == "names":
            before_list, after_list = list(before or []), list(after or [])
            entry["added"] = [n for n in after_list if n not in before_list]
            entry["removed"] = [n for n in before_list if n not in after_list]
            # Same names in another order change class ids even with nothing added or removed.
            entry["order_changed"] = [n for n in before_list if n in after_list] != [
                n for n in after_list if n in before_list
            ]
        fields[name] = entry
    return {
        "fields": fields,
        "content_changed": old_hash != new_hash,
        "file_hash": {"old": old_hash, "new": new_hash},
    }


def _utc(value: datetime) -> datetime:
    # The database holds naive UTC; API answers say so explicitly.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _summary_fields(row: DataYaml) -> dict[str, Any]:
    return {
        "id": row.id,
        "dataset_id": row.dataset_id,
        "yaml_version": row.yaml_version,
        "train_path": row.train_path,
        "val_path": row.val_path,
        "test_path": row.test_path,
        "nc": row.nc,
        "names": list(row.names or []),
        "download_url": row.download_url,
        "file_hash": row.file_hash,
        "is_active": bool(row.is_active),
        "created_by": row.created_by,
        "created_at": _utc(row.created_at),
        "updated_at": _utc(row.updated_at),
    }


def _summary(row: DataYaml) -> DataYamlSummary:
    return DataYamlSummary(**_summary_fields(row))


def _info(row: DataYaml) -> DataYamlInfo:
    names = list(row.names or [])
    return DataYamlInfo(**_summary_fields(row), yaml_content=row.yaml_content, class_mapping=_class_mapping(names))


def _change(row: DataYamlHistory) -> DataYamlChange:
    return DataYamlChange(
        id=row.id,
        yaml_config_id=row.yaml_config_id,
        change_type=row.change_type,
        old_content=row.old_content,
        new_content=row.new_content,
        changes_summary=row.changes_summary,
        changed_by=row.changed_by,
        changed_at=_utc(row.changed_at),
    )
