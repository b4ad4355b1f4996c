"""Motion gate on synthetic frames."""

from __future__ import annotations

import numpy as np

from detection_service.pipeline.motion import MotionDetector, MotionGate


def _scene(rng: np.random.Generator, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame += rng.integers(0, 4, frame.shape, dtype=np.uint8)  # sensor noise must not count
    if box:
        x1, y1, x2, y2 = box
        frame[y1:y2, x1:x2] = (20, 220, 240)
    return frame


def test_detector_sees_a_moving_object_not_noise() -> None:
    rng = np.random.default_rng(0)
    motion = MotionDetector()
    assert not motion.update(_scene(rng)).motion  # first frame: background only
    for _ in range(5):
        assert not motion.update(_scene(rng)).motion
    result = motion.update(_scene(rng, (300, 100, 380, 260)))
    assert result.motion and result.area_ratio > 0.01
    (x1, y1, x2, y2), *_ = result.boxes
    assert x1 <= 300 + 8 and x2 >= 380 - 8 and y1 <= 100 + 8 and y2 >= 260 - 8  # full-frame pixels
    # It stops being motion once it stands still long enough to join the background.
    results = [motion.update(_scene(rng, (300, 100, 380, 260))).motion for _ in range(40)]
    assert not results[-1]


def test_gate_modes_periodic_check_and_refresh() -> None:
    rng = np.random.default_rng(1)
    gate = MotionGate("on", full_check_interval_s=2.0, refresh_interval_s=0.5)
    assert gate.decide(_scene(rng), 0.0).reason == "periodic"  # nothing checked yet
    assert not gate.decide(_scene(rng), 0.1).run
    assert gate.decide(_scene(rng, (10, 10, 200, 200)), 0.2).reason == "motion"
    # still scene: idle, until something is watched (refresh) or the periodic check is due
    gate2 = MotionGate("on", full_check_interval_s=2.0, refresh_interval_s=0.5)
    gate2.decide(_scene(rng), 0.0)
    assert gate2.decide(_scene(rng), 0.4, watching=True).reason == "idle"
    assert gate2.decide(_scene(rng), 0.6, watching=True).reason == "refresh"
    assert gate2.decide(_scene(rng), 1.0).reason == "idle"
    assert gate2.decide(_scene(rng), 2.7).reason == "periodic"
    gate2.mode = "off"
    assert all(gate2.decide(_scene(rng), 2.7 + i * 0.01).reason == "off" for i in range(3))
