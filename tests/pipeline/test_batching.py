"""The detector shared by several cameras (pipeline/batching.py) and two camera pipelines on it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.bus import EventBus
from detection_service.pipeline.batching import BatchingDetector, Superseded
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import Detection, Detector, DetectorHolder
from detection_service.pipeline.runner import DetectionPipeline
from schemas.db import Camera, DetectionEvent, ObjectType
from schemas.settings import CameraSettings, DetectionSettings
from tests.pipeline.conftest import det, wait_until, write_video


class SlowBatchDetector(Detector):
    """A batch costs ``base_s + per_frame_s * n`` (a batched forward pass is cheaper per frame);
    each frame's box carries the frame's first pixel as its confidence, so results can be matched."""

    def __init__(self, base_s: float = 0.02, per_frame_s: float = 0.004) -> None:
        super().__init__()
        self.backend, self.model_id, self.imgsz, self.names = "slow", "slow", 64, {0: "person"}
        self.base_s, self.per_frame_s = base_s, per_frame_s
        self.batch_sizes: list[int] = []

    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]:
        return self._detect_batch([frame_bgr], conf)[0]

    def _detect_batch(self, frames_bgr: list[np.ndarray], conf: float) -> list[list[Detection]]:
        self.batch_sizes.append(len(frames_bgr))
        time.sleep(self.base_s + self.per_frame_s * len(frames_bgr))
        return [[det(0, 0, 10, 10, "person", float(f[0, 0, 0]) / 255)] for f in frames_bgr]


def _feed(batcher: BatchingDetector, detector: Detector, camera_id: int, stop: threading.Event, out: dict) -> None:
    """A camera fed faster than the detector: a new frame as soon as the last one is back."""
    image = np.full((8, 8, 3), 10 * camera_id, np.uint8)
    batcher.register(camera_id)
    try:
        while not stop.is_set():
            boxes = batcher.detect(camera_id, detector, image, 0.0)
            assert boxes[0].confidence == pytest.approx(10 * camera_id / 255)  # its own frame's result
            out[camera_id] = out.get(camera_id, 0) + 1
    finally:
        batcher.unregister(camera_id)


def _run_cameras(cameras: int, max_batch: int, seconds: float = 1.0) -> tuple[dict[int, int], SlowBatchDetector]:
    detector = SlowBatchDetector()
    batcher = BatchingDetector(max_batch=max_batch)
    stop, counts = threading.Event(), {}
    threads = [
        threading.Thread(target=_feed, args=(batcher, detector, c, stop, counts), daemon=True)
        for c in range(1, cameras + 1)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(2)
    batcher.close()
    return counts, detector


def test_waiting_cameras_share_one_batch_and_a_fair_share() -> None:
    one, _ = _run_cameras(1, max_batch=8)
    four, detector = _run_cameras(4, max_batch=8)
    assert set(four) == {1, 2, 3, 4}
    sizes = detector.batch_sizes[2:]  # after the first cameras arrived
    assert sum(sizes) / len(sizes) > 3.0  # all four waiting cameras in (nearly) every batch
    assert sum(four.values()) > 1.8 * one[1]  # batching: more frames per second in all
    fair = sum(four.values()) / 4
    assert min(four.values()) >= 0.8 * fair


def test_round_robin_when_more_cameras_wait_than_a_batch_holds() -> None:
    counts, detector = _run_cameras(5, max_batch=2)
    assert max(detector.batch_sizes) == 2
    fair = sum(counts.values()) / 5
    assert min(counts.values()) >= 0.8 * fair, counts


def test_newest_frame_wins_per_camera() -> None:
    detector = SlowBatchDetector(base_s=0.15)
    batcher = BatchingDetector()
    try:
        busy = batcher.submit(9, detector, np.full((8, 8, 3), 1, np.uint8), 0.0)  # occupies the detector
        assert wait_until(lambda: detector.batch_sizes == [1], 2)
        old = batcher.submit(1, detector, np.full((8, 8, 3), 50, np.uint8), 0.0)
        new = batcher.submit(1, detector, np.full((8, 8, 3), 100, np.uint8), 0.0)
        assert old.done.wait(0.05) and isinstance(old.error, Superseded)
        assert new.done.wait(2) and new.error is None and new.result is not None
        assert new.result[0].confidence == pytest.approx(100 / 255)
        assert busy.done.wait(2)
        stats = batcher.stats()
        assert stats["cameras"]["1"] == {
            "inferences": 1,
            "dropped": 1,
            "mean_wait_ms": stats["cameras"]["1"]["mean_wait_ms"],
        }
        # Per-camera confidence floors: the batch runs at the lowest, each keeps its own.
        high = batcher.submit(2, detector, np.full((8, 8, 3), 100, np.uint8), 0.5)
        low = batcher.submit(3, detector, np.full((8, 8, 3), 100, np.uint8), 0.1)
        assert high.done.wait(2) and low.done.wait(2)
        assert high.result == [] and len(low.result or []) == 1
    finally:
        batcher.close()


def test_a_failed_batch_fails_each_caller_and_the_next_batch_runs() -> None:
    class Flaky(SlowBatchDetector):
        def _detect_batch(self, frames_bgr, conf):
            if not self.batch_sizes:
                self.batch_sizes.append(len(frames_bgr))
                raise RuntimeError("boom")
            return super()._detect_batch(frames_bgr, conf)

    detector, batcher = Flaky(base_s=0.0), BatchingDetector()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.detect(1, detector, np.zeros((8, 8, 3), np.uint8), 0.0)
        assert len(batcher.detect(1, detector, np.zeros((8, 8, 3), np.uint8), 0.0)) == 1
    finally:
        batcher.close()


@pytest.mark.usefixtures("offline")
def test_two_cameras_on_one_detector_record_their_own_events(session_factory, store, tmp_path: Path) -> None:
    """Two camera pipelines (two video files) share one scripted detector through the batcher:
    each records its events with its own camera_id, and the detector saw batches of two."""
    with session_factory.begin() as s:
        s.add(Camera(id=2, name="back door", source="unused"))

    class TwoDoorDetector(SlowBatchDetector):
        def _detect_batch(self, frames_bgr, conf):
            self.batch_sizes.append(len(frames_bgr))
            time.sleep(0.12)  # slower than the 15 fps videos: both cameras wait, so they share batches
            # Camera 1's video is 320 wide (a person); camera 2's 288 wide (a package).
            return [
                [det(40, 30, 120, 230, "person", 0.9)] if f.shape[1] == 320 else [det(20, 20, 90, 90, "package", 0.8)]
                for f in frames_bgr
            ]

    detector = TwoDoorDetector()
    holder, bus, batcher = DetectorHolder(detector), EventBus(), BatchingDetector()
    videos = {
        1: write_video(tmp_path / "front.avi", frames=60, fps=15, size=(320, 240)),
        2: write_video(tmp_path / "back.avi", frames=60, fps=15, size=(288, 240)),
    }
    pipelines = [
        DetectionPipeline(
            session_factory=session_factory,
            store=store,
            bus=bus,
            holder=holder,
            camera=CameraSettings(source=str(video), fps=15),
            detection=DetectionSettings(capture_count=1),
            config=PipelineConfig(motion_mode="off", stall_timeout_s=0.6, retry_initial_s=0.05),
            camera_id=camera_id,
            batcher=batcher,
        )
        for camera_id, video in videos.items()
    ]
    for p in pipelines:
        p.start()
    try:
        assert wait_until(lambda: all(p.status()["detection_count"] >= 1 for p in pipelines), 10)
        assert [p.status()["camera_id"] for p in pipelines] == [1, 2]
    finally:
        for p in pipelines:
            p.close()
        batcher.close()
    assert max(detector.batch_sizes) == 2
    with session_factory() as s:
        rows = s.execute(
            sa.select(DetectionEvent.camera_id, ObjectType.code).join(
                ObjectType, DetectionEvent.object_type_id == ObjectType.id
            )
        ).all()
    assert sorted(set(map(tuple, rows))) == [(1, "person"), (2, "package")]


def test_bench_cameras_prints_its_figures(offline: Path) -> None:
    """``aidoor bench cameras`` on a tiny input: real pipelines and a real (random-init) YOLO."""
    from detection_service.bench import cameras

    result = cameras.run(cameras=(1, 2), seconds=1.5, imgsz=64, data_dir=offline)
    one, two = result["runs"]
    assert one["cameras"] == 1 and two["cameras"] == 2 and len(two["per_camera_fps"]) == 2
    assert one["total_fps"] > 0 and two["mean_batch_size"] > 1.0 and not two["errors"]
    assert result["speedup"] == pytest.approx(two["total_fps"] / one["total_fps"], abs=0.01)


def test_a_camera_that_sends_nothing_does_not_slow_the_others() -> None:
    """Registered (its pipeline runs) but its source is down: the others' batches do not wait for it."""
    detector = SlowBatchDetector(base_s=0.02, per_frame_s=0.0)
    batcher = BatchingDetector(gather_s=0.05)
    batcher.register(7)  # never sends a frame
    try:
        batcher.detect(7, detector, np.zeros((8, 8, 3), np.uint8), 0.0)  # once, long ago
        time.sleep(0.3)
        started = time.monotonic()
        for _ in range(10):
            batcher.detect(1, detector, np.zeros((8, 8, 3), np.uint8), 0.0)
        per_call = (time.monotonic() - started) / 10
        assert per_call < 0.02 + 0.012, per_call  # not 0.02 + a gather delay each
    finally:
        batcher.close()
