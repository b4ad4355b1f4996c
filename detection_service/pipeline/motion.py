"""Motion gate: run the detector only when something moves, or when a periodic check is due.

Motion is measured on a small grey copy of the frame (``width`` px wide, Gaussian-blurred)
against a running average of past frames, so slow light changes fade into the background while
a person or a hand with a parcel does not. The gate also runs the detector

- every ``full_check_interval_s`` regardless of motion (objects that appeared while nothing moved
  enough, and the stationary re-check that keeps a parked package "present"), and
- every ``refresh_interval_s`` while the caller says something is being watched (open events or
  unconfirmed tracks), so a still person or package keeps being seen and tracked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

MotionMode = Literal["on", "off"]
GateReason = Literal["off", "motion", "periodic", "refresh", "idle"]
Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in full-frame pixels


@dataclass(frozen=True, slots=True)
class MotionResult:
    motion: bool
    area_ratio: float  # moving area / frame area
    boxes: list[Box] = field(default_factory=list)


class MotionDetector:
    def __init__(
        self,
        width: int = 160,
        threshold: int = 25,
        min_area_ratio: float = 0.003,
        alpha: float = 0.1,
        blur: int = 5,
    ) -> None:
        self.width = width
        self.threshold = threshold  # grey-level difference that counts as changed
        self.min_area_ratio = min_area_ratio  # changed area that counts as motion
        self.alpha = alpha  # weight of the new frame in the running average
        self.blur = blur | 1
        self._avg: np.ndarray | None = None

    def reset(self) -> None:
        self._avg = None

    def update(self, frame_bgr: np.ndarray) -> MotionResult:
        h, w = frame_bgr.shape[:2]
        scale = self.width / w
        small = cv2.resize(frame_bgr, (self.width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (self.blur, self.blur), 0)
        if self._avg is None or self._avg.shape != grey.shape:
            self._avg = grey.astype(np.float32)
            return MotionResult(False, 0.0)
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._avg))
        cv2.accumulateWeighted(grey, self._avg, self.alpha)
        _, mask = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        mask = cv2.dilate(mask, None, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        total = float(mask.shape[0] * mask.shape[1])
        min_contour = total * self.min_area_ratio / 4  # specks below this are noise
        boxes: list[Box] = []
        area = 0.0
        for contour in contours:
            contour_area = cv2.contourArea(contour)
            if contour_area < min_contour:
                continue
            area += contour_area
            x, y, bw, bh = cv2.boundingRect(contour)
            boxes.append((int(x / scale), int(y / scale), int((x + bw) / scale), int((y + bh) / scale)))
        ratio = area / total
        return MotionResult(ratio >= self.min_area_ratio, ratio, boxes)


@dataclass(frozen=True, slots=True)
class GateDecision:
    run: bool
    reason: GateReason
    motion: MotionResult | None


class MotionGate:
    def __init__(
        self,
        mode: MotionMode = "on",
        full_check_interval_s: float = 2.0,
        refresh_interval_s: float = 0.5,
        detector: MotionDetector | None = None,
    ) -> None:
        self.mode: MotionMode = mode
        self.full_check_interval_s = full_check_interval_s
        self.refresh_interval_s = refresh_interval_s
        self.detector = detector or MotionDetector()
        self._last_run = float("-inf")

    def reset(self) -> None:
        self.detector.reset()
        self._last_run = float("-inf")

    def decide(self, frame_bgr: np.ndarray, now: float, watching: bool = False) -> GateDecision:
        """Whether to run the detector on this frame. ``watching``: something is tracked that must
        keep being seen (see module doc)."""
        if self.mode == "off":
            self._last_run = now
            return GateDecision(True, "off", None)
        # Always update the background, even when a periodic check decides anyway.
        motion = self.detector.update(frame_bgr)
        since = now - self._last_run
        if motion.motion:
            reason: GateReason = "motion"
        elif since >= self.full_check_interval_s:
            reason = "periodic"
        elif watching and since >= self.refresh_interval_s:
            reason = "refresh"
        else:
            return GateDecision(False, "idle", motion)
        self._last_run = now
        return GateDecision(True, reason, motion)
