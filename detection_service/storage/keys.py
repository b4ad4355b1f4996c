"""Where things live in the object store: every key layout, in one place.

    events/YYYY/MM/DD/<event_id>/<seq>.jpg           captures of a detection event (seq 1 = snapshot)
    events/YYYY/MM/DD/<event_id>/<seq>.txt           a capture's YOLO label (next to its image)
    datasets/<dataset_id>/<version>/<split>/images/  a stored dataset version (data.yaml at its root)
    datasets/<dataset_id>/<version>/<split>/labels/
    models/<model_id>/                               a registered model (weights, exports, aidoor.json)

Nothing else builds these strings: writers and readers call the functions below.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

EVENTS_PREFIX: Final = "events/"
DATASETS_PREFIX: Final = "datasets/"
MODELS_PREFIX: Final = "models/"
_EVENT_KEY = re.compile(r"^events/\d{4}/\d{2}/\d{2}/(\d+)/")


def event_image_key(event_id: int, detected_at: datetime, seq: int) -> str:
    """Capture ``seq`` of an event (1 is the snapshot the event row points at)."""
    return f"{EVENTS_PREFIX}{detected_at:%Y/%m/%d}/{event_id}/{seq}.jpg"


def event_id_of(key: str) -> int | None:
    """The event a key under ``events/`` belongs to; None for any other key."""
    match = _EVENT_KEY.match(key)
    return int(match.group(1)) if match else None


def label_key(image_key: str) -> str:
    """The YOLO label of a capture lives beside it: ``events/.../42/3.jpg`` -> ``.../42/3.txt``."""
    return image_key.rsplit(".", 1)[0] + ".txt"


def dataset_root(dataset_id: str) -> str:
    """Every version of one dataset."""
    return f"{DATASETS_PREFIX}{dataset_id}/"


def dataset_version_root(dataset_id: str, version: str) -> str:
    """One stored dataset version (its data.yaml and split folders)."""
    return f"{DATASETS_PREFIX}{dataset_id}/{version}/"


def dataset_split_images(dataset_id: str, version: str, split: str) -> str:
    return f"{dataset_version_root(dataset_id, version)}{split}/images/"


def model_root(model_id: str) -> str:
    """One registered model's files."""
    return f"{MODELS_PREFIX}{model_id}/"
