"""`aidoor bench visitors`: how well the frequent-visitor grouping (services/visitors.py) puts the
captures of one person together and keeps different people apart, on real people with known
identities. Prints one JSON line (pairwise precision and recall, see below).

The identity set is built from `../shared/datasets/person-capston2-v11` (CC BY 4.0, "Capston2
dataset, Roboflow Universe (siwookim)"), from the images of five entrance/lobby videos only (file
names `output_mp4-N`, `output1_mp4-N`, `clip1_mp4-N`, `clip_main_lobby_Tan_mp4-N`,
`IMG_4741_mp4-N`, N the frame number): people walking through a door, seen by a fixed camera.
Identities are assigned without looking at the descriptor:

- Roboflow exported 1-4 augmented copies of each frame (crop, shear, exposure, blur, noise), each
  with its own boxes. In the copies with the frame's most common box count, boxes are matched
  left to right (checked by eye on contact sheets: every matched row is one person); copies with
  another count are left out.
- Frames of one video at most ``LINK_FRAMES`` frame numbers apart with the same box count are
  consecutive views of the same people: matched the same way. `IMG_4741` shows one person
  throughout (checked by eye): one identity.
- Two different identities from different frames of the same video may still be one person who
  walked through twice: such pairs are left out of the counts (``unknown_pairs``). People of
  different videos count as different people.

Metric: **pairwise** precision (of the pairs of crops put in one group, the share that is one
person) and recall (of the pairs that are one person, the share put in one group), over every
pair of crops but the unknown ones. The threshold of the service (DEFAULT_THRESHOLD) was chosen
on the `train/` frames; `held_out` is the `valid/` frames alone (other frames of these videos).
``baseline_global_hsv`` is one HSV histogram of the whole crop at its own best threshold on the
train frames: what the part-based descriptor is measured against.

What it does not measure: a person coming back another day in other clothes or other light
(the set has no such pairs; a colour descriptor would not find them).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detection_service.config import SHARED_DIR, Settings
from detection_service.services.visitors import (
    DEFAULT_THRESHOLD,
    METHOD,
    appearance_embedding,
    group_embeddings,
    pairwise_precision_recall,
)

DEFAULT_DATASET = SHARED_DIR / "datasets" / "person-capston2-v11"
VIDEOS = ("output_mp4", "output1_mp4", "clip1_mp4", "clip_main_lobby_Tan_mp4", "IMG_4741_mp4")
SINGLE_PERSON_VIDEOS = ("IMG_4741_mp4",)
LINK_FRAMES = 2
SWEEP = (0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.2)
_FRAME_NAME = re.compile(r"^(?P<video>.+)-(?P<frame>\d+)_(?:jpg|jpeg|png)\.rf\.[0-9a-f]+\.(?:jpg|jpeg|png)$")


@dataclass(frozen=True, slots=True)
class Crop:
    path: Path
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 pixels
    video: str
    frame: int
    split: str
    identity: str


def _boxes(image: Path, width: int, height: int) -> list[tuple[float, float, float, float]]:
    label = image.parent.parent / "labels" / (image.stem + ".txt")
    boxes = []
    for line in label.read_text().splitlines() if label.is_file() else []:
        parts = line.split()
        if len(parts) == 5:
            cx, cy, w, h = (float(v) for v in parts[1:])
            boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return sorted(boxes)  # left to right


def identity_set(dataset: Path) -> list[Crop]:
    """The crops with their identities (module docstring)."""
    copies: dict[tuple[str, int], list[tuple[Path, str, list]]] = defaultdict(list)
    for split in ("train", "valid", "test"):
        for image in sorted((dataset / split / "images").glob("*")):
            match = _FRAME_NAME.match(image.name)
            if not match or not match["video"].startswith(VIDEOS):
                continue
            size = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape[:2]
            copies[(match["video"], int(match["frame"]))].append((image, split, _boxes(image, size[1], size[0])))
    people: dict[tuple[str, int], int] = {}  # frame -> persons in it
    for frame, found in copies.items():
        people[frame] = Counter(len(boxes) for _, _, boxes in found).most_common(1)[0][0]
    # Union-find over (video, frame, rank): consecutive frames with the same count are linked.
    parent: dict[tuple, tuple] = {}

    def find(node: tuple) -> tuple:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for video, frame in people:
        for step in range(1, LINK_FRAMES + 1):
            later = (video, frame + step)
            if people.get(later) == people[(video, frame)]:
                for rank in range(people[(video, frame)]):
                    parent[find((video, frame, rank))] = find((*later, rank))
        if video in SINGLE_PERSON_VIDEOS and people[(video, frame)] == 1:
            parent[find((video, frame, 0))] = find((video, "person"))
    crops = []
    for (video, frame), found in sorted(copies.items()):
        for image, split, boxes in found:
            if len(boxes) != people[(video, frame)]:
                continue
            for rank, box in enumerate(boxes):
                identity = "{}/{}/{}".format(*find((video, frame, rank)))
                crops.append(Crop(image, box, video, frame, split, identity))
    return crops


def _global_hsv(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    crop = image[max(0, y1) : y2, max(0, x1) : x2]
    if crop.size == 0:
        return None
    hist = cv2.calcHist([cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256])
    vector = np.sqrt(hist.ravel() / max(float(hist.sum()), 1.0))
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def _scores(vectors: np.ndarray, crops: list[Crop], indices: list[int], threshold: float) -> dict:
    labels = group_embeddings(vectors[indices], threshold)
    chosen = [crops[i] for i in indices]

    def unknown(a: int, b: int) -> bool:
        return chosen[a].video == chosen[b].video and chosen[a].frame != chosen[b].frame

    result = pairwise_precision_recall(labels, [c.identity for c in chosen], ignore=unknown)
    result["groups"] = len(set(labels.tolist()))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def _f1(score: dict) -> float:
    p, r = score["precision"], score["recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


def run(dataset: Path, threshold: float) -> dict:
    started = time.perf_counter()
    crops = identity_set(dataset)
    if not crops:
        raise SystemExit(f"no frames of {', '.join(VIDEOS)} in {dataset}")
    images: dict[Path, np.ndarray] = {}
    ours, baseline, embed_ms = [], [], []
    for crop in crops:
        image = images.setdefault(crop.path, cv2.imread(str(crop.path)))
        tick = time.perf_counter()
        ours.append(appearance_embedding(image, crop.box))
        embed_ms.append((time.perf_counter() - tick) * 1000)
        baseline.append(_global_hsv(image, crop.box))
    usable = [i for i, (a, b) in enumerate(zip(ours, baseline)) if a is not None and b is not None]
    crops = [crops[i] for i in usable]
    ours_v, baseline_v = np.stack([ours[i] for i in usable]), np.stack([baseline[i] for i in usable])
    everything = list(range(len(crops)))
    train = [i for i, c in enumerate(crops) if c.split == "train"]
    held_out = [i for i, c in enumerate(crops) if c.split != "train"]
    base_sweep = {t: _scores(baseline_v, crops, train, t) for t in SWEEP}
    base_t = max(SWEEP, key=lambda t: _f1(base_sweep[t]))
    overall = _scores(ours_v, crops, everything, threshold)
    identities = Counter(c.identity for c in crops)
    return {
        "bench": "visitors",
        "dataset": str(dataset),
        "identity_set": {
            "crops": len(crops),
            "frames": len({(c.video, c.frame) for c in crops}),
            "videos": len({c.video for c in crops}),
            "identities": len(identities),
            "identities_with_2_or_more_crops": sum(1 for n in identities.values() if n > 1),
            "train_crops": len(train),
            "held_out_crops": len(held_out),
        },
        "metric": "pairwise",
        "method": METHOD.format(threshold=threshold),
        "threshold": threshold,
        "visitors_precision": overall["precision"],
        "visitors_recall": overall["recall"],
        "all": overall,
        "train": _scores(ours_v, crops, train, threshold),
        "held_out": _scores(ours_v, crops, held_out, threshold),
        "sweep": {
            str(t): {k: v for k, v in _scores(ours_v, crops, everything, t).items() if k in ("precision", "recall")}
            for t in SWEEP
        },
        "baseline_global_hsv": {
            "threshold": base_t,
            "all": _scores(baseline_v, crops, everything, base_t),
            "held_out": _scores(baseline_v, crops, held_out, base_t),
        },
        "embed_ms_p50": round(statistics.median(embed_ms), 3),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str], settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench visitors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="the person-capston2-v11 export")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="cosine distance cut")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.dataset, args.threshold)), flush=True)
    return 0
