"""Where things live in the object store: every key layout, in one place.

    events/YYYY/MM/DD/<event_id>/<seq>.jpg           captures of a detection event (seq 1 = snapshot)
    events/YYYY/MM/DD/<event_id>/<seq>.txt           a capture's YOLO label (next to its image)
    datasets/<dataset_id>/<version>/<split>/images/  a stored dataset version (data.yaml at its root)
    datasets/<dataset_id>/<version>/<split>/labels/
    models/<model_id>/                               a registered model (weights, exports, aidoor.json)
    reports/<report_type>/<period>/report.json       an analytics report (+ report.csv, report.html, <chart>.png)
    logs/system_logs/YYYY/MM/DD/<first>-<last>.jsonl.gz  archived system_logs rows (ids first..last)

Nothing else builds these strings: writers and readers call the functions below.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

EVENTS_PREFIX: Final = "events/"
DATASETS_PREFIX: Final = "datasets/"
MODELS_PREFIX: Final = "models/"
REPORTS_PREFIX: Final = "reports/"
LOGS_PREFIX: Final = "logs/"
SYSTEM_LOG_ARCHIVE_PREFIX: Final = f"{LOGS_PREFIX}system_logs/"
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


def system_log_archive_key(archived_at: datetime, first_id: int, last_id: int) -> str:
    """One archive of ``system_logs`` rows (gzip-compressed JSON lines), named by the day it was
    written and the id range it holds."""
    return f"{SYSTEM_LOG_ARCHIVE_PREFIX}{archived_at:%Y/%m/%d}/{first_id}-{last_id}.jsonl.gz"


def report_root(report_type: str, period: str) -> str:
    """One report partition's files (``period``: its partition key, ``YYYY-MM-DD``)."""
    return f"{REPORTS_PREFIX}{report_type}/{period}/"


def report_key(report_type: str, period: str, name: str) -> str:
    """A file of a report partition: ``report.json``, ``report.csv``, ``report.html``, ``<chart>.png``."""
    return f"{report_root(report_type, period)}{name}"
