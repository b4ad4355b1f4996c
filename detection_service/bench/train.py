"""Training benchmark: prepare a Roboflow export, train a profile, evaluate it, print one JSON line.

    python -m detection_service.bench.train [--profile default] [--dataset DIR] [--data-dir DIR]

The dataset is never written to: a remapped training copy (symlinked images, rewritten labels) is
made under the data dir, or a temporary dir that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detection_service.bench import stdout_to_stderr

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "doorbell-camera-alert-v4"


def _cpu_s() -> float:
    """CPU seconds this process has used: with the machine shared, cpu_s / threads is what the
    wall time would have been on an idle machine (roughly)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run(
    data_dir: Path | None = None,
    dataset: Path = DEFAULT_DATASET,
    profile: str = "default",
    **param_changes: Any,
) -> dict[str, Any]:
    """Train ``profile`` on ``dataset`` and evaluate on its valid split; the benchmark numbers.

    With ``data_dir`` the prepared dataset and the run stay under ``<data_dir>/bench/``;
    without it everything goes to a temporary directory that is deleted at the end.
    ``param_changes`` override TrainParams fields (e.g. epochs=5, overrides={"mosaic": 0.5}).
    """
    from detection_service.ml.ultralytics_env import configure_offline

    tmp = None
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="aidoor-bench-"))
        data_dir = tmp
    data_dir = Path(data_dir).resolve()
    try:
        configure_offline(data_dir)  # before training.py imports ultralytics
        from detection_service.ml import training

        dataset = Path(dataset).resolve()
        work = data_dir / "bench"
        load_start = _loadavg()
        t0 = time.monotonic()
        data_yaml = training.prepare_yolo_dataset(dataset, work / "datasets" / dataset.name)
        prepare_s = time.monotonic() - t0

        params = training.TrainParams(profile=profile, **param_changes)  # type: ignore[arg-type]
        cpu_before = _cpu_s()
        result = training.train(data_yaml, work / f"train-{profile}", params)
        train_cpu_s = _cpu_s() - cpu_before
        evaluation = training.evaluate(result.best_weights, data_yaml, "val", params.imgsz, threads=params.threads)
        return {
            "wall_s": result.wall_s,
            "epochs": result.epochs_run,
            "imgsz": params.imgsz,
            "map50": round(evaluation.metrics["map50"], 4),
            "map50_95": round(evaluation.metrics["map50_95"], 4),
            "precision": round(evaluation.metrics["precision"], 4),
            "recall": round(evaluation.metrics["recall"], 4),
            "inference_ms": evaluation.inference_ms,
            "model": params.model,
            "threads": params.threads,
            "profile": profile,
            "batch": params.batch_size,
            "nbs": params.nbs,
            "dataset": dataset.name,
            "val_images": evaluation.images,
            "stopped_early": result.stopped_early,
            "prepare_s": round(prepare_s, 2),
            "eval_s": evaluation.wall_s,
            "train_cpu_s": round(train_cpu_s, 1),
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
            "cpu_count": os.cpu_count(),
            "weights": None if tmp else str(result.best_weights),
            "params": {k: v for k, v in result.params.items() if v is not None},
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="TrainParams profile (default, tiny)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="Roboflow YOLO export folder")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep outputs here (default: temp, deleted)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="TrainParams field, e.g. epochs=5"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="Ultralytics override, e.g. mosaic=0.5"
    )
    args = parser.parse_args(argv)
    changes: dict[str, Any] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        changes[key] = _value(value)
    if args.set:
        changes["overrides"] = {k: _value(v) for k, _, v in (s.partition("=") for s in args.set)}
    with stdout_to_stderr():
        summary = run(args.data_dir, args.dataset, args.profile, **changes)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
