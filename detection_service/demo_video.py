"""`aidoor demo-video`: a door-camera video built from real dataset photos, for running without a camera.

Each scene is one real photo of a parcel at a door from ``../shared/datasets/doorbell-camera-alert-v4``
(its YOLO label gives the parcel's box), optionally zoomed in around the parcel the way a doorbell
camera closer to the step would see it. The "empty door" frame is the same photo with the labelled
box region inpainted (OpenCV Telea), so the empty door shows a smudge where the parcel was: honest
and simple, not a real empty-door photo. A scene is:

    empty door (3 s) -> parcel fades in (0.8 s) -> parcel stays (10 s) -> fades out (0.5 s)
    -> empty door (12 s, longer than the default package_removed_after_s of 10 s)

Two scenes at 15 fps make a 640x640 MPEG-4 video of ~53 s, written under the data dir (never into
the repository) with a JSON sidecar describing the timeline.

The curated photos were picked because the starter model (``aidoor bootstrap-model``, default
profile) recognises them: with a model trained the same way, the parcel scores 0.57-0.61 and the
inpainted empty door under 0.15. The first scene's photo is from the valid split (never trained
on); the second is from the training split. It demonstrates the pipeline, not the model's accuracy.
Photos: "Doorbell Camera Alert dataset, Roboflow Universe (craig-test-workspace), CC BY 4.0".
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "doorbell-camera-alert-v4"
CREDIT = "Doorbell Camera Alert dataset, Roboflow Universe (craig-test-workspace), CC BY 4.0"
DEMO_NAME = "door-demo.mp4"
SIZE = 640
# (split, file stem, zoom): one parcel, nobody holding it, floor around the box for the inpainting.
# Order = scene order; when one is missing the heuristic pick fills in.
CURATED = (
    ("valid", "IMG_6817_jpg.rf.9729792d62b86c75d743007e7a92f62e", 2.0),
    ("train", "IMG_6824_jpg.rf.fdf6c66370125b9bf85845fc875591cd", 1.0),
    ("train", "IMG_6817_jpg.rf.38aeaf460bd113c9901032fa19276373", 1.5),
)
# Seconds of each phase of a scene.
EMPTY_BEFORE_S, ARRIVE_S, PRESENT_S, LEAVE_S, EMPTY_AFTER_S = 3.0, 0.8, 10.0, 0.5, 12.0


@dataclass(frozen=True)
class Scene:
    image: str  # <split>/<file name> inside the dataset
    bbox: tuple[int, int, int, int]  # the parcel, x1 y1 x2 y2 in output pixels
    start_frame: int
    arrive_frame: int  # first frame with any of the parcel
    present_frame: int  # first frame with all of it
    leave_frame: int  # first frame of the fade-out
    gone_frame: int  # first frame without the parcel
    end_frame: int  # exclusive


@dataclass(frozen=True)
class DemoInfo:
    path: str
    fps: float
    frames: int
    width: int
    height: int
    seconds: float
    scenes: list[Scene]
    credit: str = CREDIT


def default_path(data_dir: Path) -> Path:
    return Path(data_dir) / "demo" / DEMO_NAME


def sidecar_path(video: Path) -> Path:
    return Path(video).with_suffix(".json")


def dataset_available(dataset: Path = DEFAULT_DATASET) -> bool:
    return (Path(dataset) / "valid" / "images").is_dir()


@dataclass(frozen=True)
class Photo:
    image: Path
    label: Path
    zoom: float = 1.0


def _label_box(label: Path) -> tuple[float, float, float, float] | None:
    """The single box of a YOLO label file as normalised (cx, cy, w, h), or None."""
    try:
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
    except OSError:
        return None
    if len(rows) != 1 or len(rows[0]) < 5:
        return None
    _, cx, cy, w, h = (float(v) for v in rows[0][:5])
    return cx, cy, w, h


def pick_photos(dataset: Path, count: int) -> list[Photo]:
    """``count`` photos with one parcel each: the curated ones first, then valid-split photos with
    one box covering 3-15 % of the frame, clear of the edges."""
    dataset = Path(dataset)
    picked = [
        Photo(image, dataset / split / "labels" / f"{stem}.txt", zoom)
        for split, stem, zoom in CURATED
        if (image := dataset / split / "images" / f"{stem}.jpg").is_file()
    ]
    if len(picked) < count:
        for image in sorted((dataset / "valid" / "images").glob("*.jpg")):
            label = dataset / "valid" / "labels" / f"{image.stem}.txt"
            box = _label_box(label)
            if box is None or any(p.image == image for p in picked):
                continue
            cx, cy, w, h = box
            if 0.03 <= w * h <= 0.15 and min(cx - w / 2, cy - h / 2, 1 - cx - w / 2, 1 - cy - h / 2) > 0.08:
                picked.append(Photo(image, label))
            if len(picked) >= count:
                break
    if not picked:
        raise FileNotFoundError(f"no single-parcel photos in {dataset}")
    return picked[:count]


def _scene_frames(photo: Photo) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """(photo with parcel, empty door, blend mask 0..1, parcel box) at SIZE x SIZE."""
    source = cv2.imread(str(photo.image), cv2.IMREAD_COLOR)
    box = _label_box(photo.label)
    if source is None or box is None:
        raise ValueError(f"{photo.image.name}: unreadable, or its label is not one box")
    cx, cy, w, h = box
    # Zoom: a window of 1/zoom of the photo around the parcel, kept inside the photo.
    side = 1.0 / max(1.0, photo.zoom)
    x0, y0 = min(max(cx - side / 2, 0.0), 1 - side), min(max(cy - side / 2, 0.0), 1 - side)
    height, width = source.shape[:2]
    crop = source[round(y0 * height) : round((y0 + side) * height), round(x0 * width) : round((x0 + side) * width)]
    image = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA if side == 1.0 else cv2.INTER_CUBIC)

    def px(value: float, origin: float) -> int:
        return min(SIZE, max(0, round((value - origin) / side * SIZE)))

    x1, y1, x2, y2 = px(cx - w / 2, x0), px(cy - h / 2, y0), px(cx + w / 2, x0), px(cy + h / 2, y0)
    mx, my = int(0.12 * (x2 - x1)) + 4, int(0.12 * (y2 - y1)) + 4
    hole = np.zeros((SIZE, SIZE), np.uint8)
    hole[max(0, y1 - my) : min(SIZE, y2 + my), max(0, x1 - mx) : min(SIZE, x2 + mx)] = 255
    empty = cv2.inpaint(image, hole, 9, cv2.INPAINT_TELEA)
    # A soft edge, so the fade does not flash a hard rectangle.
    mask = cv2.GaussianBlur(hole.astype(np.float32) / 255.0, (0, 0), 3)[..., None]
    return image, empty, mask, (x1, y1, x2, y2)


def build(
    out: Path,
    dataset: Path = DEFAULT_DATASET,
    *,
    fps: float = 15.0,
    scenes: int = 2,
    max_frames: int | None = None,
) -> DemoInfo:
    """Write the demo video to ``out`` (atomically) and its JSON sidecar; return the timeline.

    ``max_frames`` shortens every phase in proportion so the whole video has about that many
    frames (tests); the order of the phases stays the same.
    """
    if not 1 <= scenes <= 10:
        raise ValueError("scenes must be 1-10")
    if not 5 <= fps <= 60:
        raise ValueError("fps must be 5-60")
    photos = pick_photos(Path(dataset), scenes)
    phases = (EMPTY_BEFORE_S, ARRIVE_S, PRESENT_S, LEAVE_S, EMPTY_AFTER_S)
    counts = [max(1, round(s * fps)) for s in phases]
    if max_frames is not None:
        per_scene = max(len(phases), max_frames // len(photos))
        scale = per_scene / sum(counts)
        counts = [max(1, round(c * scale)) for c in counts]

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".demo-", suffix=out.suffix or ".mp4", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp makes it private; the video is not a secret
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (SIZE, SIZE))
    if not writer.isOpened():
        tmp.unlink(missing_ok=True)
        raise RuntimeError("OpenCV cannot write MPEG-4 video here")
    timeline: list[Scene] = []
    frame_no = 0
    try:
        for photo in photos:
            full, empty, mask, box = _scene_frames(photo)
            empty_before, arrive, present, leave, empty_after = counts
            start = frame_no
            # alpha of the parcel per frame: 0 -> ramp up -> 1 -> ramp down -> 0
            alphas = (
                [0.0] * empty_before
                + [(i + 1) / (arrive + 1) for i in range(arrive)]
                + [1.0] * present
                + [1.0 - (i + 1) / (leave + 1) for i in range(leave)]
                + [0.0] * empty_after
            )
            cache: dict[float, np.ndarray] = {}
            for alpha in alphas:
                key = round(alpha, 3)
                if key not in cache:
                    if key == 0.0:
                        cache[key] = empty
                    elif key == 1.0:
                        cache[key] = full
                    else:
                        blend = mask * key
                        cache[key] = (full * blend + empty * (1 - blend)).astype(np.uint8)
                writer.write(cache[key])
                frame_no += 1
            timeline.append(
                Scene(
                    image=f"{photo.image.parent.parent.name}/{photo.image.name}",
                    bbox=box,
                    start_frame=start,
                    arrive_frame=start + empty_before,
                    present_frame=start + empty_before + arrive,
                    leave_frame=start + empty_before + arrive + present,
                    gone_frame=start + empty_before + arrive + present + leave,
                    end_frame=frame_no,
                )
            )
    finally:
        writer.release()
    tmp.replace(out)
    info = DemoInfo(path=str(out), fps=fps, frames=frame_no, width=SIZE, height=SIZE,
                    seconds=round(frame_no / fps, 2), scenes=timeline)  # fmt: skip
    sidecar_path(out).write_text(json.dumps(asdict(info), indent=2))
    log.info("demo video %s: %d frames, %.1f s, %d scene(s)", out, frame_no, info.seconds, len(timeline))
    return info


def load_info(video: Path) -> DemoInfo | None:
    """The timeline written beside ``video`` by ``build``, or None."""
    try:
        raw = json.loads(sidecar_path(video).read_text())
        raw["scenes"] = [Scene(**{**s, "bbox": tuple(s["bbox"])}) for s in raw["scenes"]]
        return DemoInfo(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def ensure(data_dir: Path, dataset: Path = DEFAULT_DATASET) -> Path | None:
    """The default demo video, built first if it is missing and the dataset is there."""
    path = default_path(data_dir)
    if path.is_file() and load_info(path) is not None:
        return path
    if not dataset_available(dataset):
        log.warning("no demo video: %s is missing", dataset)
        return None
    build(path, dataset)
    return path


def main(args: object, data_dir: Path) -> int:
    """`aidoor demo-video` (arguments parsed in cli.py)."""
    out = Path(getattr(args, "out", None) or default_path(data_dir))
    dataset = Path(getattr(args, "dataset", None) or DEFAULT_DATASET)
    if not dataset_available(dataset):
        print(f"aidoor: dataset not found: {dataset}/valid/images", file=sys.stderr)
        return 2
    info = build(out, dataset, fps=getattr(args, "fps", 15.0), scenes=getattr(args, "scenes", 2),
                 max_frames=getattr(args, "frames", None))  # fmt: skip
    print(json.dumps({"path": info.path, "frames": info.frames, "fps": info.fps, "seconds": info.seconds,
                      "scenes": [s.image for s in info.scenes], "credit": info.credit}))  # fmt: skip
    return 0
