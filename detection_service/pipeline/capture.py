"""The capture thread: read the source continuously, hand the consumer only the newest frame.

Every frame is grabbed (so the stream never backs up and latency never grows), but a frame is
retrieved (decoded / converted) only when a consumer is waiting in ``read``; every other grabbed
frame is dropped and counted (Frigate's ``camera_fps = process_fps + skipped_fps``; Roboflow's
"grab all, retrieve the kept one"). The consumer waits at most one frame interval for the next
frame, and receives it with its capture time stamp so the frame age at detection is measurable.

A source that fails to read, or delivers nothing for ``stall_timeout_s``, is reported
"disconnected" and re-opened with exponential backoff (``backoff_initial_s`` doubling up to
``backoff_max_s``) until it works again. Files are paced to their own frame rate.

Camera settings in software, for every source kind (``configure``, live, no re-open): at most
``max_fps`` frames a second are decoded for the consumer (the others are grabbed and skipped, so a
fast source never backs up), and a frame larger than ``max_size`` is scaled down to fit it, aspect
kept, before anyone sees it (detection, captures and the live view get the same image).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from detection_service.pipeline.sources import FrameSource, SourceError
from detection_service.retry import Backoff

log = logging.getLogger(__name__)

CaptureStatus = Literal["connected", "disconnected", "stopped", "ended"]


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray  # BGR, never modified after capture (annotate a copy)
    seq: int  # number of frames grabbed up to this one: gaps between consumed frames are drops
    captured_at: float  # time.monotonic() right after grab
    wall_time: float  # time.time() at the same moment

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class Capture:
    def __init__(
        self,
        source: FrameSource,
        *,
        stall_timeout_s: float = 3.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        fallback_fps: float = 15.0,
        max_fps: float | None = None,
        max_size: tuple[int, int] | None = None,
        on_state: Callable[[str, str | None], None] | None = None,
    ) -> None:
        """``on_state("error", reason)`` when the source dies, ``on_state("running", None)`` when it
        (re)opens: the component status registry (GET /api/system/status)."""
        self.source = source
        self.on_state = on_state
        self.stall_timeout_s = stall_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.fallback_fps = fallback_fps
        self.frames_read = 0  # grabbed
        self.frames_delivered = 0  # handed to a consumer by read()
        self.frames_capped = 0  # grabbed while a consumer waited, skipped by the frame-rate cap
        self.reconnects = 0
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: Frame | None = None
        self._waiting = 0
        self._opened = False
        self._opened_at = 0.0
        self._last_grab = 0.0
        self._ended = False
        self._grab_times: deque[float] = deque(maxlen=64)
        self.max_fps: float | None = None
        self.max_size: tuple[int, int] | None = None
        self._next_due = 0.0  # monotonic time from which the frame-rate cap lets a frame through
        self.configure(max_fps=max_fps, max_size=max_size)

    # -- control --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture already started")
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.source.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop reading; returns within ``timeout``. False if the thread is still inside a blocking
        read (it exits and releases the source as soon as that read returns)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def configure(self, *, max_fps: float | None, max_size: tuple[int, int] | None) -> None:
        """Frame-rate cap (None or 0: none) and largest frame size (width, height; None: as the
        source delivers). Live: the capture thread reads both per frame."""
        self.max_fps = max_fps if max_fps and max_fps > 0 else None
        self.max_size = max_size

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    # -- consumer -------------------------------------------------------------------------

    def read(self, after_seq: int = 0, timeout: float = 1.0) -> Frame | None:
        """The newest frame with ``seq > after_seq``, or None after ``timeout``.

        Returns at once if the newest grabbed frame was already decoded; otherwise waits for the
        next grab, which the capture thread then decodes for us.
        """

        def ready() -> bool:
            latest = self._latest
            fresh = latest is not None and latest.seq > after_seq and latest.seq == self.frames_read
            return fresh or self._stop.is_set()

        with self._cond:
            self._waiting += 1
            try:
                if not self._cond.wait_for(ready, timeout) or self._stop.is_set():
                    return None
                # Counted here, when handed out: the capture thread may decode one more frame for
                # a consumer that has been woken but not yet left (a busy machine).
                self.frames_delivered += 1
                return self._latest
            finally:
                self._waiting -= 1

    # -- state ----------------------------------------------------------------------------

    @property
    def status(self) -> CaptureStatus:
        if self._ended:
            return "ended"
        if not self.running:
            return "stopped"
        if not self._opened:
            return "disconnected"
        # A fresh open counts as activity for live sources; a push source needs an actual frame.
        last = max(self._last_grab, self._opened_at if self.source.reconnectable else 0.0)
        if last == 0.0 or time.monotonic() - last > self.stall_timeout_s:
            return "disconnected"
        return "connected"

    @property
    def frames_dropped(self) -> int:
        """Frames the consumer never got because it was busy (the frame-rate cap's skips are
        ``frames_capped``, on purpose, and not counted here)."""
        lost = self.frames_read - self.frames_delivered - self.frames_capped
        return max(0, lost) + self.source.dropped_at_source()

    def source_fps(self) -> float:
        times = list(self._grab_times)
        if len(times) < 2 or time.monotonic() - times[-1] > self.stall_timeout_s:
            return 0.0
        recent = [t for t in times if times[-1] - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def stats(self) -> dict[str, object]:
        return {
            "source": self.source.name,
            "status": self.status,
            "frames_read": self.frames_read,
            "frames_delivered": self.frames_delivered,
            "frames_dropped": self.frames_dropped,
            "frames_capped": self.frames_capped,
            "source_fps": round(self.source_fps(), 1),
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }

    # -- thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        source = self.source
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        pace_start, paced = 0.0, 0
        try:
            while not self._stop.is_set():
                if not self._opened:
                    try:
                        source.open()
                    except Exception as exc:  # OpenCV and file errors alike: keep retrying
                        self._lost(f"open failed: {exc}")
                        backoff.wait(self._stop)
                        continue
                    self._opened, self._opened_at = True, time.monotonic()
                    if self.reconnects or self.last_error:
                        log.info("capture %s connected", source.name)
                    if self.on_state is not None:
                        self.on_state("running", None)
                    pace_start, paced = time.monotonic(), 0
                try:
                    ok = source.grab(timeout=0.5)
                except SourceError as exc:  # e.g. a looping file that vanished at its end
                    self._lost(str(exc))
                    ok = False
                except Exception as exc:
                    self._lost(f"read failed: {exc}")
                    ok = False
                if not ok:
                    if not source.reconnectable:
                        continue  # push source: nothing pushed lately; status goes stale by itself
                    if source.is_file and not getattr(source, "loop", True):
                        self._ended = True
                        log.info("capture %s reached the end of the file", source.name)
                        return
                    if self._opened:
                        self._lost("no frame from source")
                    source.close()
                    self._opened = False
                    self.reconnects += 1
                    backoff.wait(self._stop)
                    continue
                backoff.reset()
                now, wall = time.monotonic(), time.time()
                with self._cond:
                    self.frames_read += 1
                    self._last_grab = now
                    self._grab_times.append(now)
                    wanted = self._waiting > 0
                if wanted and not self._cap_allows(now):
                    wanted = False
                    with self._cond:
                        self.frames_capped += 1
                if wanted:
                    image = source.retrieve()
                    if image is not None:
                        image = self._fit(image)
                        with self._cond:
                            self._latest = Frame(image, self.frames_read, now, wall)
                            self._cond.notify_all()
                if source.is_file:
                    # Real-time playback: frame n is due at start + n / fps. Far behind (the
                    # machine was busy): re-anchor rather than play catch-up at full speed.
                    paced += 1
                    fps = source.nominal_fps() or self.fallback_fps
                    due = pace_start + paced / fps
                    delay = due - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    elif delay < -0.5:
                        pace_start, paced = time.monotonic(), 0
        finally:
            source.close()
            self._opened = False
            with self._cond:
                self._cond.notify_all()

    def _cap_allows(self, now: float) -> bool:
        """The frame-rate cap: frames are due on a grid 1/max_fps apart; one up to half an interval
        early passes (source jitter must not halve a 15 fps camera capped at 15), and the grid is
        re-anchored after a pause so a late consumer gets no burst."""
        fps = self.max_fps
        if fps is None:
            return True
        interval = 1.0 / fps
        if now < self._next_due - interval / 2:
            return False
        self._next_due = max(self._next_due + interval, now + interval / 2)
        return True

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """Scale down to fit ``max_size`` (turned to the frame's orientation, so a portrait camera
        is not squeezed into a landscape box); smaller frames stay as they are."""
        size = self.max_size
        if size is None:
            return image
        height, width = image.shape[:2]
        long_side, short_side = max(size), min(size)
        bound_w, bound_h = (long_side, short_side) if width >= height else (short_side, long_side)
        scale = min(bound_w / width, bound_h / height)
        if scale >= 1.0:
            return image
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image, target, interpolation=cv2.INTER_AREA)

    def _lost(self, reason: str) -> None:
        if reason != self.last_error:
            log.warning("capture %s: %s", self.source.name, reason)
            if self.on_state is not None:
                self.on_state("error", f"{self.source.name}: {reason}")
        self.last_error = reason
        self._opened = False
