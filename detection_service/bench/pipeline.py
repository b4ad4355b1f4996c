"""Realtime pipeline benchmark: prints ONE JSON line (issue 4's figures), logs go to stderr.

    aidoor bench pipeline [--minutes N] [--weights best.pt] [--video door.mp4] [--imgsz 320] [--data data.yaml]

Model: ``--weights`` if given, else the model marked current in the database (AIDOOR_*), else a
random-init YOLO11n with our four classes. A random-init model gives valid speed figures but no
real detections, so its event counts are meaningless (the output says so in ``note``).

Video: ``--video``, else the demo video (``aidoor demo-video``; built under the data dir if
missing). Events are written to a throw-away SQLite database and local store in a temp dir.

Phases, all on the same machine and frames:
1. backends: median detector time over sample frames of the video at ``imgsz``: torch at each
   thread count 1..cpu_count (``torch_fps`` = the best), ONNX Runtime, OpenVINO; boxes of the
   fastest backend compared with torch's (``boxes_match``: share matched at IoU >= 0.9, same class).
2. ``pipeline_fps`` / ``ratio``: the pipeline with motion gating off, fed from memory faster than
   the detector (2x its fps), vs ``detector_fps`` (the raw detector the pipeline uses).
3. frame age: gating off, a 30 fps source; age = capture -> end of detection + tracking.
4. gated vs ungated: one pass of the video at its real frame rate with motion gating on, one with
   it off: detector runs and events of each.
5. soak: ``--minutes`` of the gated pipeline looping the video; RSS at its start and end.

Also: ``int8_fps`` / ``int8_map50_delta``: the INT8 backend (``ml.quantize.ensure_int8``: calibrated
on the training split of ``--data``, default the bootstrap dataset prepared under the data dir,
checked on its valid split; cached, so a second run reuses it), and the CPU cost per inference:
``cpu_ms_per_inference`` (the whole process, every thread, over one real-time pass of the video
with gating off: a busy door) with ``cpu_ms_by_thread``, against ``plain_cpu_ms_per_frame`` (a plain
Ultralytics ``model.track(source=video, stream=True)`` loop, torch, same weights and imgsz).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sqlalchemy as sa

from detection_service.bench import run_and_print
from detection_service.pipeline.sources import FrameSource

log = logging.getLogger("aidoor.bench.pipeline")

SAMPLE_FRAMES = 40
AGE_SOURCE_FPS = 30.0


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _threads_cpu_s() -> dict[int, float]:
    """CPU seconds per OS thread of this process (Linux /proc; empty elsewhere)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _thread_label(tid: int, names: dict[int, str]) -> str:
    name = names.get(tid)
    if name is None:
        return "native (runtime workers)"  # OpenVINO / ORT / OpenMP / FFmpeg threads
    if name.startswith("capture-"):
        return "capture"
    return name


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# --------------------------------------------------------------------------- inputs


def random_init_weights(path: Path) -> Path:
    """YOLO11n with our classes and random weights (speed is the same as a trained one)."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from detection_service.ml.classes import MODEL_CLASSES

    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.model = DetectionModel("yolo11n.yaml", nc=len(MODEL_CLASSES), verbose=False)
    model.model.names = dict(enumerate(MODEL_CLASSES))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def current_model_weights(settings: Any) -> tuple[str, Path] | None:
    """(model_id, weights) of the model marked current in the service's database, if any."""
    from detection_service.database import make_engine, make_session_factory
    from detection_service.ml import registry
    from detection_service.storage import make_object_store
    from schemas.db import Model

    try:
        engine = make_engine(settings.database_url)
        try:
            with make_session_factory(engine)() as session:
                row = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
                if row is None:
                    return None
                model_id, key = row.model_id, row.model_path
        finally:
            engine.dispose()
        store = make_object_store(settings)
        return model_id, registry.fetch_model(store, model_id, key, settings.data_dir / "cache")
    except Exception as exc:  # no database yet, store down: fall back
        log.warning("no current model from the database: %s", exc)
        return None


def sample_frames(video: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    wanted = set(np.linspace(0, max(0, total - 1), count).astype(int).tolist())
    frames, index = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index in wanted:
            frames.append(frame)
        index += 1
    cap.release()
    if not frames:
        raise RuntimeError(f"no frames in {video}")
    return frames


# --------------------------------------------------------------------------- backends


def _median_ms(fn: Any, frames: list[np.ndarray], warmup: int = 3) -> float:
    for frame in frames[:warmup]:
        fn(frame)
    times = []
    for frame in frames:
        started = time.perf_counter()
        fn(frame)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _boxes_match(a: list[Any], b: list[Any]) -> tuple[int, int]:
    """(matched, total): boxes of ``a`` with a same-class box in ``b`` at IoU >= 0.9, and vice versa."""
    from detection_service.pipeline.events import iou

    matched, unused = 0, list(b)
    for det in a:
        best = max(unused, key=lambda o: iou(det.xyxy, o.xyxy) if o.class_id == det.class_id else -1, default=None)
        if best is not None and best.class_id == det.class_id and iou(det.xyxy, best.xyxy) >= 0.9:
            matched += 1
            unused.remove(best)
    return matched, max(len(a), len(b))


def bench_backends(weights: Path, imgsz: int, frames: list[np.ndarray], cache_dir: Path, conf: float) -> dict[str, Any]:
    import torch
    from ultralytics import YOLO

    from detection_service.pipeline.detector import create_detector

    out: dict[str, Any] = {}
    model = YOLO(str(weights), task="detect")
    threads_before = torch.get_num_threads()
    torch_ms: dict[int, float] = {}
    for threads in range(1, (os.cpu_count() or 1) + 1):
        torch.set_num_threads(threads)
        torch_ms[threads] = _median_ms(
            lambda f: model.predict(f, imgsz=imgsz, conf=conf, device="cpu", verbose=False), frames
        )
    torch.set_num_threads(threads_before)
    best_threads = min(torch_ms, key=torch_ms.__getitem__)
    out["torch_ms_by_threads"] = {str(k): round(v, 2) for k, v in torch_ms.items()}
    out["torch_threads"] = best_threads
    out["torch_fps"] = round(1000 / torch_ms[best_threads], 2)

    torch_det = create_detector(weights, "torch", imgsz, cache_dir)
    fastest: tuple[str, float, Any] | None = None
    for backend in ("onnx", "openvino"):
        try:
            det = create_detector(weights, backend, imgsz, cache_dir)  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("%s unavailable: %s", backend, exc)
            out[f"{backend}_fps"] = None
            continue
        ms = _median_ms(lambda f, det=det: det.detect(f, conf), frames)
        out[f"{backend}_fps"] = round(1000 / ms, 2)
        if fastest is None or ms < fastest[1]:
            fastest = (backend, ms, det)
    if fastest is not None:
        matched = total = 0
        for frame in frames:
            m, t = _boxes_match(fastest[2].detect(frame, conf), torch_det.detect(frame, conf))
            matched, total = matched + m, total + t
        out["fastest_backend"] = fastest[0]
        out["speedup_vs_torch"] = round(out[f"{fastest[0]}_fps"] / out["torch_fps"], 2)
        out["boxes_compared"] = total
        out["boxes_match"] = round(matched / total, 3) if total else 1.0
        fastest[2].close()
    torch_det.close()
    return out


# --------------------------------------------------------------------------- pipeline runs


class MemorySource(FrameSource):
    """Sample frames from memory at a fixed rate (a camera faster than the detector)."""

    name = "bench-memory"
    is_file = False
    reconnectable = True

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.frames, self.fps = frames, fps
        self.index = 0
        self.next_at = 0.0

    def open(self) -> None:
        self.next_at = time.monotonic()

    def grab(self, timeout: float) -> bool:
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at = max(self.next_at + 1 / self.fps, time.monotonic() - 1 / self.fps)
        self.index += 1
        return True

    def retrieve(self) -> np.ndarray | None:
        return self.frames[self.index % len(self.frames)]

    def nominal_fps(self) -> float | None:
        return self.fps


class _Env:
    """A fresh throw-away database and store per pipeline run: open package events of one run
    would otherwise be re-adopted by the next and not count as new events."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.runs = 0
        self._engines: list[Any] = []

    def new(self) -> dict[str, Any]:
        from detection_service.bus import EventBus
        from detection_service.database import make_engine, make_session_factory, upgrade
        from detection_service.storage import LocalObjectStore

        self.runs += 1
        url = f"sqlite:///{self.work / f'bench-{self.runs}.db'}"
        upgrade(url)
        engine = make_engine(url)
        self._engines.append(engine)
        store = LocalObjectStore(self.work / f"objects-{self.runs}", "bench", "http://127.0.0.1", b"bench")
        store.ensure_bucket()
        return {"session_factory": make_session_factory(engine), "store": store, "bus": EventBus()}

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()


def _pipeline(
    env: dict[str, Any], holder: Any, *, motion_mode: str, source_factory: Any = None, source: str = "bench"
) -> Any:
    from detection_service.pipeline.config import PipelineConfig
    from detection_service.pipeline.runner import DetectionPipeline
    from schemas.settings import CameraSettings, DetectionSettings

    class MeasuredPipeline(DetectionPipeline):
        """Records the frame age of every detector run (the library keeps only the last)."""

        ages: list[float]

        def _process(self, frame: Any) -> None:
            before = self.inferences
            super()._process(frame)
            if self.inferences != before:
                self.ages.append(self.frame_age_ms)

    pipeline = MeasuredPipeline(
        session_factory=env["session_factory"],
        store=env["store"],
        bus=env["bus"],
        holder=holder,
        camera=CameraSettings(source=source, fps=60),  # the cap must stay above what the bench feeds
        detection=DetectionSettings(),
        config=PipelineConfig(motion_mode=motion_mode),
        source_factory=source_factory,
    )
    pipeline.ages = []
    return pipeline


def _throughput(
    env: dict[str, Any], holder: Any, frames: list[np.ndarray], fps: float, seconds: float
) -> tuple[float, list[float]]:
    pipeline = _pipeline(env, holder, motion_mode="off", source_factory=lambda _: MemorySource(frames, fps))
    pipeline.start()
    try:
        time.sleep(min(3.0, seconds / 3))  # warm-up
        pipeline.ages.clear()
        n0, t0 = pipeline.inferences, time.monotonic()
        time.sleep(seconds)
        rate = (pipeline.inferences - n0) / (time.monotonic() - t0)
        ages = list(pipeline.ages)
    finally:
        pipeline.close(10)
    return rate, ages


def _video_pass(env: dict[str, Any], holder: Any, video: Path, seconds: float, motion_mode: str) -> dict[str, Any]:
    from detection_service.bus import EventCreated, PackageRemoved

    sub = env["bus"].subscribe(f"bench-{motion_mode}", maxsize=10000)
    pipeline = _pipeline(env, holder, motion_mode=motion_mode, source=str(video))
    pipeline.start()
    try:
        time.sleep(seconds)
        inferences, frames = pipeline.inferences, pipeline.inferences + pipeline.gated_skips
    finally:
        pipeline.close(10)
    created, removed = [], 0
    while (message := sub.get(timeout=0)) is not None:
        if isinstance(message, EventCreated):
            created.append(message.object_type)
        elif isinstance(message, PackageRemoved):
            removed += 1
    sub.close()
    return {
        "inferences": inferences,
        "frames": frames,
        "events": len(created),
        "types": sorted(created),
        "removed": removed,
    }


def _cpu_pass(env: dict[str, Any], holder: Any, video: Path, seconds: float) -> dict[str, Any]:
    """Process CPU per detector run, gating off, the video at its real frame rate (a busy door)."""
    import threading

    pipeline = _pipeline(env, holder, motion_mode="off", source=str(video))
    pipeline.start()
    try:
        time.sleep(3.0)
        n0, c0, t0 = pipeline.inferences, _process_cpu_s(), _threads_cpu_s()
        time.sleep(seconds)
        n1, c1, t1 = pipeline.inferences, _process_cpu_s(), _threads_cpu_s()
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    finally:
        pipeline.close(10)
    runs = n1 - n0
    by_thread: dict[str, float] = {}
    for tid, cpu in t1.items():
        label = _thread_label(tid, names)
        by_thread[label] = by_thread.get(label, 0.0) + cpu - t0.get(tid, 0.0)
    per = (
        {k: round(v / runs * 1000, 2) for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v > 0}
        if runs
        else {}
    )
    return {
        "cpu_ms_per_inference": round((c1 - c0) / runs * 1000, 2) if runs else None,
        "cpu_ms_by_thread": per,
        "cpu_pass_inferences": runs,
        "cpu_pass_s": round(seconds, 1),
    }


def plain_track_cpu(weights: Path, video: Path, imgsz: int, skip: int = 20) -> dict[str, Any]:
    """A plain Ultralytics loop (torch, its default threads): ``model.track(source=video, stream=True)``;
    process CPU per frame after ``skip`` warm-up frames."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    frames, c0, t0 = 0, 0.0, 0.0
    for _ in model.track(source=str(video), stream=True, imgsz=imgsz, device="cpu", verbose=False):
        frames += 1
        if frames == skip:
            c0, t0 = _process_cpu_s(), time.monotonic()
    counted = frames - skip
    if counted <= 0:
        return {"plain_cpu_ms_per_frame": None, "plain_fps": None, "plain_frames": 0}
    return {
        "plain_cpu_ms_per_frame": round((_process_cpu_s() - c0) / counted * 1000, 2),
        "plain_fps": round(counted / (time.monotonic() - t0), 2),
        "plain_frames": counted,
    }


def bench_int8(
    weights: Path,
    imgsz: int,
    frames: list[np.ndarray],
    cache_dir: Path,
    conf: float,
    data_yaml: Path | None,
    data_dir: Path,
) -> dict[str, Any]:
    """Quantize (or reuse the cached INT8), its check, and its speed."""
    from detection_service.ml import quantize
    from detection_service.pipeline.detector import create_detector

    if data_yaml is None:
        from detection_service.bench.train import DEFAULT_DATASET
        from detection_service.ml.training import prepare_yolo_dataset

        if not (DEFAULT_DATASET / "data.yaml").is_file():
            return {"int8_note": f"no --data and no {DEFAULT_DATASET}: INT8 skipped"}
        prepared = data_dir / "cache" / "bench-datasets" / DEFAULT_DATASET.name
        data_yaml = prepared / "data.yaml"
        if not data_yaml.is_file():
            data_yaml = prepare_yolo_dataset(DEFAULT_DATASET, prepared)
    try:
        check = quantize.ensure_int8(weights, imgsz, data_yaml, cache_dir)
        det = create_detector(weights, "int8", imgsz, cache_dir)
    except Exception as exc:
        log.warning("INT8 unavailable: %s", exc)
        return {"int8_note": f"INT8 failed: {type(exc).__name__}: {exc}"}
    try:
        ms = _median_ms(lambda f: det.detect(f, conf), frames)
    finally:
        det.close()
    return {
        "int8_fps": round(1000 / ms, 2),
        "int8_map50_delta": check.map50_delta,
        "int8_check": quantize.to_builtins(check),
    }


def _soak(env: dict[str, Any], holder: Any, video: Path, minutes: float) -> dict[str, Any]:
    import gc

    pipeline = _pipeline(env, holder, motion_mode="on", source=str(video))
    pipeline.start()
    samples: list[float] = []
    try:
        time.sleep(5.0)  # first frames, first allocations
        gc.collect()
        start = _rss_mb()
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            samples.append(_rss_mb())
        gc.collect()
        end = _rss_mb()
    finally:
        pipeline.close(10)
    return {
        "rss_mb_start": start,
        "rss_mb_end": end,
        "rss_mb_max": max(samples + [start, end]),
        "soak_inferences": pipeline.inferences,
    }


# --------------------------------------------------------------------------- main


def run(
    *,
    minutes: float = 1.0,
    weights: Path | None = None,
    video: Path | None = None,
    imgsz: int = 320,
    settings: Any = None,
    throughput_s: float = 15.0,
    data_yaml: Path | None = None,
) -> dict[str, Any]:
    from detection_service.config import Settings
    from detection_service.ml.ultralytics_env import configure_offline

    settings = settings or Settings.from_env()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    configure_offline(data_dir)
    work = Path(tempfile.mkdtemp(prefix="aidoor-bench-pipeline-"))
    try:
        return _run(minutes, weights, video, imgsz, settings, work, throughput_s, data_yaml)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    minutes: float,
    weights: Path | None,
    video: Path | None,
    imgsz: int,
    settings: Any,
    work: Path,
    throughput_s: float,
    data_yaml: Path | None = None,
) -> dict[str, Any]:
    from detection_service import demo_video
    from detection_service.ml.training import min_confidence
    from detection_service.pipeline.detector import DetectorHolder
    from schemas.settings import DetectionSettings

    rss_begin = _rss_mb()
    note = None
    if weights is not None:
        model_id, model_source = Path(weights).stem, "--weights"
    elif (current := current_model_weights(settings)) is not None:
        model_id, weights = current
        model_source = "deployed model"
    else:
        weights = random_init_weights(work / "random-init" / "yolo11n-random.pt")
        model_id, model_source = "yolo11n-random-init", "random init"
        note = (
            "random-init model: speed figures are valid, event counts are not (it detects nothing real); "
            "deploy a trained model or pass --weights"
        )
    weights = Path(weights).resolve()
    if video is None:
        video = demo_video.ensure(settings.data_dir)
        if video is None:
            raise SystemExit("no --video and no demo video (../shared/datasets is missing)")
    video = Path(video)
    cap = cv2.VideoCapture(str(video))
    video_fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    video_s = (cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) / video_fps
    cap.release()
    frames = sample_frames(video, SAMPLE_FRAMES)
    conf = min_confidence(DetectionSettings().confidence_threshold, "medium")
    cache_dir = settings.data_dir / "cache" / "bench-exports"

    log.info("phase 1: backends (%s, imgsz %d)", model_id, imgsz)
    backends = bench_backends(weights, imgsz, frames, cache_dir, conf)
    log.info("phase 1b: INT8 (quantize + check on first use, then cached)")
    int8 = bench_int8(weights, imgsz, frames, cache_dir, conf, data_yaml, settings.data_dir)
    log.info("phase 1c: plain Ultralytics track loop (torch), CPU per frame")
    plain = plain_track_cpu(weights, video, imgsz)

    envs = _Env(work)
    holder = DetectorHolder()
    detector = holder.load(weights, "auto", imgsz, cache_dir, model_id=model_id)
    detector_ms = _median_ms(lambda f: detector.detect(f, conf), frames)
    detector_fps = 1000 / detector_ms

    log.info("phase 2: pipeline throughput (gating off, source at %.0f fps)", 2 * detector_fps)
    pipeline_fps, _ = _throughput(envs.new(), holder, frames, max(30.0, 2 * detector_fps), throughput_s)
    log.info("phase 3: frame age (gating off, %.0f fps source)", AGE_SOURCE_FPS)
    _, ages = _throughput(envs.new(), holder, frames, AGE_SOURCE_FPS, throughput_s)
    pass_s = video_s + 2.0
    log.info("phase 4: %.0f s of video with motion gating on, then off", pass_s)
    gated = _video_pass(envs.new(), holder, video, pass_s, "on")
    ungated = _video_pass(envs.new(), holder, video, pass_s, "off")
    log.info("phase 4b: CPU per inference, gating off, real-time video")
    cpu = _cpu_pass(envs.new(), holder, video, min(30.0, video_s))
    soak: dict[str, Any]
    if minutes > 0:
        log.info("phase 5: %.1f min soak (gating on)", minutes)
        soak = _soak(envs.new(), holder, video, minutes)
    else:
        # No soak: RSS over the whole benchmark (model loads included), not a flatness figure.
        soak = {"rss_mb_start": rss_begin, "rss_mb_end": _rss_mb(), "rss_mb_max": None, "soak_inferences": 0}
    envs.close()

    ratio = pipeline_fps / detector_fps if detector_fps else 0.0
    p50 = float(np.percentile(ages, 50)) if ages else None
    p99 = float(np.percentile(ages, 99)) if ages else None
    reduction = ungated["inferences"] / gated["inferences"] if gated["inferences"] else None
    result: dict[str, Any] = {
        "detector_fps": round(detector_fps, 2),
        "pipeline_fps": round(pipeline_fps, 2),
        "ratio": round(ratio, 3),
        "inference_ms": round(detector_ms, 2),
        "frame_age_ms_p50": round(p50, 2) if p50 is not None else None,
        "frame_age_ms_p99": round(p99, 2) if p99 is not None else None,
        "inferences_gated": gated["inferences"],
        "inferences_ungated": ungated["inferences"],
        "events_gated": gated["events"],
        "events_ungated": ungated["events"],
        "torch_fps": backends["torch_fps"],
        "onnx_fps": backends.get("onnx_fps"),
        "openvino_fps": backends.get("openvino_fps"),
        "int8_fps": int8.get("int8_fps"),
        "int8_map50_delta": int8.get("int8_map50_delta"),
        "cpu_ms_per_inference": cpu["cpu_ms_per_inference"],
        "plain_cpu_ms_per_frame": plain["plain_cpu_ms_per_frame"],
        "rss_mb_start": soak["rss_mb_start"],
        "rss_mb_end": soak["rss_mb_end"],
        # context
        "backend": detector.backend,
        "imgsz": imgsz,
        "model": model_id,
        "model_source": model_source,
        "note": note,
        "torch_threads": backends["torch_threads"],
        "torch_ms_by_threads": backends["torch_ms_by_threads"],
        "fastest_backend": backends.get("fastest_backend"),
        "speedup_vs_torch": backends.get("speedup_vs_torch"),
        "boxes_match": backends.get("boxes_match"),
        "boxes_compared": backends.get("boxes_compared"),
        "int8_speedup_vs_torch": round(int8["int8_fps"] / backends["torch_fps"], 2) if int8.get("int8_fps") else None,
        "int8_check": int8.get("int8_check"),
        "int8_note": int8.get("int8_note"),
        "cpu_ms_by_thread": cpu["cpu_ms_by_thread"],
        "cpu_pass_inferences": cpu["cpu_pass_inferences"],
        "plain_fps": plain["plain_fps"],
        "plain_frames": plain["plain_frames"],
        "gating_reduction": round(reduction, 2) if reduction else None,
        "event_types_gated": gated["types"],
        "event_types_ungated": ungated["types"],
        "packages_removed_gated": gated["removed"],
        "packages_removed_ungated": ungated["removed"],
        "frames_per_pass": [gated["frames"], ungated["frames"]],
        "age_samples": len(ages),
        "rss_mb_max": soak["rss_mb_max"],
        "minutes": minutes,
        "video": str(video),
        "video_seconds": round(video_s, 1),
        "cpu_count": os.cpu_count(),
        "loadavg": _loadavg(),
    }
    result["targets"] = {
        "ratio_ge_0.95": ratio >= 0.95,
        "age_p99_le_2x_inference": p99 is not None and p99 <= 2 * detector_ms,
        "gating_ge_5x_fewer": reduction is not None and reduction >= 5,
        "same_events": gated["types"] == ungated["types"],
        "fastest_ge_2.5x_torch": (backends.get("speedup_vs_torch") or 0) >= 2.5,
        "int8_ge_4x_torch": bool(int8.get("int8_fps")) and int8["int8_fps"] >= 4 * backends["torch_fps"],
        "int8_map50_within_0.01": int8.get("int8_check", {}).get("passed"),
        "cpu_per_inference_le_plain": (
            cpu["cpu_ms_per_inference"] is not None
            and plain["plain_cpu_ms_per_frame"] is not None
            and cpu["cpu_ms_per_inference"] <= plain["plain_cpu_ms_per_frame"]
        ),
        "rss_flat_50mb": abs(soak["rss_mb_end"] - soak["rss_mb_start"]) <= 50 if minutes > 0 else None,
    }
    holder.unload()
    return result


def main(argv: Sequence[str] | None = None, settings: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="soak length for the RSS figures (issue target: 10)")
    parser.add_argument("--weights", type=Path, help="model .pt (default: the deployed model, else random init)")
    parser.add_argument("--video", type=Path, help="video file (default: the demo video)")
    parser.add_argument("--imgsz", type=int, default=320, help="detector input size (default 320)")
    parser.add_argument(
        "--data",
        type=Path,
        help="data.yaml the model was trained on: INT8 calibration (train split) "
        "and its check (val split); default: the bootstrap dataset, prepared under the data dir",
    )
    parser.add_argument("--throughput-seconds", type=float, default=15.0, help="length of phases 2 and 3")
    args = parser.parse_args(argv)
    return run_and_print(
        run,
        minutes=args.minutes,
        weights=args.weights,
        video=args.video,
        imgsz=args.imgsz,
        settings=settings,
        throughput_s=args.throughput_seconds,
        data_yaml=args.data,
    )


if __name__ == "__main__":
    raise SystemExit(main())
