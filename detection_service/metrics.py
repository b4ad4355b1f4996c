"""The process's Prometheus metrics (``GET /metrics``) and the rolling inference window behind
``GET /api/system/performance``.

prometheus_client keeps its metrics in the process-wide default registry, so the counters here are
module-level, as Prometheus' client conventions have them: the pipeline thread observes a frame
(``observe_frame``, ``observe_inference``), the event bus subscriber counts events
(``count_event``). Values that only exist while an app runs (pipeline fps, queue depths, batch jobs
by status) are not kept here: the app's collector reads them at scrape time
(``services/performance.py``).

``set_enabled(False)`` turns every observation into a no-op (``aidoor bench overhead`` measures the
pipeline with and without them).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import Counter, Histogram

# Seconds: CPU inference of a small YOLO takes 20-300 ms; a GPU one a few ms.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

INFERENCE_LATENCY = Histogram(
    "aidoor_inference_latency_seconds", "Detector inference time per frame", buckets=_LATENCY_BUCKETS
)
FRAME_AGE = Histogram(
    "aidoor_frame_age_seconds", "Time from a frame's capture to the end of its detection", buckets=_AGE_BUCKETS
)
FRAMES_PROCESSED = Counter("aidoor_frames_processed_total", "Frames the pipeline handled (detected or motion-gated)")
FRAMES_DROPPED = Counter(
    "aidoor_frames_dropped_total", "Frames grabbed from the source but never handled (the pipeline was busy)"
)
EVENTS_CREATED = Counter("aidoor_events_created_total", "Detection events created", ["type"])

WINDOW_S = 60.0  # GET /api/system/performance: inference p50/p95 over the last minute


class InferenceWindow:
    """Inference times of the last ``WINDOW_S`` seconds, for percentiles (a histogram's buckets
    are too coarse for a p50 an operator reads)."""

    def __init__(self, window_s: float = WINDOW_S, maxlen: int = 20_000) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=maxlen)  # (monotonic, ms)
        self._lock = threading.Lock()

    def add(self, ms: float, now: float | None = None) -> None:
        self._samples.append((time.monotonic() if now is None else now, ms))  # deque.append is atomic

    def percentiles(self, now: float | None = None) -> tuple[int, float | None, float | None]:
        """(samples, p50 ms, p95 ms) over the window; None without samples."""
        cutoff = (time.monotonic() if now is None else now) - self.window_s
        with self._lock:
            while self._samples and self._samples[0][0] < cutoff:
                self._samples.popleft()
            values = sorted(ms for _, ms in self._samples)
        if not values:
            return 0, None, None

        def at(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))], 2)

        return len(values), at(0.50), at(0.95)

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()


INFERENCE_WINDOW = InferenceWindow()

_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def observe_frame(dropped_before: int) -> None:
    """One frame handled; ``dropped_before`` frames were grabbed since the last one and skipped."""
    if not _enabled:
        return
    FRAMES_PROCESSED.inc()
    if dropped_before > 0:
        FRAMES_DROPPED.inc(dropped_before)


def observe_inference(inference_s: float, frame_age_s: float) -> None:
    if not _enabled:
        return
    INFERENCE_LATENCY.observe(inference_s)
    FRAME_AGE.observe(frame_age_s)
    INFERENCE_WINDOW.add(inference_s * 1000)


def count_event(object_type: str) -> None:
    if _enabled:
        EVENTS_CREATED.labels(type=object_type).inc()
