"""The CPU figures of ``aidoor bench pipeline``: process CPU per inference of the pipeline (with a
per-thread split) and CPU per frame of a plain Ultralytics track loop, on a tiny model and video."""

from __future__ import annotations

from pathlib import Path

import pytest

from detection_service.bench import pipeline as bench
from detection_service.pipeline.detector import DetectorHolder
from tests.pipeline.conftest import TINY_IMGSZ, write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "door.avi", 90, fps=15.0, size=(128, 96))


def test_cpu_pass_accounts_every_thread(tiny_weights: Path, video: Path, tmp_path: Path) -> None:
    env = bench._Env(tmp_path)
    holder = DetectorHolder()
    holder.load(tiny_weights, "openvino", TINY_IMGSZ, tmp_path / "exports")
    try:
        out = bench._cpu_pass(env.new(), holder, video, 3.0)
    finally:
        holder.unload()
        env.close()
    assert out["cpu_pass_inferences"] >= 10  # gating off: one run per fresh frame at 15 fps
    per_thread = out["cpu_ms_by_thread"]
    assert "detection-pipeline" in per_thread and per_thread["detection-pipeline"] > 0
    # The per-thread split adds up to (about) the process total: nothing hides outside it.
    assert sum(per_thread.values()) == pytest.approx(out["cpu_ms_per_inference"], rel=0.35, abs=2.0)
    assert 0 < out["cpu_ms_per_inference"] < 1000


def test_plain_track_loop_cpu_per_frame(tiny_weights: Path, video: Path) -> None:
    out = bench.plain_track_cpu(tiny_weights, video, TINY_IMGSZ, skip=10)
    assert out["plain_frames"] == 80  # every frame of the file, after the warm-up ones
    assert 0 < out["plain_cpu_ms_per_frame"] < 1000 and out["plain_fps"] > 0
