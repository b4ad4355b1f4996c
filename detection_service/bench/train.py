"""Training benchmark: the starter mix trained with a profile, evaluated per class, one JSON line.

    python -m detection_service.bench.train [--profile default] [--dataset DIR ...] [--data-dir DIR]

The mix is what `make run` trains the starter model on: the doorbell parcels, the person photos,
and teacher labels (the COCO model in shared/models) for the classes each export lacks (the people
in the doorbell frames). Each export is evaluated on its own valid split for the classes it labels
(package on the doorbell valid images, person on the person valid images), and again without the
valid images that nearly repeat a training frame (``*_novel``: a door the model has not seen).

The datasets are never written to: remapped training copies (symlinked images, rewritten labels)
are made under the data dir, or a temporary dir that is removed afterwards.
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
from detection_service.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
DEFAULT_DATASETS = (SHARED / "datasets" / "doorbell-camera-alert-v4", SHARED / "datasets" / "person-capston2-v11")


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


def _labelled_classes(data_yaml: Path) -> list[str]:
    from detection_service.ml.classes import MODEL_CLASSES
    from detection_service.ml.teacher import missing_classes

    missing = set(missing_classes(data_yaml))
    return [c for c in MODEL_CLASSES if c not in missing]


def run(
    data_dir: Path | None = None,
    datasets: Sequence[Path] = DEFAULT_DATASETS,
    profile: str = "default",
    teacher_model: Path | None | str = "default",
    settings: Settings | None = None,
    **param_changes: Any,
) -> dict[str, Any]:
    """Train ``profile`` on the mix of ``datasets`` (+ teacher labels) and evaluate per class.

    With ``data_dir`` the prepared datasets and the run stay under ``<data_dir>/bench/``;
    without it everything goes to a temporary directory that is deleted at the end.
    ``teacher_model``: "default" (``settings.teacher_model``: AIDOOR_TEACHER_MODEL or shared/models;
    ``settings`` default ``Settings.from_env()``), None (no teacher labels), or a path.
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
        from detection_service.ml import mixing, teacher, training

        work = data_dir / "bench"
        load_start = _loadavg()
        params = training.TrainParams(profile=profile, **param_changes)  # type: ignore[arg-type]
        t0 = time.monotonic()
        prepared = [
            (Path(d).resolve(), training.prepare_yolo_dataset(Path(d), work / "datasets" / Path(d).name))
            for d in datasets
        ]
        prepare_s = time.monotonic() - t0

        t0 = time.monotonic()
        if teacher_model == "default":
            teacher_path = teacher.teacher_model_path(settings or Settings.from_env())
        else:
            teacher_path = teacher_model
        sources, teacher_boxes = [], {}
        model = None
        for export, data_yaml in prepared:
            count = len(mixing.split_images(data_yaml, "train"))
            cap = params.max_images_per_source
            fraction = min(1.0, cap / count) if cap and count else 1.0
            sources.append(mixing.MixSource(data_yaml, export.name, "human", fraction, export.name))
            wanted = teacher.missing_classes(data_yaml)
            if teacher_path is None or not wanted:
                continue
            model = model or teacher.load_teacher(Path(teacher_path))
            classes = [c for c in wanted if teacher.class_mapping(model.names, [c])]
            if classes:
                overlay, boxes = teacher.write_overlay(model, data_yaml, work / "teacher" / export.name, classes)
                sources.append(mixing.MixSource(overlay, export.name, "teacher", fraction, f"{export.name} (teacher)"))
                teacher_boxes[export.name] = boxes
        teacher_s = time.monotonic() - t0
        mix = mixing.merge_datasets(sources, work / "mix")

        cpu_before = _cpu_s()
        result = training.train(mix, work / f"train-{profile}", params)
        train_cpu_s = _cpu_s() - cpu_before

        t0 = time.monotonic()
        per_class: dict[str, dict[str, Any]] = {}
        inference_ms = None
        for export, data_yaml in prepared:
            novel_yaml, kept, dropped = mixing.novel_val(data_yaml, work / "novel" / export.name)
            full = training.evaluate(result.best_weights, data_yaml, "val", params.imgsz, threads=params.threads)
            novel = training.evaluate(result.best_weights, novel_yaml, "val", params.imgsz, threads=params.threads)
            inference_ms = inference_ms or full.inference_ms
            novel_rows = {row.name: row for row in novel.per_class}
            for row in full.per_class:
                if row.name not in _labelled_classes(data_yaml):
                    continue
                novel_row = novel_rows.get(row.name)
                per_class[row.name] = {
                    "dataset": export.name,
                    "images": full.images,
                    "instances": row.instances,
                    "map50": round(row.map50, 4),
                    "map50_95": round(row.map50_95, 4),
                    "precision": round(row.precision, 4),
                    "recall": round(row.recall, 4),
                    "novel_images": kept,
                    "near_duplicates_left_out": dropped,
                    "map50_novel": round(novel_row.map50, 4) if novel_row else None,
                    "map50_95_novel": round(novel_row.map50_95, 4) if novel_row else None,
                }
        eval_s = time.monotonic() - t0
        return {
            "wall_s": result.wall_s,
            "epochs": result.epochs_run,
            "imgsz": params.imgsz,
            "per_class": per_class,
            "package_map50": per_class.get("package", {}).get("map50"),
            "person_map50": per_class.get("person", {}).get("map50"),
            "inference_ms": inference_ms,
            # Each class's best-F1 raw score on the mix's valid split: the detector maps it to 0.5.
            "class_thresholds": result.class_thresholds,
            "model": params.model,
            "threads": params.threads,
            "profile": profile,
            "batch": params.batch_size,
            "nbs": params.nbs,
            "datasets": [export.name for export, _ in prepared],
            "train_images": {s.ref: round(s.train_fraction, 3) for s in sources if s.role == "human"},
            "teacher_boxes": teacher_boxes,
            "stopped_early": result.stopped_early,
            "prepare_s": round(prepare_s, 2),
            "teacher_s": round(teacher_s, 2),
            "eval_s": round(eval_s, 2),
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


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="TrainParams profile (default, tiny)")
    parser.add_argument(
        "--dataset",
        type=Path,
        action="append",
        default=None,
        help="Roboflow YOLO export folder (repeat for a mix; default: doorbell + person in shared/)",
    )
    parser.add_argument("--no-teacher", action="store_true", help="train without teacher labels")
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
        summary = run(
            args.data_dir,
            args.dataset or DEFAULT_DATASETS,
            args.profile,
            None if args.no_teacher else "default",
            settings=settings,
            **changes,
        )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
