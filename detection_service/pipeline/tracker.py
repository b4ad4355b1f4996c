"""Multi-object tracking: Ultralytics' ByteTrack fed with our detections, plus per-track history.

ByteTrack only associates boxes between the frames it is given. Because the motion gate skips
frames, its ``track_buffer`` counts detector runs, not camera frames; lost-object timing is
therefore done by the event recorder in seconds, not here.

Ultralytics must never pip-install at run time: ``configure_offline`` sets YOLO_AUTOINSTALL=0, and
``lap`` (ByteTrack's assignment solver) is imported first so a missing one fails loudly here
instead of making ``ultralytics.trackers.utils.matching`` call ``check_requirements``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detection_service.ml.classes import MODEL_CLASSES
from detection_service.pipeline.detector import UNCLASSIFIED, Detection


@dataclass(slots=True)
class Track:
    track_id: int
    first_seen: float  # monotonic
    last_seen: float
    first_wall: float  # time.time() of the first hit
    last_wall: float
    hits: int = 0
    best_confidence: float = 0.0
    last_confidence: float = 0.0
    last_bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    votes: Counter[str] = field(default_factory=Counter)
    confidence_sum: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    best_by_type: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    hit_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def object_type(self) -> str:
        """Majority vote among model classes (ties: higher summed confidence); ``unclassified``
        only if the track never had a confident hit. One confident "person" outweighs a run of
        low-confidence frames, but one stray "mail" does not outvote a run of "person"."""
        concrete = [t for t in self.votes if t != UNCLASSIFIED]
        if not concrete:
            return UNCLASSIFIED
        return max(concrete, key=lambda t: (self.votes[t], self.confidence_sum[t]))

    @property
    def type_confidence(self) -> float:
        """Best confidence seen for the voted type."""
        return self.best_by_type.get(self.object_type, self.best_confidence)

    def hits_within(self, window_s: float, now: float) -> int:
        return sum(1 for t in self.hit_times if now - t <= window_s)

    def add_hit(self, det: Detection, now: float, wall: float) -> None:
        object_type = det.object_type or UNCLASSIFIED
        self.hits += 1
        self.last_seen, self.last_wall = now, wall
        self.last_confidence = det.confidence
        self.best_confidence = max(self.best_confidence, det.confidence)
        self.last_bbox = det.xyxy
        self.votes[object_type] += 1
        self.confidence_sum[object_type] += det.confidence
        self.best_by_type[object_type] = max(self.best_by_type[object_type], det.confidence)
        self.hit_times.append(now)


class _Boxes:
    """The Results-like view BYTETracker.update expects (conf, cls, xywh, boolean indexing)."""

    def __init__(self, xywh: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xywh, self.conf, self.cls = xywh, conf, cls

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _Boxes:
        return _Boxes(self.xywh[index], self.conf[index], self.cls[index])

    @classmethod
    def from_detections(cls, detections: list[Detection]) -> _Boxes:
        if not detections:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
        xyxy = np.array([d.xyxy for d in detections], np.float32)
        xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        conf = np.array([d.confidence for d in detections], np.float32)
        # ByteTrack is class-agnostic in association; the class only rides along.
        cls_ids = np.array(
            [MODEL_CLASSES.index(d.object_type) if d.object_type in MODEL_CLASSES else -1 for d in detections],
            np.float32,
        )
        return cls(xywh, conf, cls_ids)


class ObjectTracker:
    """ByteTrack plus our Track records. ``update`` is called once per detector run."""

    def __init__(
        self,
        *,
        high_thresh: float = 0.25,
        low_thresh: float = 0.1,
        new_track_thresh: float = 0.25,
        track_buffer: int = 30,
        match_thresh: float = 0.8,
        forget_after_s: float = 30.0,
    ) -> None:
        if os.environ.get("YOLO_AUTOINSTALL", "").lower() not in ("0", "false"):
            raise RuntimeError("call detection_service.ml.ultralytics_env.configure_offline() before tracking")
        import lap  # noqa: F401  (see module doc)
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        self._args = IterableSimpleNamespace(
            tracker_type="bytetrack",
            track_high_thresh=high_thresh,
            track_low_thresh=low_thresh,
            new_track_thresh=new_track_thresh,
            track_buffer=track_buffer,
            match_thresh=match_thresh,
            fuse_score=True,
        )
        self._tracker_cls = BYTETracker
        self._bt = BYTETracker(self._args)
        self.forget_after_s = forget_after_s
        self.tracks: dict[int, Track] = {}

    def set_thresholds(self, floor: float) -> None:
        """Every detection we keep (>= floor) may start or extend a track."""
        self._args.track_high_thresh = floor
        self._args.new_track_thresh = floor
        self._args.track_low_thresh = min(self._args.track_low_thresh, floor / 2)

    def reset(self) -> None:
        self._bt = self._tracker_cls(self._args)
        self.tracks.clear()

    def update(self, detections: list[Detection], now: float, wall: float) -> list[tuple[Track, Detection]]:
        """Associate this run's (classified) detections; returns the tracks seen in it, each with
        the detection it matched."""
        rows = self._bt.update(_Boxes.from_detections(detections))
        seen: list[tuple[Track, Detection]] = []
        for row in rows:
            track_id, idx = int(row[4]), int(row[7])
            det = detections[idx]
            track = self.tracks.get(track_id)
            if track is None:
                track = self.tracks[track_id] = Track(track_id, now, now, wall, wall)
            track.add_hit(det, now, wall)
            seen.append((track, det))
        live = {t.track_id for t in self._bt.tracked_stracks} | {t.track_id for t in self._bt.lost_stracks}
        stale = [i for i, t in self.tracks.items() if i not in live or now - t.last_seen > self.forget_after_s]
        for track_id in stale:
            del self.tracks[track_id]
        return seen

    @property
    def has_candidates(self) -> bool:
        """ByteTrack holds boxes it has not activated yet (seen once): look again soon."""
        return any(not t.is_activated for t in self._bt.tracked_stracks)
