"""Training mixes: several prepared YOLO datasets (our class ids) combined into one to train on.

A model is trained on a *mix*: base data sets (e.g. the doorbell parcels and the person photos),
label *overlays* on them (teacher labels: boxes a model from elsewhere drew for classes the base
lacks, kept as a dataset version of their own) and auto-collected images. ``merge_datasets``
builds the combined folder:

- sources of the same ``group`` describe the same images: an image (by file stem) present in
  several of them gets the union of their label lines (a doorbell frame gets its human-labelled
  parcel and its teacher-labelled person). Images of different groups never merge: names are
  prefixed with the group;
- ``train_fraction`` keeps a deterministic share of a group's train images (hash of the stem),
  e.g. to balance two sources or to drop repeated augmented copies;
- images are symlinked, labels written; data.yaml lists the sources (provenance), per-split
  counts and per-class instances.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detection_service.datasets.export_reader import IMAGE_SUFFIXES
from detection_service.ml.classes import MODEL_CLASSES

SPLIT_KEYS = (("train", "train"), ("val", "valid"), ("test", "test"))  # data.yaml key, folder written
_MARKER = ".aidoor-mix"


@dataclass(frozen=True, slots=True)
class MixSource:
    data_yaml: Path  # a prepared dataset: names == MODEL_CLASSES, absolute path
    group: str  # sources with the same group label the same images
    role: str = "human"  # human | teacher | collected: recorded as provenance
    train_fraction: float = 1.0  # share of this source's train images kept (deterministic)
    ref: str = ""  # e.g. "doorbell-camera-alert-v4@v1": recorded as provenance


def split_images(data_yaml: Path, key: str) -> list[Path]:
    spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    entry = spec.get(key)
    if not entry:
        return []
    root = Path(spec.get("path") or Path(data_yaml).parent)
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        folder = Path(item) if Path(item).is_absolute() else root / item
        if folder.is_dir():
            images += sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return images


def _label_of(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):  # Ultralytics' rule: the last /images/ -> /labels/
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


@contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A folder built beside ``out_dir`` and swapped in when the block ends: a failure leaves no
    half-written folder behind, and an earlier ``out_dir`` stays until the new one is complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def keep(stem: str, fraction: float) -> bool:
    """Deterministic sample: the same stem is kept or dropped on every machine and every run."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha1(stem.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def merge_datasets(sources: list[MixSource], out_dir: Path) -> Path:
    """Build the mix in ``out_dir`` (replaced if it holds an earlier mix) and return its data.yaml."""
    if not sources:
        raise ValueError("a training mix needs at least one source")
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / _MARKER).exists():
        raise FileExistsError(f"{out_dir} is not empty and not an earlier training mix")
    for source in sources:
        spec = yaml.safe_load(Path(source.data_yaml).read_text()) or {}
        names = spec.get("names")
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
        if names != list(MODEL_CLASSES):
            raise ValueError(f"{source.data_yaml}: names {names} are not the model classes {list(MODEL_CLASSES)}")
    with staged_folder(out_dir) as staging:
        yaml_splits: dict[str, str] = {}
        summary: dict[str, Any] = {}
        for key, folder in SPLIT_KEYS:
            # (group, stem) -> [image, label lines]
            merged: dict[tuple[str, str], list[Any]] = {}
            for source in sources:
                fraction = source.train_fraction if key == "train" else 1.0
                for image in split_images(source.data_yaml, key):
                    if not keep(f"{source.group}/{image.stem}", fraction):
                        continue
                    label = _label_of(image)
                    lines = [ln for ln in (label.read_text().splitlines() if label.is_file() else []) if ln.strip()]
                    slot = merged.setdefault((source.group, image.stem), [image, []])
                    slot[1].extend(ln for ln in lines if ln not in slot[1])
            if not merged:
                continue
            (staging / folder / "images").mkdir(parents=True)
            (staging / folder / "labels").mkdir(parents=True)
            per_class = [0] * len(MODEL_CLASSES)
            backgrounds = 0
            for (group, stem), (image, lines) in sorted(merged.items()):
                name = f"{group}__{stem}"
                (staging / folder / "images" / f"{name}{image.suffix.lower()}").symlink_to(image.resolve())
                (staging / folder / "labels" / f"{name}.txt").write_text("".join(f"{ln}\n" for ln in lines))
                backgrounds += not lines
                for line in lines:
                    per_class[int(line.split()[0])] += 1
            yaml_splits[key] = f"{folder}/images"
            summary[folder] = {
                "images": len(merged),
                "backgrounds": backgrounds,
                **{f"instances_{n}": c for n, c in zip(MODEL_CLASSES, per_class) if c},
            }
        if "train" not in yaml_splits or "val" not in yaml_splits:
            raise FileNotFoundError("the training mix has no train or no val images")
        spec = {
            "path": str(out_dir),
            **yaml_splits,
            "nc": len(MODEL_CLASSES),
            "names": dict(enumerate(MODEL_CLASSES)),
            "aidoor": {
                "mix": [
                    {
                        "ref": s.ref or str(s.data_yaml),
                        "group": s.group,
                        "role": s.role,
                        "train_fraction": s.train_fraction,
                    }
                    for s in sources
                ],
                "splits": summary,
            },
        }
        (staging / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (staging / _MARKER).write_text("\n".join(str(s.data_yaml) for s in sources) + "\n")
    return out_dir / "data.yaml"


def novel_val(data_yaml: Path, out_dir: Path, max_bits: int | None = None) -> tuple[Path, int, int]:
    """A copy of a dataset's val split without the images that nearly repeat one of its train
    images (``near_duplicates``): how the model does on frames it has not seen. Returns
    (data.yaml whose val is that subset, images kept, images left out)."""
    from detection_service.ml.near_duplicates import DEFAULT_MAX_BITS, near_duplicates

    out_dir = Path(out_dir).resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    val = split_images(data_yaml, "val")
    duplicates = near_duplicates(val, split_images(data_yaml, "train"), max_bits or DEFAULT_MAX_BITS)
    (out_dir / "valid" / "images").mkdir(parents=True)
    (out_dir / "valid" / "labels").mkdir(parents=True)
    for image in val:
        if image in duplicates:
            continue
        (out_dir / "valid" / "images" / image.name).symlink_to(image.resolve())
        label = _label_of(image)
        (out_dir / "valid" / "labels" / f"{image.stem}.txt").write_text(label.read_text() if label.is_file() else "")
    spec = {
        "path": str(out_dir),
        "train": "valid/images",
        "val": "valid/images",
        "nc": len(MODEL_CLASSES),
        "names": dict(enumerate(MODEL_CLASSES)),
    }
    (out_dir / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out_dir / "data.yaml", len(val) - len(duplicates), len(duplicates)


def train_instances(data_yaml: Path) -> dict[str, int]:
    """Boxes per class in a mix's train split (from the summary ``merge_datasets`` wrote)."""
    spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    train = ((spec.get("aidoor") or {}).get("splits") or {}).get("train") or {}
    return {name: int(train.get(f"instances_{name}", 0)) for name in MODEL_CLASSES}


def add_labels(data_yaml: Path, labels: dict[Path, list[str]]) -> int:
    """Append label lines to images of a built mix (``{image path: lines}``); returns lines added.
    Used for the classes a fine-tuned model knows and the new data lacks (labelled by that model)."""
    added = 0
    for image, lines in labels.items():
        label = _label_of(Path(image))
        existing = label.read_text().splitlines() if label.is_file() else []
        new = [ln for ln in lines if ln not in existing]
        if new:
            label.write_text("".join(f"{ln}\n" for ln in existing + new))
            added += len(new)
    return added
