"""Frequent visitors: person captures grouped by appearance into recurring visitors.

Embedding (``appearance_embedding``): a part-based colour descriptor of the person's crop, no
model. The crop (the stored box) is resized to 48 x 128 (scale drops out) and its outer side
strips are cut (door frame, background); it is cut into 8 horizontal stripes (head, shoulders,
torso ... shoes: where a colour sits matters, not only which colours are there). Per stripe:

- a hue x saturation histogram (8 x 3, hue circular) of the *coloured* pixels, weighted by how
  coloured each is (its chroma, max - min channel): a grey, white or black pixel's hue is noise,
  so dark clothes do not scatter over random hues;
- a value histogram (4) of the *grey* pixels (the rest of each pixel's weight) and one of all
  pixels, both from the crop's lightness after histogram equalization, so the same coat at noon
  and at dusk, or behind an auto-exposing camera, keeps its histogram.

Every pixel is split between its two nearest bins (soft binning: red at hue 0/180 or a colour on a
bin edge does not jump with a little noise). Histograms are square-rooted (Hellinger) and the
vector is L2-normalised, so the cosine of two embeddings compares the distributions. Chosen over a
global HSV histogram, 4-6 stripes, CLAHE, a min-max stretch, hard bins and added gradient
texture by pairwise precision/recall on the identity set of ``aidoor bench visitors``
(docs/analytics.md, "Frequent visitors").

Grouping (``group_embeddings``): the events of one track are one visit (their captures are
averaged); visits are clustered by average-linkage agglomerative clustering on the cosine
distance (SciPy), cut at ``DEFAULT_THRESHOLD``. Average linkage does not chain two people
together through one ambiguous capture the way single linkage does, and needs no number of
clusters in advance.

What it cannot do: tell apart two people dressed alike, or keep one person together across a
change of clothes (a colour descriptor sees clothes, not faces). It is a "same clothes came back"
signal, reported as such.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.datasets.auto_collect import BoxError, PixelBox, parse_bbox
from detection_service.errors import Invalid, Unavailable
from detection_service.storage import ObjectStore, StorageError
from schemas.db import DetectionEvent, EventImage, Model, ObjectType, utcnow
from schemas.enums import ObjectTypeCode
from schemas.visitors import FrequentVisitors, Visitor, VisitorThumbnail

log = logging.getLogger(__name__)

# --- the descriptor (changing any of these changes every embedding: bump METHOD) --------------
CROP_W, CROP_H = 48, 128
SIDE_MARGIN = 0.15  # share of the width cut on each side
STRIPES = 8
HUE_BINS, SAT_BINS, VALUE_BINS = 8, 3, 4
CHROMA_LOW, CHROMA_HIGH = 5.0, 20.0  # chroma (0-255) from which a pixel counts as coloured
EMBEDDING_DIM = STRIPES * (HUE_BINS * SAT_BINS + 2 * VALUE_BINS)
MIN_CROP_PX = 8  # a box narrower or lower than this holds no usable person
# Cosine distance at which the clustering is cut: the best pairwise F1 on the train/ frames of the
# identity set (`aidoor bench visitors`); see docs/analytics.md.
DEFAULT_THRESHOLD = 0.08
METHOD = (
    f"hsv-stripes-v2: {STRIPES} stripes x (hue {HUE_BINS} x saturation {SAT_BINS} of coloured pixels + "
    f"equalized value {VALUE_BINS} of grey pixels + equalized value {VALUE_BINS} of all); "
    f"average-linkage clustering, cosine distance <= {{threshold}}"
)

# --- the grouping ------------------------------------------------------------------------------
CAPTURES_PER_EVENT = 3  # first captures of an event used (the person is nearest the door then)
VISIT_GAP = timedelta(minutes=2)  # events of the same track this close are one visit
MAX_EVENTS = 5000  # newest person events grouped per call (pdist is quadratic in the visits)
USUAL_HOURS_SHARE = 0.8  # usual hours: the fewest hours holding this share of the visits
MAX_USUAL_HOURS = 4
CACHE_SIZE = 20_000  # embeddings kept in memory (about 1.2 kB each)
ANSWER_CACHE_SIZE = 32  # answers kept (per window, min_visits, limit)
# An answer is reused while the events are unchanged (the stamp, _stamp), at most this long: rows
# deleted by another process (the nightly clean-up) show within it, and its signed thumbnail links
# stay valid (it is capped at half their lifetime).
ANSWER_TTL_S = 60.0
DAYS_RANGE = (1, 365)
MIN_VISITS_RANGE = (1, 1000)
LIMIT_RANGE = (1, 500)


# --- embedding -----------------------------------------------------------------------------


def _soft_bins(values: np.ndarray, bins: int, circular: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each value (0..1) split between its two nearest bin centres, linearly: a colour on a bin
    edge (red at hue 0/180, a yellow at 22 deg) does not jump between bins with a little noise."""
    position = values * bins - 0.5
    low = np.floor(position)
    upper_weight = position - low
    low = low.astype(int)
    high = low + 1
    if circular:
        low, high = low % bins, high % bins
    else:
        low, high = np.clip(low, 0, bins - 1), np.clip(high, 0, bins - 1)
    return low, high, upper_weight


def _stripe_histogram(hsv: np.ndarray, lightness: np.ndarray) -> np.ndarray:
    """One stripe: a hue x saturation histogram of its coloured pixels (hue circular), a value
    histogram of its grey ones (a grey pixel's hue is noise: white, grey and black clothes must
    not scatter over random hues) and a value histogram of all; soft binned, square-rooted
    (Hellinger). Hue and saturation come from the crop as it is (they hardly move with the light),
    the value histograms from the equalized lightness ``lightness``."""
    pixels = hsv.reshape(-1, 3).astype(np.float32)
    saturation = pixels[:, 1]
    value = lightness.reshape(-1).astype(np.float32)
    # How coloured a pixel is, from its chroma (max - min channel = saturation x value): 0 under
    # CHROMA_LOW, 1 over CHROMA_HIGH. Saturation alone would call a dark, noisy pixel coloured.
    chroma = np.clip((saturation * pixels[:, 2] / 255.0 - CHROMA_LOW) / (CHROMA_HIGH - CHROMA_LOW), 0.0, 1.0)
    h_lo, h_hi, h_w = _soft_bins(pixels[:, 0] / 180.0, HUE_BINS, circular=True)
    s_lo, s_hi, s_w = _soft_bins(saturation / 256.0, SAT_BINS, circular=False)
    v_lo, v_hi, v_w = _soft_bins(value / 256.0, VALUE_BINS, circular=False)
    coloured = np.zeros(HUE_BINS * SAT_BINS, np.float64)
    for h_bin, h_weight in ((h_lo, 1.0 - h_w), (h_hi, h_w)):
        for s_bin, s_weight in ((s_lo, 1.0 - s_w), (s_hi, s_w)):
            np.add.at(coloured, h_bin * SAT_BINS + s_bin, chroma * h_weight * s_weight)
    grey = np.zeros(VALUE_BINS, np.float64)
    brightness = np.zeros(VALUE_BINS, np.float64)
    for v_bin, v_weight in ((v_lo, 1.0 - v_w), (v_hi, v_w)):
        np.add.at(grey, v_bin, (1.0 - chroma) * v_weight)
        np.add.at(brightness, v_bin, v_weight)
    hist = np.concatenate([coloured, grey, brightness])
    return np.sqrt(hist / max(float(hist.sum()), 1.0))


def _normalised_lightness(lightness: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(lightness)


def appearance_embedding(image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> np.ndarray | None:
    """The descriptor of the module docstring for the person at ``box`` (x1, y1, x2, y2 pixels of
    ``image``, a BGR array; None: the whole image is the person). None when the box holds too few
    pixels to say anything."""
    if box is not None:
        height, width = image.shape[:2]
        x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
        x2, y2 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
        image = image[y1:y2, x1:x2]
    if image.ndim != 3 or image.shape[0] < MIN_CROP_PX or image.shape[1] < MIN_CROP_PX:
        return None
    crop = cv2.resize(image, (CROP_W, CROP_H), interpolation=cv2.INTER_AREA)
    margin = int(CROP_W * SIDE_MARGIN)
    crop = np.ascontiguousarray(crop[:, margin : CROP_W - margin])
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    lightness = _normalised_lightness(np.ascontiguousarray(cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)[..., 0]))
    bounds = np.linspace(0, CROP_H, STRIPES + 1).astype(int)
    vector = np.concatenate([_stripe_histogram(hsv[a:b], lightness[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else None


def group_embeddings(embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Cluster labels (0..k-1, by first appearance) of L2-normalised row vectors: average linkage
    on the cosine distance, cut at ``threshold``."""
    count = len(embeddings)
    if count == 0:
        return np.zeros(0, dtype=int)
    if count == 1:
        return np.zeros(1, dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    # Rounding can leave tiny negative distances; linkage wants them >= 0.
    distances = np.clip(pdist(np.asarray(embeddings, dtype=np.float64), "cosine"), 0.0, 2.0)
    raw = fcluster(linkage(distances, "average"), threshold, "distance")
    relabel: dict[int, int] = {}
    return np.array([relabel.setdefault(int(label), len(relabel)) for label in raw], dtype=int)


def pairwise_precision_recall(predicted: Sequence[int], truth: Sequence[Any], ignore: Any = None) -> dict[str, Any]:
    """Pairwise precision and recall of a grouping: over every pair of items, a pair put together
    is right when both have the same identity. ``ignore(i, j) -> bool`` leaves out pairs of
    different identities that may still be the same person (the set cannot say)."""
    tp = fp = fn = 0
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            if ignore is not None and truth[i] != truth[j] and ignore(i, j):
                continue
            same, together = bool(truth[i] == truth[j]), bool(predicted[i] == predicted[j])
            tp += same and together
            fp += together and not same
            fn += same and not together
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": precision, "recall": recall, "true_pairs": tp + fn, "predicted_pairs": tp + fp}


def model_detects_person(metrics: dict[str, Any] | None) -> bool:
    """Whether a model's stored metrics say it finds people: our own models list the classes they
    were evaluated on (``per_class`` rows: name, images, instances, ...), a model registered from
    elsewhere its class names and how they map onto ours (``class_mapping``)."""
    metrics = metrics or {}
    person = ObjectTypeCode.PERSON.value
    for row in metrics.get("per_class") or []:
        if isinstance(row, (list, tuple)) and len(row) > 2 and row[0] == person and row[2]:
            return True
        if isinstance(row, dict) and row.get("name") == person and row.get("instances"):
            return True
    mapping = metrics.get("class_mapping") or {}
    if isinstance(mapping, dict) and person in (mapping.get("mapped") or {}).values():
        return True
    return person in (metrics.get("classes") or [])


# --- the service -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Capture:
    image_id: int
    key: str
    box: tuple[float, float, float, float]
    frame: tuple[float | None, float | None]  # size the box was measured in


@dataclass(slots=True)
class _Visit:
    event_ids: list[int]
    tracking_id: int | None
    start: datetime
    last_end: datetime
    captures: list[tuple[int, _Capture]] = field(default_factory=list)  # (event id, capture)


def _check_range(value: int, bounds: tuple[int, int], name: str, code: str) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(
            f"{name} must be an integer from {low} to {high}, got {value!r}",
            {"field": name, "value": value, "min": low, "max": high},
            code=code,
        )


def _event_captures(event: DetectionEvent, images: list[EventImage]) -> list[_Capture]:
    """The captures of an event with the person's box in each (docs/datasets.md, bbox format):
    the top-level box belongs to the main snapshot, ``frames`` to the others by sequence number."""
    try:
        main, frames = parse_bbox(event.bbox_coordinates)
    except BoxError:
        return []
    main_seq = None
    if main is not None:
        main_image = next((img for img in images if img.image_path == event.image_path), None)
        main_seq = (main_image or images[0]).sequence_number if images else None
    captures = []
    for img in images:
        box: PixelBox | None = frames.get(img.sequence_number)
        if box is None and img.sequence_number == main_seq:
            box = main
        if box is not None:
            captures.append(_Capture(img.id, img.image_path, (box.x1, box.y1, box.x2, box.y2), (box.width, box.height)))
    return captures[:CAPTURES_PER_EVENT]


def _person_window(person_id: int, start: datetime, end: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    """The person events the grouping reads (and the answer cache's stamp counts)."""
    return (
        DetectionEvent.object_type_id == person_id,
        DetectionEvent.is_false_positive.is_(False),
        DetectionEvent.detected_at >= start,
        DetectionEvent.detected_at < end,
    )


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class VisitorService:
    """``visitors(days, min_visits, limit)``: the recurring people of the last days, grouped by
    appearance (module docstring). Embeddings are cached in memory per capture, so a repeated call
    decodes only new captures; whole answers are cached while the events are unchanged (``cache``,
    like ``AnalyticsService``): a repeated call costs one stamp query."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore | None,
        time_zone: str = "Asia/Seoul",
        url_ttl: timedelta = timedelta(hours=1),
        threshold: float = DEFAULT_THRESHOLD,
        cache: bool = True,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.time_zone = time_zone
        self.zone = ZoneInfo(time_zone)
        self.url_ttl = url_ttl
        self.threshold = threshold
        self.cache_enabled = cache
        self._answer_ttl_s = min(ANSWER_TTL_S, url_ttl.total_seconds() / 2)
        self._cache: OrderedDict[tuple[int, str, tuple[float, ...]], np.ndarray | None] = OrderedDict()
        self._answers: OrderedDict[tuple, tuple[float, FrequentVisitors]] = OrderedDict()
        self._lock = threading.Lock()
        self._read_failures = 0

    # -- embeddings -------------------------------------------------------------------------

    def _embedding(self, capture: _Capture) -> np.ndarray | None:
        """The capture's embedding; None when its image cannot be read or its box is unusable.
        A store failure is not cached (the next call tries again); an unusable image is."""
        cache_key = (capture.image_id, capture.key, capture.box + tuple(v or 0.0 for v in capture.frame))
        with self._lock:
            if cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return self._cache[cache_key]
        if self.store is None:
            raise Unavailable("the object store is not available", code="STORAGE_UNAVAILABLE")
        try:
            data = self.store.get_bytes(capture.key)
        except StorageError as exc:
            log.warning("capture %s not readable: %s", capture.key, exc)
            with self._lock:
                self._read_failures += 1  # an answer made without it is not cached
            return None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        embedding = None
        if image is not None and image.size:
            box = capture.box
            width, height = capture.frame
            if width and height and (width, height) != (image.shape[1], image.shape[0]):
                sx, sy = image.shape[1] / width, image.shape[0] / height  # box measured on another size
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            embedding = appearance_embedding(image, box)
        with self._lock:
            self._cache[cache_key] = embedding
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return embedding

    # -- the answer -------------------------------------------------------------------------

    def _person_model(self, session: Session) -> bool:
        metrics = session.scalar(sa.select(Model.metrics).where(Model.is_current.is_(True)).limit(1))
        return metrics is not None and model_detects_person(metrics)

    def _load(self, session: Session, start: datetime, end: datetime) -> tuple[list[_Visit], int, bool]:
        person_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == ObjectTypeCode.PERSON.value))
        if person_id is None:
            return [], 0, False
        window = _person_window(person_id, start, end)
        total = session.scalar(sa.select(sa.func.count(DetectionEvent.id)).where(*window)) or 0
        events = list(
            session.scalars(
                sa.select(DetectionEvent)
                .where(*window)
                .order_by(DetectionEvent.detected_at.desc(), DetectionEvent.id.desc())
                .limit(MAX_EVENTS)
            )
        )
        events.reverse()
        images: dict[int, list[EventImage]] = {}
        ids = [event.id for event in events]
        for chunk in range(0, len(ids), 500):
            for img in session.scalars(
                sa.select(EventImage)
                .where(EventImage.event_id.in_(ids[chunk : chunk + 500]))
                .order_by(EventImage.event_id, EventImage.sequence_number)
            ):
                images.setdefault(img.event_id, []).append(img)
        visits: list[_Visit] = []
        open_by_track: dict[int, _Visit] = {}
        for event in events:
            began = event.detected_at
            ended = event.ended_at or began + timedelta(seconds=event.tracking_duration or 0)
            visit = open_by_track.get(event.tracking_id) if event.tracking_id is not None else None
            if visit is None or began - visit.last_end > VISIT_GAP:
                visit = _Visit([], event.tracking_id, began, ended)
                visits.append(visit)
                if event.tracking_id is not None:
                    open_by_track[event.tracking_id] = visit
            visit.event_ids.append(event.id)
            visit.last_end = max(visit.last_end, ended)
            visit.captures += [(event.id, c) for c in _event_captures(event, images.get(event.id, []))]
        return visits, total, total > len(events)

    def visitors(self, days: int = 30, min_visits: int = 2, limit: int = 50) -> FrequentVisitors:
        """The visitors of the last ``days`` days with at least ``min_visits`` visits, most visits
        first (at most ``limit``). Each bad value is an Invalid with its own code."""
        _check_range(days, DAYS_RANGE, "days", "INVALID_DAYS")
        # The end of the current minute (as the analytics windows): calls within a minute share an answer.
        end = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=1)
        return self._group(end - timedelta(days=days), end, min_visits, limit, f"in the last {days} day(s)")

    def between(self, start: datetime, end: datetime, min_visits: int = 2, limit: int = 50) -> FrequentVisitors:
        """The same for the window ``[start, end)`` (UTC; naive = UTC), e.g. a report's local week.
        ``days`` in the answer is the window's length in days, rounded up."""
        start, end = (v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v for v in (start, end))
        if not start < end:
            raise Invalid("start must be before end", {"start": str(start), "end": str(end)}, code="INVALID_DATE_RANGE")
        return self._group(start, end, min_visits, limit, f"from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")

    def _group(self, start: datetime, end: datetime, min_visits: int, limit: int, span: str) -> FrequentVisitors:
        _check_range(min_visits, MIN_VISITS_RANGE, "min_visits", "INVALID_MIN_VISITS")
        _check_range(limit, LIMIT_RANGE, "limit", "INVALID_LIMIT")
        with self.session_factory() as session:
            person_model = self._person_model(session)
            stamp = self._stamp(session, start, end) if self.cache_enabled else None
        if stamp is None:
            return self._answer(person_model, start, end, min_visits, limit, span)
        key = (start, end, min_visits, limit, person_model, stamp)
        now = time.monotonic()
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None and now - hit[0] < self._answer_ttl_s:
                self._answers.move_to_end(key)
                return hit[1]
        # Two requests missing at once both compute (seconds, not a wrong answer); the later one is kept.
        failures = self._read_failures
        answer = self._answer(person_model, start, end, min_visits, limit, span)
        with self._lock:
            if self._read_failures != failures:  # a capture could not be read: ask the store again next time
                return answer
            self._answers[key] = (now, answer)
            while len(self._answers) > ANSWER_CACHE_SIZE:
                self._answers.popitem(last=False)
        return answer

    @staticmethod
    def _stamp(session: Session, start: datetime, end: datetime) -> tuple | None:
        """What changes when the window's person events or their captures do: the count and the sum
        of the ids of its person events (a new one, a relabel to or from person, a false-positive
        mark, a deletion) and the highest capture id (a capture added to an event being recorded).
        Not ``MAX(updated_at)``: it has whole seconds on MySQL, so a relabel in the same second as
        the last write would not show. Index range on (object_type_id, detected_at). ``None``: no
        person type."""
        person_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == ObjectTypeCode.PERSON.value))
        if person_id is None:
            return None
        count, id_sum = session.execute(
            sa.select(sa.func.count(DetectionEvent.id), sa.func.coalesce(sa.func.sum(DetectionEvent.id), 0)).where(
                *_person_window(person_id, start, end)
            )
        ).one()
        return (int(count), int(id_sum), session.scalar(sa.select(sa.func.max(EventImage.id))))

    def clear_cache(self) -> None:
        """Forget the answers (embeddings stay: they depend on the image alone)."""
        with self._lock:
            self._answers.clear()

    def _answer(
        self, person_model: bool, start: datetime, end: datetime, min_visits: int, limit: int, span: str
    ) -> FrequentVisitors:
        days = -(-(end - start) // timedelta(days=1))
        with self.session_factory() as session:
            visits, total, truncated = self._load(session, start, end)
        answer: dict[str, Any] = {
            "person_detection": person_model,
            "days": days,
            "min_visits": min_visits,
            "start": start.replace(tzinfo=UTC),
            "end": end.replace(tzinfo=UTC),
            "time_zone": self.time_zone,
            "person_events": total,
            "visits": len(visits),
            "truncated": truncated,
            "method": METHOD.format(threshold=self.threshold),
        }
        if not visits:
            if not person_model:
                return FrequentVisitors(
                    status="no_person_model",
                    message="The deployed detector does not detect people yet, so no visitor can be recognised: "
                    "deploy a model that knows the class person (the starter model does).",
                    grouped_visits=0,
                    visitors_total=0,
                    **answer,
                )
            return FrequentVisitors(
                status="no_person_events",
                message=f"No person was recorded {span}.",
                grouped_visits=0,
                visitors_total=0,
                **answer,
            )
        vectors, used = self._visit_vectors(visits)
        labels = group_embeddings(np.stack(vectors), self.threshold) if vectors else np.zeros(0, dtype=int)
        groups: dict[int, list[int]] = {}
        for index, label in zip(used, labels):
            groups.setdefault(int(label), []).append(index)
        found = [
            self._visitor(visits, members, vectors, used) for members in groups.values() if len(members) >= min_visits
        ]
        found.sort(key=lambda v: (-v.visits, -v.last_visit.timestamp()))
        for rank, visitor in enumerate(found, 1):
            visitor.visitor_id = rank
        listed = found[:limit]
        message = (
            f"{len(found)} visitor(s) with at least {min_visits} visit(s) among {len(used)} visit(s) of people "
            f"{span}, grouped by clothing colours"
        )
        if len(used) < len(visits):
            message += f"; {len(visits) - len(used)} visit(s) had no usable capture"
        if not person_model:
            message += "; note: the deployed detector does not detect people (these are earlier events)"
        return FrequentVisitors(
            status="ok",
            message=message,
            grouped_visits=len(used),
            visitors_total=len(found),
            visitors=listed,
            **answer,
        )

    def _visit_vectors(self, visits: list[_Visit]) -> tuple[list[np.ndarray], list[int]]:
        """One vector per visit with a usable capture (the normalised mean of its captures), and
        the indices of those visits."""
        vectors, used = [], []
        for index, visit in enumerate(visits):
            found = [e for e in (self._embedding(c) for _, c in visit.captures) if e is not None]
            if not found:
                continue
            mean = np.mean(found, axis=0)
            vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            used.append(index)
        return vectors, used

    def _visitor(self, visits: list[_Visit], members: list[int], vectors: list[np.ndarray], used: list[int]) -> Visitor:
        row_of = {visit_index: row for row, visit_index in enumerate(used)}
        rows = np.stack([vectors[row_of[m]] for m in members])
        centre = rows.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        similarity = float(np.mean(rows @ centre))
        by_hour = [0] * 24
        for m in members:
            by_hour[_aware(visits[m].start).astimezone(self.zone).hour] += 1
        usual: list[int] = []
        covered = 0
        for hour in sorted(range(24), key=lambda h: (-by_hour[h], h)):
            if covered >= USUAL_HOURS_SHARE * len(members) or len(usual) >= MAX_USUAL_HOURS or not by_hour[hour]:
                break
            usual.append(hour)
            covered += by_hour[hour]
        event_ids = sorted(e for m in members for e in visits[m].event_ids)
        return Visitor(
            visitor_id=0,
            visits=len(members),
            events=len(event_ids),
            event_ids=event_ids,
            first_visit=_aware(min(visits[m].start for m in members)),
            last_visit=_aware(max(visits[m].start for m in members)),
            usual_hours=sorted(usual),
            visits_by_hour=by_hour,
            similarity=round(similarity, 4),
            thumbnail=self._thumbnail([visits[m] for m in members], centre),
        )

    def _thumbnail(self, members: list[_Visit], centre: np.ndarray) -> VisitorThumbnail | None:
        """The capture closest to the group's centre: the most typical look of the visitor."""
        best: tuple[float, int, _Capture] | None = None
        for visit in members:
            for event_id, capture in visit.captures:
                embedding = self._embedding(capture)
                if embedding is not None:
                    score = float(embedding @ centre)
                    if best is None or score > best[0]:
                        best = (score, event_id, capture)
        if best is None:
            return None
        _, event_id, capture = best
        url = expires = None
        if self.store is not None:
            try:
                url = self.store.url_for(capture.key, self.url_ttl)
                expires = datetime.now(UTC) + self.url_ttl
            except StorageError as exc:  # the list is still useful without pictures
                log.warning("no URL for %s: %s", capture.key, exc)
        x1, y1, x2, y2 = capture.box
        return VisitorThumbnail(
            event_id=event_id,
            image_id=capture.image_id,
            url=url,
            url_expires_at=expires,
            bbox={"x1": x1, "y1": y1, "x2": x2, "y2": y2},
        )
