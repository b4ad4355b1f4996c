"""What watching the service costs the pipeline: prints ONE JSON line, logs go to stderr.

    aidoor bench overhead [--weights best.pt] [--video door.mp4] [--imgsz 320] [--rounds 3]
                          [--seconds 15] [--sample-s 10] [--scrape-s 15]

The pipeline with the monitoring ON (the system_logs handler on the root logger, the status poller
and performance sampler (``services/performance.Monitoring``, writing its rows every
``--sample-s``, default 10 as the setting), Prometheus observations per frame, and a scraper
rendering ``/metrics``'s registries every ``--scrape-s``) against the same pipeline with all of it
OFF (observations disabled, no handler, no monitor). Both in one run, on the same frames and model:
motion gating off, a source from memory faster than the detector (the pipeline runs flat out, as
``aidoor bench pipeline`` phase 2). The modes alternate within each round (off/on, then on/off) so
a machine that slows down over the run hurts both alike; each run gets a fresh database.

``overhead_ratio`` = median CPU per frame off / on: the fps ratio the pipeline reaches when the
cores are its own (target >= 0.99). Wall-clock fps on a shared machine swings 2x between identical
runs (other processes), so it is reported too (``wall_fps_ratio``, medians) but cannot show a 1 %
effect there. ``attributed_ratio`` counts the cost where it is spent: 1 - (CPU of the monitoring's
own threads + the per-frame observations) / the on-runs' CPU. Model: ``--weights``, else the
deployed model, else a random-init YOLO11n (speed is what counts here). Frames: samples of
``--video``, else of the demo video, else synthetic ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from detection_service.bench import run_and_print
from detection_service.bench.pipeline import _threads_cpu_s

log = logging.getLogger("aidoor.bench.overhead")

SAMPLE_FRAMES = 40
WARMUP_S = 3.0
# The threads the monitoring adds (their CPU is its cost; services/performance.py, component_status.py,
# system_logs.py, the bus subscriber counting events, this benchmark's scraper).
MONITOR_THREADS = (
    "status-poll",
    "performance-sampler",
    "component-status-writer",
    "system-log-writer",
    "bus-metrics",
    "bench-scraper",
)


def _observation_us() -> float:
    """CPU microseconds of one frame's Prometheus observations (observe_frame + observe_inference)."""
    from detection_service import metrics

    n = 20_000
    started = time.process_time()
    for _ in range(n):
        metrics.observe_frame(0)
        metrics.observe_inference(0.02, 0.05)
    return (time.process_time() - started) / n * 1e6


def _monitor_cpu_s(threads_cpu: dict[int, float]) -> float:
    names = {t.native_id: t.name for t in threading.enumerate()}
    return sum(cpu for tid, cpu in threads_cpu.items() if names.get(tid) in MONITOR_THREADS)


def _frames(video: Path | None, settings: Any) -> tuple[list[np.ndarray], str]:
    from detection_service import demo_video
    from detection_service.bench.pipeline import sample_frames

    if video is None:
        try:
            video = demo_video.ensure(settings.data_dir)
        except Exception as exc:  # no shared datasets: synthetic frames serve a speed figure as well
            log.info("no demo video (%s): synthetic frames", exc)
    if video is not None:
        return sample_frames(Path(video), SAMPLE_FRAMES), str(video)
    rng = np.random.default_rng(0)
    base = np.tile(np.linspace(30, 200, 640, dtype=np.uint8), (360, 1))
    frames = []
    for _ in range(SAMPLE_FRAMES):
        image = np.dstack([base, base, base]).copy()
        image[100:260, 200:360] = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
        frames.append(image)
    return frames, "synthetic"


class _Scraper:
    """Renders the two /metrics registries every ``interval_s`` (what a Prometheus server does)."""

    def __init__(self, app_registry: Any, interval_s: float = 1.0) -> None:
        self.app_registry = app_registry
        self.interval_s = interval_s
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from prometheus_client import REGISTRY, generate_latest

        while not self._stop.wait(self.interval_s):
            generate_latest(REGISTRY)
            generate_latest(self.app_registry)
            self.scrapes += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _measure(
    env: dict[str, Any],
    holder: Any,
    frames: list[np.ndarray],
    source_fps: float,
    seconds: float,
    on: bool,
    work: Path,
    sample_s: float,
    scrape_s: float,
) -> dict[str, Any]:
    from detection_service import metrics
    from detection_service.bench.pipeline import MemorySource, _pipeline
    from detection_service.services.performance import Monitoring
    from detection_service.services.settings import SettingsService
    from detection_service.services.system_logs import install_log_handler, remove_log_handler

    metrics.set_enabled(on)
    session_factory = env["session_factory"]
    pipeline = _pipeline(env, holder, motion_mode="off", source_factory=lambda _: MemorySource(frames, source_fps))
    handler = monitoring = scraper = None
    if on:
        settings_service = SettingsService(session_factory)
        handler = install_log_handler(session_factory, settings_service)
        monitoring = Monitoring(
            session_factory=session_factory,
            engine=session_factory.kw["bind"],
            store=env["store"],
            dagster=None,
            settings_service=settings_service,
            data_dir=work,
            bus=env["bus"],
            pipeline_status=pipeline.status,
        )
        monitoring.monitor.sample_s = sample_s
        pipeline.on_camera_state = monitoring.report_camera
        monitoring.start()
        scraper = _Scraper(monitoring.metrics_registry, scrape_s)
    process = psutil.Process()
    pipeline.start()
    try:
        time.sleep(WARMUP_S)
        n0, t0, cpu0 = pipeline.inferences, time.monotonic(), _cpu_s(process)
        monitor0 = _monitor_cpu_s(_threads_cpu_s())
        time.sleep(seconds)
        frames_done = pipeline.inferences - n0
        fps = frames_done / (time.monotonic() - t0)
        cpu_s = _cpu_s(process) - cpu0
        monitor_s = _monitor_cpu_s(_threads_cpu_s()) - monitor0
        cpu_ms = cpu_s * 1000 / max(frames_done, 1)
    finally:
        pipeline.close(10)
        samples = 0
        if scraper is not None:
            scraper.close()
        if monitoring is not None:
            monitoring.close()
            samples = monitoring.registry.rows_written
        if handler is not None:
            remove_log_handler(handler)
        metrics.set_enabled(True)
    result: dict[str, Any] = {"mode": "on" if on else "off", "fps": round(fps, 2), "cpu_ms_per_frame": round(cpu_ms, 2)}
    if on:
        result.update(
            status_rows=samples,
            scrapes=scraper.scrapes if scraper else 0,
            cpu_s=round(cpu_s, 3),
            monitor_threads_cpu_s=round(monitor_s, 3),
            frames=frames_done,
        )
    return result


def run(
    *,
    weights: Path | None = None,
    video: Path | None = None,
    imgsz: int = 320,
    backend: str = "auto",
    rounds: int = 3,
    seconds: float = 10.0,
    sample_s: float = 10.0,
    scrape_s: float = 15.0,
    settings: Any = None,
) -> dict[str, Any]:
    from detection_service.bench.pipeline import _Env, _median_ms, current_model_weights, random_init_weights
    from detection_service.config import Settings
    from detection_service.ml.training import min_confidence
    from detection_service.ml.ultralytics_env import configure_offline
    from detection_service.pipeline.detector import DetectorHolder
    from schemas.settings import DetectionSettings

    settings = settings or Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_offline(settings.data_dir)
    work = Path(tempfile.mkdtemp(prefix="aidoor-bench-overhead-"))
    envs = _Env(work)
    holder = DetectorHolder()
    try:
        if weights is not None:
            model_id = Path(weights).stem
        elif (current := current_model_weights(settings)) is not None:
            model_id, weights = current
        else:
            weights = random_init_weights(work / "random-init" / "yolo11n-random.pt")
            model_id = "yolo11n-random-init"
        frames, frames_from = _frames(video, settings)
        cache_dir = settings.data_dir / "cache" / "bench-exports"
        detector = holder.load(Path(weights).resolve(), backend, imgsz, cache_dir, model_id=model_id)  # type: ignore[arg-type]
        conf = min_confidence(DetectionSettings().confidence_threshold, "medium")
        detector_fps = 1000 / _median_ms(lambda f: detector.detect(f, conf), frames)
        source_fps = max(30.0, 2 * detector_fps)
        per_round: list[dict[str, Any]] = []
        for index in range(rounds):
            order = (False, True) if index % 2 == 0 else (True, False)
            for on in order:
                log.info("round %d/%d: monitoring %s, %.0f s", index + 1, rounds, "on" if on else "off", seconds)
                per_round.append(
                    {
                        "round": index + 1,
                        **_measure(envs.new(), holder, frames, source_fps, seconds, on, work, sample_s, scrape_s),
                    }
                )
        fps_on = statistics.median(r["fps"] for r in per_round if r["mode"] == "on")
        fps_off = statistics.median(r["fps"] for r in per_round if r["mode"] == "off")
        cpu_on = statistics.median(r["cpu_ms_per_frame"] for r in per_round if r["mode"] == "on")
        cpu_off = statistics.median(r["cpu_ms_per_frame"] for r in per_round if r["mode"] == "off")
        # The cost itself, counted where it is spent: the monitoring threads' CPU plus the per-frame
        # observations, as a share of the on-runs' CPU (stable where A/B timing is not).
        observation_us = _observation_us()
        on_runs = [r for r in per_round if r["mode"] == "on"]
        spent = sum(r["monitor_threads_cpu_s"] + r["frames"] * observation_us / 1e6 for r in on_runs)
        total = sum(r["cpu_s"] for r in on_runs)
        return {
            "benchmark": "overhead",
            # fps per CPU-second: what the pipeline reaches when the cores are its own.
            "overhead_ratio": round(cpu_off / cpu_on, 4) if cpu_on else None,
            "wall_fps_ratio": round(fps_on / fps_off, 4) if fps_off else None,
            "attributed_ratio": round(1 - spent / total, 4) if total else None,
            "monitor_cpu_share": round(spent / total, 5) if total else None,
            "observation_us_per_frame": round(observation_us, 2),
            "cpu_ms_per_frame_on": cpu_on,
            "cpu_ms_per_frame_off": cpu_off,
            "fps_on": round(fps_on, 2),
            "fps_off": round(fps_off, 2),
            "detector_fps": round(detector_fps, 2),
            "rounds": per_round,
            "seconds_per_run": seconds,
            "sample_s": sample_s,
            "scrape_s": scrape_s,
            "model": model_id,
            "backend": detector.backend,
            "imgsz": imgsz,
            "frames": frames_from,
            "cpu_count": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        envs.close()
        holder.swap(None)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None, settings: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="model .pt (default: the deployed model, else random init)")
    parser.add_argument("--video", type=Path, help="video whose frames are fed (default: the demo video)")
    parser.add_argument("--imgsz", type=int, default=320, help="detector input size (default 320)")
    parser.add_argument(
        "--backend", default="auto", help="detector backend: auto (as the service), torch, onnx, openvino"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off+on runs (default 3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run (default 15)")
    parser.add_argument(
        "--sample-s", type=float, default=10.0, help="sampler interval (default 10, the setting's default)"
    )
    parser.add_argument("--scrape-s", type=float, default=15.0, help="seconds between /metrics scrapes (default 15)")
    args = parser.parse_args(argv)
    return run_and_print(
        run,
        weights=args.weights,
        video=args.video,
        imgsz=args.imgsz,
        backend=args.backend,
        rounds=args.rounds,
        seconds=args.seconds,
        sample_s=args.sample_s,
        scrape_s=args.scrape_s,
        settings=settings,
    )


if __name__ == "__main__":
    raise SystemExit(main())
