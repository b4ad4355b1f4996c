"""The one class list every model we train shares, and how dataset class names map onto it.

Class ids are positions in ``MODEL_CLASSES`` and never change: a model trained today and a
challenger trained next month must agree on what id 1 means, or the champion/challenger gate and
stored detections compare different things. ``unclassified`` is deliberately not a model class: the
detector reports it for low-confidence or unknown detections (see docs/training.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

MODEL_CLASSES: Final[tuple[str, ...]] = ("person", "package", "delivery_food", "mail")
CLASS_IDS: Final[dict[str, int]] = {name: i for i, name in enumerate(MODEL_CLASSES)}

# Lower-case dataset class name -> model class. Roboflow exports name the same thing many ways
# (the doorbell set says "Box", packages-v6 says "package").
DEFAULT_CLASS_MAPPING: Final[dict[str, str]] = {
    "person": "person",
    "people": "person",
    "human": "person",
    "package": "package",
    "packages": "package",
    "parcel": "package",
    "box": "package",
    "food": "delivery_food",
    "delivery_food": "delivery_food",
    "delivery": "delivery_food",
    "mail": "mail",
    "letter": "mail",
    "envelope": "mail",
}


def _normalise(name: str) -> str:
    return name.strip().lower()


def map_class_name(name: str, extra_mapping: Mapping[str, str] | None = None) -> str | None:
    """The model class for a dataset class name (case-insensitive), or None if it has none.

    ``extra_mapping`` (dataset name -> model class) wins over the defaults, so an import can say
    e.g. ``{"courier": "person"}``. A target outside ``MODEL_CLASSES`` is a caller bug: ValueError.
    """
    key = _normalise(name)
    if extra_mapping:
        for source, target in extra_mapping.items():
            if _normalise(source) == key:
                if target not in CLASS_IDS:
                    raise ValueError(f"mapping {source!r} -> {target!r}: target must be one of {MODEL_CLASSES}")
                return target
    return DEFAULT_CLASS_MAPPING.get(key)


def class_id(name: str) -> int:
    """The fixed id of a model class (KeyError for anything else, ``unclassified`` included)."""
    return CLASS_IDS[name]
