"""Turn events the user has verified into training data: a new dataset version.

The new version = the latest version's files + the captures of every verified event not yet
collected into this dataset (docs/datasets.md, "Auto-collect"):

- verified, not a false positive, type person/package/delivery_food/mail, with a box
  -> ``train/``, labelled with the event's (corrected) type and its ``bbox_coordinates``;
- verified false positive -> ``train/`` as a background image (empty label): a hard negative,
  a frame in which the detector saw something that was not there;
- ``auto_label=False``: no label is derived from the events' boxes; the non-false-positive
  captures go to ``unlabeled/images/`` (kept with the version, ignored by training, for labelling
  by hand), false positives still become backgrounds (their label, "nothing", is certain).
- ``auto_label=True`` with a ``labeler`` (the deployed model): events the user has NOT verified
  and that are still ``unclassified`` are labelled by the model and go to ``auto_labeled/``, a
  folder of their own that data.yaml does not list: model guesses are never mixed with verified
  labels (``changes.auto_labeled_events``, ``auto_labeled_by``). Verifying such an event later
  collects it as a verified one and removes its model-labelled copy.

Split: every capture of an event goes to the same split, chosen by a hash of the event id
(``VALID_SHARE`` of the events to ``valid/``, the rest to ``train/``), so near-identical frames of
one event never straddle train and val, and an event keeps its split in every later version.
When that leaves the version without any valid image although it holds at least two events, the
new event with the lowest hash goes to ``valid/`` (a version with >= 2 events always has a val).

``bbox_coordinates`` (JSON text written by the realtime pipeline), in pixels of the frame::

    {"x1": 412, "y1": 230, "x2": 655, "y2": 598, "width": 1280, "height": 720,
     "frames": {"2": {"x1": 420, "y1": 228, "x2": 660, "y2": 601}}}

The top-level box belongs to the event's main snapshot (``detection_events.image_path``; when
that is empty, the event image with the lowest sequence number). ``frames`` (optional) holds
boxes of other captures by ``event_images.sequence_number``; captures without a box are left out
(an unlabelled object in a training image would teach the model it is background).
``width``/``height`` are the frame size the box was measured in (default: the stored image's).

Which events are done is recorded in ``dataset_versions.changes`` (``events_collected``), so an
event is collected once per dataset. Events that could not be used (no image, still
unclassified, bad box) are reported and not marked: a later run tries them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import cv2
import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload, sessionmaker

from detection_service.datasets.export_reader import IMAGE_SUFFIXES
from detection_service.datasets.importer import (
    AUTO_LABELED,
    UNLABELED,
    DatasetNotFound,
    NothingToCollect,
    StoreObject,
    VersionDraft,
    VersionFile,
    _run_parallel,
    latest_version,
    load_version_files,
    parse_changes,
    publish_version,
    validate_dataset_id,
)
from detection_service.ml.classes import CLASS_IDS
from detection_service.storage import ObjectNotFound, ObjectStore
from schemas.datasets import FileProblem, ImportResult
from schemas.db import Dataset, DatasetVersion, DetectionEvent, ObjectType

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 2000  # per run; the rest are picked up by the next run
VALID_SHARE = 0.2  # share of the events whose captures go to valid/

# Labels image bytes with the deployed model: YOLO label text in model class ids ("" = nothing found).
Labeler = Callable[[bytes], str]


def event_hash(event_id: int) -> float:
    """A stable number in [0, 1) per event id: the same on every machine and in every run."""
    digest = hashlib.sha1(f"event:{int(event_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for_event(event_id: int) -> str:
    return "valid" if event_hash(event_id) < VALID_SHARE else "train"


_EVENT_NAME = re.compile(r"event_(\d+)_")


def event_id_of(name: str) -> int | None:
    """The event id in a collected file name (``event_<id>_<seq>.jpg``), None for other files."""
    match = _EVENT_NAME.match(name)
    return int(match.group(1)) if match else None


class BoxError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PixelBox:
    x1: float
    y1: float
    x2: float
    y2: float
    width: float | None  # frame size the box was measured in
    height: float | None

    def to_yolo(self, image_w: int, image_h: int) -> tuple[float, float, float, float]:
        """Normalised (cx, cy, w, h), clipped to the frame. BoxError if nothing is left."""
        fw = self.width or image_w
        fh = self.height or image_h
        x1, x2 = max(0.0, self.x1 / fw), min(1.0, self.x2 / fw)
        y1, y2 = max(0.0, self.y1 / fh), min(1.0, self.y2 / fh)
        if x2 - x1 <= 1e-6 or y2 - y1 <= 1e-6:
            raise BoxError("box lies outside the frame or has no area")
        return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BoxError(f"{name} must be a number")
    return float(value)


# The frame size is "width"/"height"; the realtime pipeline writes "frame_width"/"frame_height".
_SIZE_KEYS = (("width", "height"), ("frame_width", "frame_height"))


def _has_size(obj: dict) -> bool:
    return any(w in obj or h in obj for w, h in _SIZE_KEYS)


def _size(obj: dict) -> tuple[float, float]:
    for w, h in _SIZE_KEYS:
        if w in obj or h in obj:
            return _number(obj.get(w), w), _number(obj.get(h), h)
    raise BoxError("no frame size")


def _box(obj: Any, width: float | None, height: float | None) -> PixelBox:
    if not isinstance(obj, dict):
        raise BoxError("a box must be an object with x1, y1, x2, y2")
    try:
        x1, y1, x2, y2 = (_number(obj[k], k) for k in ("x1", "y1", "x2", "y2"))
    except KeyError as exc:
        raise BoxError(f"box without {exc.args[0]}") from None
    if _has_size(obj):
        width, height = _size(obj)
    if (width is not None and width <= 0) or (height is not None and height <= 0):
        raise BoxError("width and height must be positive")
    if x2 <= x1 or y2 <= y1:
        raise BoxError("need x1 < x2 and y1 < y2")
    return PixelBox(x1, y1, x2, y2, width, height)


def parse_bbox(text: str | None) -> tuple[PixelBox | None, dict[int, PixelBox]]:
    """(box of the main snapshot, {sequence_number: box}) from ``bbox_coordinates``."""
    if not text or not text.strip():
        raise BoxError("the event has no bbox_coordinates")
    try:
        data = json.loads(text)
    except ValueError:
        raise BoxError("bbox_coordinates is not JSON") from None
    if not isinstance(data, dict):
        raise BoxError("bbox_coordinates must be a JSON object")
    width = height = None
    if _has_size(data):
        width, height = _size(data)
    main = _box(data, width, height) if "x1" in data else None
    frames: dict[int, PixelBox] = {}
    raw_frames = data.get("frames") or {}
    if not isinstance(raw_frames, dict):
        raise BoxError("frames must be an object {sequence_number: box}")
    for seq, obj in raw_frames.items():
        try:
            frames[int(seq)] = _box(obj, width, height)
        except ValueError as exc:
            raise BoxError(f"frames[{seq}]: {exc}") from None
    if main is None and not frames:
        raise BoxError("bbox_coordinates holds no box (x1, y1, x2, y2)")
    return main, frames


def _image_size(data: bytes) -> tuple[int, int] | None:
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        return None
    return image.shape[1], image.shape[0]


@dataclass(slots=True)
class _Capture:
    event_id: int
    key: str
    name: str
    split: str
    box: PixelBox | None  # None: background or unlabeled
    size: tuple[int, int] | None = None
    error: str | None = None


def _suffix(key: str) -> str:
    suffix = PurePosixPath(key).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".jpg"


def _collected_ids(session: Session, dataset: Dataset | None, key: str = "events_collected") -> set[int]:
    if dataset is None:
        return set()
    ids: set[int] = set()
    for text in session.scalars(sa.select(DatasetVersion.changes).where(DatasetVersion.dataset_id == dataset.id)):
        changes = parse_changes(text) or {}
        ids.update(int(i) for i in changes.get(key) or [] if isinstance(i, int))
    return ids


def _load_events(session: Session, ids: list[int], *options: Any) -> list[DetectionEvent]:
    """The events ``ids`` in id order, with their images (and ``options``) loaded."""
    if not ids:
        return []
    query = sa.select(DetectionEvent).where(DetectionEvent.id.in_(ids)).order_by(DetectionEvent.id)
    return list(session.scalars(query.options(selectinload(DetectionEvent.images), *options)))


def collect_verified(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    dataset_id: str,
    auto_label: bool = True,
    since_version: str | None = None,
    *,
    version: str | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    labeler: Labeler | None = None,
    labeler_model: str | None = None,
) -> ImportResult:
    """Add verified, not yet collected events to ``dataset_id`` as a new version (see the module
    docstring). ``since_version``: only events detected after that version was created.
    ``labeler`` (with ``auto_label``): labels unverified unclassified captures into auto_labeled/;
    ``labeler_model`` names the model it uses (recorded). Creates the dataset when it does not
    exist. Raises NothingToCollect when no event gave an image (no version is made),
    DatasetNotFound for an unknown ``since_version``."""
    dataset_id = validate_dataset_id(dataset_id)
    with session_factory() as session:
        dataset, _ = latest_version(session, dataset_id)
        collected = _collected_ids(session, dataset)
        auto_labeled_before = _collected_ids(session, dataset, "auto_labeled_events")
        cutoff: datetime | None = None
        if since_version is not None:
            row = None
            if dataset is not None:
                row = session.scalar(
                    sa.select(DatasetVersion)
                    .where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == since_version)
                    .order_by(DatasetVersion.id.desc())
                    .limit(1)
                )
            if row is None:
                raise DatasetNotFound(f"dataset {dataset_id!r} has no version {since_version!r}")
            cutoff = row.created_at
        id_query = (
            sa.select(DetectionEvent.id).where(DetectionEvent.user_verified.is_(True)).order_by(DetectionEvent.id)
        )
        if cutoff is not None:
            id_query = id_query.where(DetectionEvent.detected_at >= cutoff)
        candidate_ids = [i for i in session.scalars(id_query) if i not in collected][:max_events]
        events = _load_events(session, candidate_ids, selectinload(DetectionEvent.object_type))
        guess_events: list[DetectionEvent] = []
        if auto_label and labeler is not None:
            guess_query = (
                sa.select(DetectionEvent.id)
                .join(DetectionEvent.object_type)
                .where(
                    DetectionEvent.user_verified.is_(False),
                    DetectionEvent.is_false_positive.is_(False),
                    ObjectType.code == "unclassified",
                )
                .order_by(DetectionEvent.id)
            )
            if cutoff is not None:
                guess_query = guess_query.where(DetectionEvent.detected_at >= cutoff)
            guess_ids = [i for i in session.scalars(guess_query) if i not in auto_labeled_before][:max_events]
            guess_events = _load_events(session, guess_ids)
        base_version = dataset.version if dataset is not None and dataset.version else None

    problems: list[FileProblem] = []
    captures: list[_Capture] = []
    for event in events:
        captures += _event_captures(event, auto_label, problems)
    guesses = [
        _Capture(event.id, key, name, AUTO_LABELED, None)
        for event in guess_events
        for seq, key, name in _images_of(event)
    ]

    # Every capture is fetched and decoded once to prove it is an image (and get its size);
    # publish_version copies it again from the store rather than holding all bytes in memory.
    lock = threading.Lock()

    def check(capture: _Capture) -> None:
        try:
            size = _image_size(store.get_bytes(capture.key))
            error = None if size else "stored image cannot be decoded"
        except ObjectNotFound:
            size, error = None, "image not in the object store"
        with lock:
            capture.size, capture.error = size, error

    _run_parallel([lambda c=capture: check(c) for capture in captures])

    # Model labels of unverified captures: fetched and labelled one at a time (the model is not
    # thread-safe); kept apart in auto_labeled/.
    guessed: list[VersionFile] = []
    guessed_events: set[int] = set()
    for capture in guesses:
        try:
            data = store.get_bytes(capture.key)
        except ObjectNotFound:
            continue  # tried again next run: the event is not recorded as auto-labelled
        if _image_size(data) is None:
            continue
        guessed.append(VersionFile(AUTO_LABELED, capture.name, StoreObject(capture.key), labeler(data)))
        guessed_events.add(capture.event_id)

    base_files = load_version_files(store, dataset_id, base_version) if base_version is not None else []
    _assign_splits(captures, base_files)

    files: list[VersionFile] = []
    per_event: dict[int, int] = {}
    rejected = 0
    for capture in captures:
        label: str | None = "" if capture.split != UNLABELED else None
        if capture.error is None and capture.box is not None and capture.size is not None:
            try:
                cx, cy, w, h = capture.box.to_yolo(*capture.size)
            except BoxError as exc:
                capture.error = str(exc)
            else:
                cls = CLASS_IDS[_event_type(events, capture.event_id)]
                label = f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
        if capture.error is not None:
            problems.append(FileProblem(file=f"event {capture.event_id}", problem=f"{capture.key}: {capture.error}"))
            rejected += 1
            continue
        files.append(VersionFile(capture.split, capture.name, StoreObject(capture.key), label))
        per_event[capture.event_id] = per_event.get(capture.event_id, 0) + 1

    if not files and not guessed:
        raise NothingToCollect(
            f"no new verified event with a usable image for dataset {dataset_id!r}",
            {
                "events_checked": len(events),
                "problems": [{"file": p.file, "problem": p.problem} for p in problems[:200]],
            },
        )
    files += guessed
    new_names = {(f.split, f.stem) for f in files}
    if base_version is not None:
        for old in base_files:
            if (old.split, old.stem) in new_names:
                continue
            if old.split == AUTO_LABELED and event_id_of(old.name) in per_event:
                continue  # the user has verified it now: the verified copy replaces the model's guess
            files.append(old)
    splits: dict[str, list[int]] = {}
    for event_id in sorted(per_event):
        splits.setdefault(next(c.split for c in captures if c.event_id == event_id), []).append(event_id)
    draft = VersionDraft(
        dataset_id=dataset_id,
        files=files,
        source="auto_collect",
        source_detail=f"{len(per_event)} verified event(s)"
        + (f", {len(guessed_events)} unverified labelled by {labeler_model or 'the model'}" if guessed_events else ""),
        version=version,
        name=dataset_id,
        description="Collected from verified detection events",
        problems=problems,
        rejected=rejected,
        base_version=base_version,
        collected_events=sorted(per_event),
        extra_changes={
            "auto_label": auto_label,
            "since_version": since_version,
            "event_splits": dict(sorted(splits.items())),
            # Unverified, model-labelled (auto_labeled/): never in data.yaml, never trained on.
            "auto_labeled_events": sorted(guessed_events),
            "auto_labeled_by": labeler_model if guessed_events else None,
        },
    )
    return publish_version(session_factory, store, draft)


def _assign_splits(captures: list[_Capture], base_files: list[VersionFile]) -> None:
    """Give every labelled capture its event's split (train/valid by the event-id hash). When the
    version would have no valid image although it holds >= 2 events (new ones plus the base
    version's), the new event with the lowest hash goes to valid."""
    labelled = [c for c in captures if c.split == "train"]
    for capture in labelled:
        capture.split = split_for_event(capture.event_id)
    usable = {c.event_id for c in labelled if c.error is None}
    if (
        not usable
        or any(f.split == "valid" for f in base_files)
        or any(c.split == "valid" for c in labelled if c.error is None)
    ):
        return
    base_events = {event_id_of(f.name) for f in base_files if f.split in ("train", "valid", "test")} - {None}
    if len(usable | base_events) >= 2:
        chosen = min(usable, key=event_hash)
        for capture in labelled:
            if capture.event_id == chosen:
                capture.split = "valid"


def _event_type(events: list[DetectionEvent], event_id: int) -> str:
    for event in events:
        if event.id == event_id:
            return event.object_type.code
    raise KeyError(event_id)


def _images_of(event: DetectionEvent) -> list[tuple[int | None, str, str]]:
    """(sequence number or None for a main snapshot outside event_images, key, file name)."""
    images: list[tuple[int | None, str]] = [(img.sequence_number, img.image_path) for img in event.images]
    keys = {key for _, key in images}
    if event.image_path and event.image_path not in keys:
        images.insert(0, (None, event.image_path))
    return [(seq, key, f"event_{event.id}_{'main' if seq is None else seq}{_suffix(key)}") for seq, key in images]


def _event_captures(event: DetectionEvent, auto_label: bool, problems: list[FileProblem]) -> list[_Capture]:
    where = f"event {event.id}"
    images: list[tuple[int | None, str]] = [(seq, key) for seq, key, _ in _images_of(event)]
    if not images:
        problems.append(FileProblem(file=where, problem="no image stored for this event"))
        return []
    main_key = event.image_path or images[0][1]

    def name(seq: int | None, key: str) -> str:
        return f"event_{event.id}_{'main' if seq is None else seq}{_suffix(key)}"

    if event.is_false_positive:  # a hard negative: nothing of interest in any capture
        return [_Capture(event.id, key, name(seq, key), "train", None) for seq, key in images]
    code = event.object_type.code if event.object_type else None
    if not auto_label:
        return [_Capture(event.id, key, name(seq, key), UNLABELED, None) for seq, key in images]
    if code not in CLASS_IDS:
        problems.append(
            FileProblem(
                file=where,
                problem=f"verified but its type is {code!r}: reclassify it as one of {sorted(CLASS_IDS)}",
            )
        )
        return []
    try:
        main_box, frames = parse_bbox(event.bbox_coordinates)
    except BoxError as exc:
        problems.append(FileProblem(file=where, problem=f"bbox_coordinates: {exc}"))
        return []
    captures = []
    skipped = 0
    for seq, key in images:
        box = main_box if key == main_key and main_box is not None else frames.get(seq) if seq is not None else None
        if box is None:
            skipped += 1
            continue
        captures.append(_Capture(event.id, key, name(seq, key), "train", box))
    if skipped:
        problems.append(
            FileProblem(
                file=where,
                severity="warning",
                problem=f"{skipped} capture(s) without a box left out",
            )
        )
    if not captures:
        problems.append(FileProblem(file=where, problem="no capture of this event has a box"))
    return captures
