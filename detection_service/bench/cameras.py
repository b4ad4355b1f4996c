"""Several cameras on one detector: prints ONE JSON line, logs go to stderr.

    aidoor bench cameras [--cameras 1,2,4] [--seconds 12] [--imgsz 320] [--weights best.pt] [--source-fps 120]

For each camera count N: N complete camera pipelines (capture -> detector -> tracker -> event
recorder, ``DetectionPipeline`` with motion gating off, each with its own camera_id) share ONE
detector through ``BatchingDetector`` (pipeline/batching.py). Every camera is fed from memory at
``--source-fps`` (default 120), so the detector is the bottleneck and each capture keeps only its
newest frame. (The capture hands over only a frame grabbed after its consumer asked, so a source
near the detector's rate would round the rate down to source_fps / k.) Events go to a throw-away SQLite
database and local store.

Model: ``--weights`` (a .pt, torch backend: the one with a batched forward pass), else a
random-init YOLO11n with our four classes (speed as a trained one; no download).

Per N: ``per_camera_fps`` (detector runs per second of each camera's pipeline), ``total_fps`` (their
sum: inferences per second), ``mean_batch_size`` (frames per batched inference), ``min_share``
(the slowest camera's fps / the fair share total_fps / N), ``frames_dropped`` (grabbed frames each
capture dropped for newer ones). Then ``speedup`` = total_fps at the largest N / total_fps at N=1
(target >= 1.3) and ``min_share_worst`` (target >= 0.8).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detection_service.bench import run_and_print

log = logging.getLogger("aidoor.bench.cameras")

SPEEDUP_TARGET = 1.3
SHARE_TARGET = 0.8


def synthetic_frames(count: int = 24, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[np.ndarray]:
    """A door-like scene: a textured background and a box walking across it."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = rng.integers(40, 200, (height // 8, width // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))
    frames = []
    for i in range(count):
        image = base.copy()
        x = int((i / count) * (width - 120))
        image[height // 4 : height // 4 + 220, x : x + 100] = (30, 60, 200)
        frames.append(image)
    return frames


def _add_cameras(session_factory: Any, count: int) -> None:
    from schemas.db import Camera

    with session_factory.begin() as session:
        for camera_id in range(2, count + 1):
            session.add(Camera(id=camera_id, name=f"bench-{camera_id}", source="bench"))


def _measure(
    env: dict[str, Any], holder: Any, cameras: int, frames: list[np.ndarray], source_fps: float, seconds: float
) -> dict[str, Any]:
    from detection_service.bench.pipeline import MemorySource
    from detection_service.pipeline.batching import BatchingDetector
    from detection_service.pipeline.config import PipelineConfig
    from detection_service.pipeline.runner import DetectionPipeline
    from schemas.settings import CameraSettings, DetectionSettings

    _add_cameras(env["session_factory"], cameras)
    batcher = BatchingDetector()
    pipelines = [
        DetectionPipeline(
            session_factory=env["session_factory"],
            store=env["store"],
            bus=env["bus"],
            holder=holder,
            camera=CameraSettings(source="bench", fps=60),  # the cap stays above what is fed
            detection=DetectionSettings(),
            config=PipelineConfig(motion_mode="off"),
            # Each camera starts at another frame, so the cameras do not see the same images.
            source_factory=lambda _, k=k: MemorySource(frames[k:] + frames[:k], source_fps),
            camera_id=k + 1,
            batcher=batcher,
        )
        for k in range(cameras)
    ]
    for pipeline in pipelines:
        pipeline.start()
    try:
        time.sleep(min(4.0, seconds / 3))  # warm-up: first batches, tracker, writer
        start_counts = [p.inferences for p in pipelines]
        start_batches, start_frames = batcher.batches, batcher.frames
        dropped0 = [p.status()["dropped_frames"] for p in pipelines]
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        counts = [p.inferences - c for p, c in zip(pipelines, start_counts, strict=True)]
        batches, batched = batcher.batches - start_batches, batcher.frames - start_frames
        dropped = [p.status()["dropped_frames"] - d for p, d in zip(pipelines, dropped0, strict=True)]
        errors = [p.last_error for p in pipelines if p.last_error]
    finally:
        for pipeline in pipelines:
            pipeline.close(10)
        batcher.close()
    per_camera = [c / elapsed for c in counts]
    total = sum(per_camera)
    fair = total / cameras
    return {
        "cameras": cameras,
        "per_camera_fps": [round(f, 2) for f in per_camera],
        "total_fps": round(total, 2),
        "mean_batch_size": round(batched / batches, 2) if batches else 0.0,
        "batches": batches,
        "min_share": round(min(per_camera) / fair, 3) if fair else 0.0,
        "frames_dropped": dropped,
        "errors": errors[:3],
    }


def run(
    cameras: Sequence[int] = (1, 2, 4),
    seconds: float = 12.0,
    imgsz: int = 320,
    weights: Path | None = None,
    source_fps: float = 120.0,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    from detection_service.bench.pipeline import _Env, random_init_weights
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.pipeline.detector import DetectorHolder, create_detector

    work = Path(tempfile.mkdtemp(prefix="aidoor-bench-cameras-"))
    env_maker = _Env(work)
    try:
        configure_offline(data_dir or work)
        note = None
        if weights is None:
            weights = random_init_weights(work / "yolo11n-random.pt")
            note = "random-init YOLO11n: speed figures only (its boxes are noise)"
        detector = create_detector(Path(weights), "torch", imgsz, cache_dir=work / "exports")
        holder = DetectorHolder(detector)
        frames = synthetic_frames()
        runs = []
        for count in cameras:
            log.info("measuring %d camera(s) for %.0f s", count, seconds)
            runs.append(_measure(env_maker.new(), holder, count, frames, source_fps, seconds))
        holder.unload()
    finally:
        env_maker.close()
        shutil.rmtree(work, ignore_errors=True)
    by_count = {r["cameras"]: r for r in runs}
    base = by_count.get(1)
    most = runs[-1] if runs else None
    speedup = round(most["total_fps"] / base["total_fps"], 3) if base and most and base["total_fps"] else None
    worst_share = min((r["min_share"] for r in runs), default=None)
    return {
        "benchmark": "cameras",
        "backend": "torch",
        "imgsz": imgsz,
        "source_fps": source_fps,
        "seconds": seconds,
        "runs": runs,
        "speedup": speedup,
        "speedup_target": SPEEDUP_TARGET,
        "min_share_worst": worst_share,
        "min_share_target": SHARE_TARGET,
        "targets_met": bool(speedup is not None and speedup >= SPEEDUP_TARGET and (worst_share or 0) >= SHARE_TARGET),
        "note": note,
    }


def main(argv: Sequence[str] | None = None, settings: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench cameras", description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="1,2,4", help="camera counts to measure, e.g. 1,2,4")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds per camera count")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--weights", type=Path, default=None, help="a .pt (default: random-init YOLO11n)")
    parser.add_argument("--source-fps", type=float, default=120.0, help="frames per second fed to each camera")
    args = parser.parse_args(argv)
    try:
        counts = [int(c) for c in args.cameras.split(",") if c.strip()]
    except ValueError:
        parser.error("--cameras takes counts like 1,2,4")
    if not counts or min(counts) < 1:
        parser.error("--cameras takes counts >= 1")
    return run_and_print(
        run,
        cameras=counts,
        seconds=args.seconds,
        imgsz=args.imgsz,
        weights=args.weights,
        source_fps=args.source_fps,
        data_dir=settings.data_dir if settings is not None else None,
    )
