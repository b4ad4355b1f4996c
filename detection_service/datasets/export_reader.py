"""THE reader of Roboflow-style YOLO exports (a folder, or a zip of one).

``read_export`` checks every file and returns what can be imported, with labels already remapped
to the fixed model class ids (``MODEL_CLASSES``), plus a per-file problem report. It never writes
anywhere but its own temp dir (zip extraction), so the importer, the Roboflow sync and training's
``prepare_yolo_dataset`` can all use it.

Rules (docs/datasets.md has the full list):
- data.yaml at the root (or in one sub-folder at most two levels down, as zips often wrap one);
  ``names`` as a list or an ``{id: name}`` mapping.
- Splits ``train``, ``valid`` (also ``val``) and ``test``, each ``<split>/images`` with its labels
  in ``<split>/labels/<image stem>.txt``. An image without a label file is a background image.
- A label line is ``class cx cy w h``, normalised, each within 0..1 give or take
  ``COORD_TOLERANCE`` (boxes are then clipped to the image). A polygon line
  (``class x1 y1 x2 y2 x3 y3 ...``, as segmentation exports write) is converted to its bounding
  box, like Ultralytics does when it trains a detector, with a warning. Anything else rejects the
  image together with its label file: dropping only the bad line would turn a real object into
  background.
- Images must decode (OpenCV); empty, truncated or non-image files are rejected.
- Class names map through ``map_class_name`` plus an optional caller mapping (a mapping to
  ``None`` drops that class's boxes on purpose). A class that maps to nothing and has boxes fails
  the whole read with UnknownClassesError listing every such class; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import math
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import yaml

from detection_service.datasets.yaml_loader import load_yaml
from detection_service.errors import Invalid
from detection_service.images import image_problem
from detection_service.ml.classes import CLASS_IDS, MODEL_CLASSES, map_class_name
from detection_service.storage.base import InvalidKey, validate_key
from schemas.datasets import FileProblem

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "valid", "test")
YAML_SPLIT_KEYS = {"train": "train", "valid": "val", "test": "test"}  # our folder -> data.yaml key
_FOLDER_ALIASES = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
COORD_TOLERANCE = 0.01  # Roboflow writes e.g. 1.0000001 after rounding; beyond this it is not normalised
MAX_YAML_BYTES = 1 << 20
MAX_LABEL_BYTES = 4 << 20
DEFAULT_MAX_EXTRACT_BYTES = 4 << 30  # uncompressed total of a zip
DEFAULT_MAX_MEMBERS = 200_000
MAX_COMPRESSION_RATIO = 200  # JPEGs barely compress and label text ~5x: far above is a zip bomb
DECODE_WORKERS = 2  # cv2.imdecode releases the GIL; more threads than cores gains nothing
_IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class ExportError(Invalid, ValueError):
    """The export cannot be imported at all. ``code`` is the API error code, ``details`` JSON-able."""

    code = "INVALID_EXPORT"


class UnsafeArchiveError(ExportError):
    code = "UNSAFE_ARCHIVE"


class ArchiveTooLargeError(ExportError):
    code = "ARCHIVE_TOO_LARGE"


class InvalidClassMappingError(ExportError):
    code = "INVALID_CLASS_MAPPING"


class UnknownClassesError(ExportError):
    """Classes with boxes that map to no model class. ``unknown``: the names, ``instances``: boxes each."""

    code = "UNKNOWN_CLASSES"

    def __init__(self, unknown: list[str], instances: dict[str, int] | None = None, source: str = "") -> None:
        self.unknown = unknown
        self.instances = instances or {}
        where = f" in {source}" if source else ""
        super().__init__(
            f"classes{where} with no model class: {unknown}; map them to one of {list(MODEL_CLASSES)} "
            "(class_mapping={name: class}, or null to drop that class's boxes) or remove them from the export",
            {"unknown_classes": unknown, "instances": self.instances, "model_classes": list(MODEL_CLASSES)},
        )


class NoValidImagesError(ExportError):
    code = "NO_VALID_IMAGES"


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One accepted image and its label, remapped to model class ids."""

    split: str  # train, valid or test
    image: Path  # absolute path of the image file (inside the export or its extraction dir)
    rel_path: str  # image path relative to the export root
    label: str  # YOLO text with model class ids; "" for a background image
    boxes: tuple[int, ...]  # model class id of each box

    @property
    def name(self) -> str:
        return self.image.name

    @property
    def stem(self) -> str:
        return self.image.stem


@dataclass
class ExportReport:
    """What ``read_export`` found. Close it (or use ``with``) to remove a zip's extraction dir;
    the items' image paths are only valid until then."""

    root: Path  # folder holding data.yaml
    source: Path  # what was given (folder or zip)
    names: list[str]  # the export's class names, by id
    class_mapping: dict[str, str]  # export class name -> model class, for every mapped name
    dropped_classes: list[str]  # mapped to None by the caller: their boxes were left out
    items: list[ExportItem]
    problems: list[FileProblem]
    rejected: int  # image files not accepted
    data_yaml: dict[str, Any]
    converted_polygons: int = 0
    _temp_dir: Path | None = field(default=None, repr=False)

    @property
    def images_seen(self) -> int:
        return len(self.items) + self.rejected

    @property
    def errors(self) -> list[FileProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def roboflow(self) -> dict[str, Any] | None:
        info = self.data_yaml.get("roboflow")
        return info if isinstance(info, dict) else None

    def close(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> ExportReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------- entry point


def read_export(
    source: str | Path,
    class_mapping: Mapping[str, str | None] | None = None,
    *,
    work_dir: str | Path | None = None,
    max_extract_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    check_images: bool = True,
) -> ExportReport:
    """Read and check an export folder or zip; see the module docstring for the rules.

    ``class_mapping``: export class name (case-insensitive) -> model class, or None to drop that
    class's boxes; it wins over the defaults of ``map_class_name``. A zip is extracted into a new
    temp dir under ``work_dir`` (default: the system temp dir) that the report owns.
    ``check_images=False`` skips decoding (for callers that already trust the files).
    Raises ExportError (or a subclass) when nothing can be imported.
    """
    source = Path(source)
    mapping = _check_mapping(class_mapping)
    temp_dir: Path | None = None
    if source.is_dir():
        base = source
    elif source.is_file():
        if not zipfile.is_zipfile(source):
            raise ExportError(f"{source.name} is neither a folder nor a zip archive")
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        temp_dir = Path(tempfile.mkdtemp(prefix="aidoor-export-", dir=work_dir))
        base = temp_dir
    else:
        raise ExportError(f"no such file or folder: {source}")
    try:
        if temp_dir is not None:
            extract_zip_safely(source, temp_dir, max_bytes=max_extract_bytes, max_members=max_members)
        report = _read_folder(find_export_root(base), source, mapping, check_images)
        report._temp_dir = temp_dir
        return report
    except BaseException:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def _check_mapping(class_mapping: Mapping[str, str | None] | None) -> dict[str, str | None]:
    mapping: dict[str, str | None] = {}
    for name, target in (class_mapping or {}).items():
        if target in (None, ""):
            mapping[str(name).strip().lower()] = None
        elif target not in CLASS_IDS:
            raise InvalidClassMappingError(
                f"class_mapping {name!r} -> {target!r}: the target must be one of {list(MODEL_CLASSES)} or null",
                {"model_classes": list(MODEL_CLASSES)},
            )
        else:
            mapping[str(name).strip().lower()] = target
    return mapping


# --------------------------------------------------------------------------------- zip archives


def extract_zip_safely(
    archive: Path, dest: Path, *, max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES, max_members: int = DEFAULT_MAX_MEMBERS
) -> int:
    """Extract ``archive`` into ``dest``; returns the bytes written.

    Refuses (before writing anything) absolute names, drive letters, ``..`` segments, symlinks,
    encrypted members, more than ``max_members`` entries, a declared total over ``max_bytes`` and
    members compressed more than MAX_COMPRESSION_RATIO : 1; while writing, counts the real output so
    a member that lies about its size cannot exceed the limit either. macOS ``__MACOSX/``
    resource forks are skipped.
    """
    dest = dest.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExportError(f"{archive.name} is not a readable zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ArchiveTooLargeError(f"the archive has {len(infos)} entries; the limit is {max_members}")
        members: list[tuple[zipfile.ZipInfo, Path]] = []
        declared = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
                raise UnsafeArchiveError(f"unsafe path in archive: {info.filename!r}", {"member": info.filename})
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"symbolic link in archive: {info.filename!r}", {"member": info.filename})
            if info.flag_bits & 0x1:
                raise ExportError(f"encrypted archive member: {info.filename!r}")
            if info.is_dir() or not parts or parts[0] == "__MACOSX":
                continue
            target = dest.joinpath(*parts).resolve()
            if not target.is_relative_to(dest):
                raise UnsafeArchiveError(f"unsafe path in archive: {info.filename!r}", {"member": info.filename})
            if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
                raise ArchiveTooLargeError(
                    f"{info.filename!r} is compressed {info.file_size // info.compress_size}:1 (a zip bomb?)"
                )
            declared += info.file_size
            members.append((info, target))
        if declared > max_bytes:
            raise ArchiveTooLargeError(f"the archive unpacks to {declared} bytes; the limit is {max_bytes}")
        written = 0
        for info, target in members:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ArchiveTooLargeError(f"the archive unpacks to more than {max_bytes} bytes")
                        out.write(chunk)
            except ExportError:
                raise
            except Exception as exc:  # BadZipFile (CRC), zlib.error, OSError, unsupported compression...
                raise ExportError(f"cannot extract {info.filename!r}: {exc}") from None
    return written


def find_export_root(base: Path) -> Path:
    """The folder holding data.yaml: ``base`` itself or the only one up to two levels below."""
    for candidate in ("data.yaml", "data.yml"):
        if (base / candidate).is_file():
            return base
    found: list[Path] = []
    level = [base]
    for _depth in range(2):
        next_level: list[Path] = []
        for folder in level:
            try:
                children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith((".", "__")))
            except OSError:
                continue
            for child in children:
                if (child / "data.yaml").is_file() or (child / "data.yml").is_file():
                    found.append(child)
                next_level.append(child)
        if found:
            break
        level = next_level[:200]  # bounded: a data set's tree is shallow
    if not found:
        raise ExportError("no data.yaml found (expected a Roboflow YOLO export: data.yaml, train/, valid/, test/)")
    if len(found) > 1:
        raise ExportError(
            "several data.yaml files found; import one export at a time",
            {"data_yaml": [str(p.relative_to(base)) for p in found]},
        )
    return found[0]


# --------------------------------------------------------------------------------- data.yaml


def load_data_yaml(root: Path) -> tuple[dict[str, Any], list[str]]:
    path = root / "data.yaml" if (root / "data.yaml").is_file() else root / "data.yml"
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ExportError(f"{path.name} is larger than {MAX_YAML_BYTES} bytes")
    try:
        data = load_yaml(path.read_text(encoding="utf-8-sig"))  # aliases refused (alias bombs)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path.name} must be a mapping with 'names'")
    return data, names_list(data.get("names"), path.name)


def names_list(names: Any, where: str = "data.yaml") -> list[str]:
    """``names`` as a list by class id: a list, or a mapping {0: "a", 1: "b"} with ids 0..n-1."""
    if isinstance(names, (list, tuple)):
        result = [str(n) for n in names]
    elif isinstance(names, Mapping):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise ExportError(f"{where}: 'names' keys must be class ids (0, 1, ...)") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise ExportError(f"{where}: 'names' ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
        result = [by_id[i] for i in range(len(by_id))]
    else:
        raise ExportError(f"{where}: 'names' must be a list or a mapping of class names")
    if not result:
        raise ExportError(f"{where} names no classes")
    return result


def _split_dirs(root: Path, data: dict[str, Any], problems: list[FileProblem]) -> dict[str, Path]:
    """Image folder of each split present. data.yaml paths are honoured only inside the export;
    Roboflow writes ``../train/images`` (relative to a parent folder), so that is tried too."""
    root_resolved = root.resolve()
    dirs: dict[str, Path] = {}
    for split in SPLITS:
        spec = data.get(YAML_SPLIT_KEYS[split])
        candidates: list[Path] = []
        if isinstance(spec, str) and spec.strip() and not Path(spec).is_absolute():
            spec = spec.strip()
            candidates.append(root / spec)
            stripped = spec
            while stripped.startswith("../"):
                stripped = stripped[3:]
            candidates.append(root / stripped)
        candidates += [root / alias / "images" for alias in _FOLDER_ALIASES[split]]
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except OSError:
                continue
            if resolved.is_dir() and resolved.is_relative_to(root_resolved) and resolved != root_resolved:
                dirs[split] = candidate
                break
        else:
            if spec:
                problems.append(
                    FileProblem(
                        file="data.yaml",
                        severity="warning",
                        problem=f"{YAML_SPLIT_KEYS[split]}: {spec!r} names no image folder inside the export; "
                        "split skipped",
                    )
                )
    return dirs


# --------------------------------------------------------------------------------- labels


@dataclass(slots=True)
class ParsedLabel:
    boxes: list[tuple[int, str]]  # (source class id, "cx cy w h" text)
    errors: list[tuple[int | None, str]]  # (line number, problem)
    warnings: list[tuple[int | None, str]]
    polygons: int = 0


def _fmt(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def parse_label_text(text: str, nc: int, tolerance: float = COORD_TOLERANCE) -> ParsedLabel:
    """Parse a YOLO label file against ``nc`` classes. Boxes keep their source class ids; the
    coordinate text is the original when the box needed no clipping, else re-formatted."""
    result = ParsedLabel(boxes=[], errors=[], warnings=[])
    seen: set[tuple[int, str]] = set()
    clipped = duplicates = 0
    for number, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split()
        if not tokens:
            continue
        try:
            cls_value = float(tokens[0])
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            result.errors.append((number, f"not numbers: {raw.strip()[:80]!r}"))
            continue
        if not cls_value.is_integer() or not 0 <= cls_value < nc:
            result.errors.append((number, f"class id {tokens[0]} is not one of data.yaml's {nc} classes (0..{nc - 1})"))
            continue
        if not all(math.isfinite(v) for v in values):
            result.errors.append((number, "coordinates must be finite numbers"))
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            if not (
                -tolerance <= cx <= 1 + tolerance
                and -tolerance <= cy <= 1 + tolerance
                and 0 < w <= 1 + tolerance
                and 0 < h <= 1 + tolerance
            ):
                result.errors.append(
                    (number, f"box outside 0..1 or of zero size (not normalised?): {raw.strip()[:80]!r}")
                )
                continue
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            coords_text = " ".join(tokens[1:5])
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            if not all(-tolerance <= v <= 1 + tolerance for v in values):
                result.errors.append((number, "polygon point outside 0..1 (not normalised?)"))
                continue
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            coords_text = ""
            result.polygons += 1
        else:
            result.errors.append(
                (
                    number,
                    f"expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...', got {len(tokens)} values",
                )
            )
            continue
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2)
        if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
            result.errors.append((number, "box of zero size"))
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2) or not coords_text:
            if coords_text:
                clipped += 1
            coords_text = " ".join(_fmt(v) for v in ((cx1 + cx2) / 2, (cy1 + cy2) / 2, cx2 - cx1, cy2 - cy1))
        key = (int(cls_value), coords_text)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        result.boxes.append(key)
    if result.polygons:
        result.warnings.append((None, f"{result.polygons} polygon line(s) converted to their bounding box"))
    if clipped:
        result.warnings.append((None, f"{clipped} box(es) slightly outside the image clipped to it"))
    if duplicates:
        result.warnings.append((None, f"{duplicates} duplicate line(s) removed"))
    return result


# --------------------------------------------------------------------------------- images


def check_image_bytes(data: bytes) -> str | None:
    """None if ``data`` decodes as an image, else why not."""
    if not data:
        return "empty file (0 bytes)"
    problem = image_problem(data)  # a header claiming 60000x60000 is refused before any decoding
    if problem is not None:
        return problem.reason
    try:
        # Reduced-size decoding still walks the whole compressed stream (a truncated or corrupt
        # file fails) at a fraction of the cost of a full decode.
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    except cv2.error as exc:
        return f"cannot be decoded as an image: {str(exc).strip().splitlines()[-1][:120]}"
    if image is None or image.size == 0:
        return "cannot be decoded as an image (corrupt, truncated or not an image)"
    return None


def _check_image_file(path: Path) -> str | None:
    try:
        return check_image_bytes(path.read_bytes())
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"


# --------------------------------------------------------------------------------- the folder


@dataclass(slots=True)
class _Candidate:
    split: str
    image: Path
    rel: str
    label_rel: str | None
    parsed: ParsedLabel | None
    error: str | None = None


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def _read_folder(root: Path, source: Path, mapping: dict[str, str | None], check_images: bool) -> ExportReport:
    data, names = load_data_yaml(root)
    nc = len(names)
    problems: list[FileProblem] = []
    if "nc" in data and data.get("nc") != nc:
        problems.append(
            FileProblem(
                file="data.yaml",
                severity="warning",
                problem=f"nc is {data.get('nc')!r} but names lists {nc} classes; names used",
            )
        )
    split_dirs = _split_dirs(root, data, problems)
    if not split_dirs:
        raise ExportError("no split folders with images (train/images, valid/images, test/images)")

    candidates: list[_Candidate] = []
    rejected = 0
    for split, images_dir in split_dirs.items():
        labels_dir = images_dir.parent / "labels"
        stems: set[str] = set()
        used_labels: set[str] = set()
        for path in sorted(images_dir.iterdir()):
            rel = _rel(path, root)
            if path.name in _IGNORED_NAMES or path.name.startswith("._"):
                continue
            if path.is_dir():
                problems.append(FileProblem(file=rel, severity="warning", problem="sub-folder ignored"))
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(
                    FileProblem(
                        file=rel,
                        severity="warning",
                        problem=f"ignored: not an image file type ({path.suffix or 'no suffix'})",
                    )
                )
                continue
            try:
                validate_key(f"x/{path.name}")
            except InvalidKey:
                problems.append(FileProblem(file=rel, problem="file name not usable as an object key"))
                rejected += 1
                continue
            if path.stem in stems:
                problems.append(
                    FileProblem(
                        file=rel, problem="another image has the same name stem (they would share a label file)"
                    )
                )
                rejected += 1
                continue
            stems.add(path.stem)
            label_path = labels_dir / f"{path.stem}.txt"
            candidate = _Candidate(split=split, image=path, rel=rel, label_rel=None, parsed=None)
            if label_path.is_file():
                used_labels.add(label_path.name)
                candidate.label_rel = _rel(label_path, root)
                try:
                    if label_path.stat().st_size > MAX_LABEL_BYTES:
                        raise ValueError(f"label file larger than {MAX_LABEL_BYTES} bytes")
                    text = label_path.read_text(encoding="utf-8-sig")
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    candidate.error = f"label file unreadable: {exc}"
                else:
                    candidate.parsed = parse_label_text(text, nc)
            candidates.append(candidate)
        if labels_dir.is_dir():
            for label in sorted(labels_dir.iterdir()):
                if label.suffix == ".txt" and label.name not in used_labels and label.stem not in stems:
                    problems.append(
                        FileProblem(
                            file=_rel(label, root),
                            severity="warning",
                            problem="label file without an image; ignored",
                        )
                    )

    if check_images and candidates:
        with ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="export-decode") as pool:
            image_errors = list(pool.map(lambda c: _check_image_file(c.image), candidates))
    else:
        image_errors = [None] * len(candidates)

    # Which source classes are used, then the mapping: unknown classes only matter when used.
    instances = [0] * nc
    for candidate, image_error in zip(candidates, image_errors, strict=True):
        if image_error is None and candidate.error is None and candidate.parsed and not candidate.parsed.errors:
            for cls, _ in candidate.parsed.boxes:
                instances[cls] += 1
    id_map: dict[int, int | None] = {}
    class_mapping: dict[str, str] = {}
    dropped: list[str] = []
    unknown: dict[str, int] = {}
    explicit = {k: v for k, v in mapping.items() if v is not None}
    for i, name in enumerate(names):
        key = name.strip().lower()
        if key in mapping and mapping[key] is None:
            id_map[i] = None
            dropped.append(name)
            continue
        target = map_class_name(name, explicit)
        if target is None:
            if instances[i]:
                unknown[name] = unknown.get(name, 0) + instances[i]
            else:
                problems.append(
                    FileProblem(
                        file="data.yaml",
                        severity="warning",
                        problem=f"class {name!r} has no model class but also no boxes; ignored",
                    )
                )
            id_map[i] = None
            continue
        id_map[i] = CLASS_IDS[target]
        class_mapping[name] = target
    if unknown:
        raise UnknownClassesError(sorted(unknown), unknown, "data.yaml")

    items: list[ExportItem] = []
    polygons = 0
    dropped_boxes = 0
    for candidate, image_error in zip(candidates, image_errors, strict=True):
        failures: list[FileProblem] = []
        if image_error:
            failures.append(FileProblem(file=candidate.rel, problem=image_error))
        if candidate.error:
            failures.append(FileProblem(file=candidate.label_rel or candidate.rel, problem=candidate.error))
        parsed = candidate.parsed
        if parsed:
            failures += [
                FileProblem(file=candidate.label_rel or "", problem=msg, line=line) for line, msg in parsed.errors
            ]
        if failures:
            if parsed and parsed.errors and not image_error:
                failures.append(FileProblem(file=candidate.rel, problem="image rejected with its label file"))
            problems += failures
            rejected += 1
            continue
        lines: list[str] = []
        boxes: list[int] = []
        if parsed:
            for line, msg in parsed.warnings:
                problems.append(FileProblem(file=candidate.label_rel or "", severity="warning", problem=msg, line=line))
            polygons += parsed.polygons
            for cls, coords in parsed.boxes:
                target_id = id_map[cls]
                if target_id is None:
                    dropped_boxes += 1
                    continue
                boxes.append(target_id)
                lines.append(f"{target_id} {coords}")
        label = "\n".join(lines) + "\n" if lines else ""
        items.append(ExportItem(candidate.split, candidate.image, candidate.rel, label, tuple(boxes)))
    if dropped_boxes:
        problems.append(
            FileProblem(
                file="data.yaml",
                severity="warning",
                problem=f"{dropped_boxes} box(es) of {dropped} left out as the class mapping asked",
            )
        )
    problems.sort(key=lambda p: (p.severity != "error", p.file, p.line or 0))
    if not items:
        raise NoValidImagesError(
            "no image of the export can be imported", {"problems": [_builtin(p) for p in problems[:500]]}
        )
    return ExportReport(
        root=root,
        source=source,
        names=names,
        class_mapping=class_mapping,
        dropped_classes=dropped,
        items=items,
        problems=problems,
        rejected=rejected,
        data_yaml=data,
        converted_polygons=polygons,
    )


def _builtin(problem: FileProblem) -> dict[str, Any]:
    out: dict[str, Any] = {"file": problem.file, "problem": problem.problem, "severity": problem.severity}
    if problem.line is not None:
        out["line"] = problem.line
    return out
