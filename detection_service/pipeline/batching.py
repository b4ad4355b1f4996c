"""One detector for several cameras: frames waiting at the same time go into one batched inference.

Each camera's pipeline thread calls ``BatchingDetector.detect(camera_id, detector, image, conf)``
and blocks until its boxes are back. One batching thread owns the detector calls:

- **newest frame wins per camera**: a camera has at most one waiting frame; a newer one replaces it
  (the replaced caller gets ``Superseded``, counted in ``dropped``). The capture in front already
  keeps only the newest frame, so a pipeline thread normally never has two waiting.
- **batching**: when more than one camera waits, their frames go into one ``detect_batch`` call
  (Ultralytics runs a list of images as one batch). After a batch ends, every camera that took part
  comes back within a few milliseconds (tracker, recorder); the thread waits for the registered
  cameras that are not yet waiting at most ``gather_s`` (and at most a quarter of the last batch's
  time), the dynamic-batching delay of inference servers (Triton's ``max_queue_delay``). Only
  cameras that sent a frame lately (within three batch times) are waited for: a camera whose source
  is down, or whose motion gate skips the detector on a still scene, does not slow the others.
- **fair share under overload**: at most ``max_batch`` frames per batch, taken round-robin starting
  after the camera served last, so with more cameras than batch slots none is starved.

Frames of one batch may ask for different confidence floors (per-camera settings): the batch runs
at the lowest and each camera keeps its own boxes at or above its floor. Requests holding different
detector objects (a model swap in progress) run in separate batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detection_service.pipeline.detector import Detection, Detector

log = logging.getLogger(__name__)

MAX_BATCH = 8
GATHER_S = 0.02


class Superseded(RuntimeError):  # noqa: N818 - an outcome, not a failure
    """A newer frame of the same camera replaced this one before it was detected."""


@dataclass(eq=False, slots=True)
class _Request:
    camera_id: int
    detector: Detector
    image: np.ndarray
    conf: float
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Detection] | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _CameraStats:
    inferences: int = 0
    dropped: int = 0
    wait_ms_total: float = 0.0


class BatchingDetector:
    def __init__(self, *, max_batch: int = MAX_BATCH, gather_s: float = GATHER_S) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._cond = threading.Condition()
        self._pending: dict[int, _Request] = {}
        self._active: set[int] = set()
        self._last_submit: dict[int, float] = {}
        self._last_served: int | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_batch_s = 0.0
        self._last_batch_end = 0.0
        self._stats: dict[int, _CameraStats] = {}
        self.batches = 0
        self.frames = 0
        self._sizes: deque[int] = deque(maxlen=256)

    # -- cameras --------------------------------------------------------------------------

    def register(self, camera_id: int) -> None:
        """A camera's pipeline started: the batcher waits for it when gathering a batch."""
        with self._cond:
            self._active.add(camera_id)
            self._stats.setdefault(camera_id, _CameraStats())

    def unregister(self, camera_id: int) -> None:
        with self._cond:
            self._active.discard(camera_id)
            self._cond.notify_all()

    # -- detection ------------------------------------------------------------------------

    def detect(self, camera_id: int, detector: Detector, image: np.ndarray, conf: float) -> list[Detection]:
        """Boxes of ``image`` (blocking); raises ``Superseded`` if a newer frame of the camera
        replaced it, or what the detector raised."""
        request = self.submit(camera_id, detector, image, conf)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def submit(self, camera_id: int, detector: Detector, image: np.ndarray, conf: float) -> _Request:
        """Queue a frame without waiting (``detect`` waits on it); the newest frame of a camera wins."""
        request = _Request(camera_id, detector, image, conf, time.monotonic())
        with self._cond:
            if self._closed:
                raise RuntimeError("the batching detector is closed")
            self._ensure_thread()
            stats = self._stats.setdefault(camera_id, _CameraStats())
            old = self._pending.get(camera_id)
            if old is not None:
                stats.dropped += 1
                old.error = Superseded(f"camera {camera_id}: a newer frame replaced this one")
                old.done.set()
            self._pending[camera_id] = request
            self._last_submit[camera_id] = request.arrived
            self._cond.notify_all()
        return request

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for request in self._pending.values():
                request.error = RuntimeError("the batching detector is closed")
                request.done.set()
            self._pending.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(5.0)

    # -- status ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._cond:
            sizes = list(self._sizes)
            return {
                "batches": self.batches,
                "frames": self.frames,
                "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
                "max_batch": self.max_batch,
                "cameras": {
                    str(cid): {
                        "inferences": s.inferences,
                        "dropped": s.dropped,
                        "mean_wait_ms": round(s.wait_ms_total / s.inferences, 1) if s.inferences else 0.0,
                    }
                    for cid, s in sorted(self._stats.items())
                },
            }

    # -- the batching thread --------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="detector-batching", daemon=True)
            self._thread.start()

    def _take(self) -> list[_Request] | None:
        """The next batch (None when closed): wait for a frame, gather the others briefly, then
        up to ``max_batch`` round-robin after the camera served last, one detector at a time."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            # From the later of the first waiting frame and the end of the last batch: a frame
            # that waited through a batch must not make the cameras of that batch miss the next.
            first = max(min(r.arrived for r in self._pending.values()), self._last_batch_end)
            delay = min(self.gather_s, self._last_batch_s / 4) if self._last_batch_s else self.gather_s
            deadline = first + delay
            recent = first - 3 * self._last_batch_s - self.gather_s
            expected = {c for c in self._active if self._last_submit.get(c, 0.0) >= recent}
            while not self._closed and not expected <= self._pending.keys():
                left = deadline - time.monotonic()
                if left <= 0 or len(self._pending) >= self.max_batch:
                    break
                self._cond.wait(left)
            if self._closed or not self._pending:
                return None if self._closed else []
            ids = sorted(self._pending)
            if self._last_served is not None:
                after = [c for c in ids if c > self._last_served]
                ids = after + [c for c in ids if c <= self._last_served]
            detector = self._pending[ids[0]].detector
            chosen = [c for c in ids if self._pending[c].detector is detector][: self.max_batch]
            self._last_served = chosen[-1]
            return [self._pending.pop(c) for c in chosen]

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        detector = batch[0].detector
        floor = min(r.conf for r in batch)
        started = time.monotonic()
        try:
            results = detector.detect_batch([r.image for r in batch], conf=floor)
        except BaseException as exc:  # every caller of this batch sees the failure
            for request in batch:
                request.error = exc
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        finished = time.monotonic()
        with self._cond:
            self._last_batch_s = finished - started
            self._last_batch_end = finished
            self.batches += 1
            self.frames += len(batch)
            self._sizes.append(len(batch))
            for request in batch:
                stats = self._stats.setdefault(request.camera_id, _CameraStats())
                stats.inferences += 1
                stats.wait_ms_total += (started - request.arrived) * 1000
        for request, boxes in zip(batch, results, strict=True):
            request.result = [d for d in boxes if d.confidence >= request.conf]
            request.done.set()
