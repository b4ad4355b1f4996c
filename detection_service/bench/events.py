"""Event benchmark: the service vs a plain tracking loop on a door video; prints ONE JSON line.

    aidoor bench events --weights best.pt [--imgsz 256] [--package-scenes 6] [--person-scenes 6]
                        [--tolerance 2] [--video door.mp4 --keep-video DIR]

The video (built here with ``demo_video.build``, 640x640, 15 fps; never written into the
repository) is made of VALID-split photos only, picked by a rule, not for the model:

- package scenes: ``doorbell-camera-alert-v4`` valid photos with exactly one labelled parcel, no
  person seen by the COCO teacher (``../shared/models/yolov8n_coco_int8_openvino_model``,
  conf >= 0.4) and no near-duplicate (256-bit dHash within 5 bits) among the training images;
  sorted by file name, every k-th (k = candidates // scenes). Scene: empty door 3 s, parcel fades
  in 0.8 s, stays 10 s, fades out 0.5 s, empty 12 s.
- person scenes, alternately from two sources: doorbell valid photos (same near-duplicate rule)
  with exactly one teacher person whose box holds no labelled parcel (the other parcels are
  inpainted in every frame); and ``person-capston2-v11`` valid photos with exactly one labelled
  person covering 3-40 % of the frame. Every k-th of each, by file name. Scene: empty 3 s, fades in
  0.8 s, stays 6 s, fades out 0.5 s, empty 5 s.

A fixed camera per scene: the "empty door" is the photo with the object's box inpainted
(``demo_video``). The sidecar timeline is the ground truth; boxes of doorbell people are the
teacher's, so "exactly one person" means one the teacher saw.

Runs, one after the other on the same video and weights:

1. **service**: ``aidoor serve`` in a subprocess (throw-away data dir, SQLite, local store, no
   demo, no Dagster, no Telegram), the weights registered with ``aidoor model register`` and
   deployed with ``POST /api/models/<id>/deploy``, ``imgsz`` set with ``PUT /api/detection/config``,
   then the video set as ``camera.source`` (``PUT /api/settings/camera``): it plays in real time.
   Video time 0 = the wall time of frame 0, estimated from ``frames_read`` in ``GET /api/detection``.
   After one pass the pipeline is stopped and the events read from ``GET /api/events``
   (``detected_at`` = first sighting, ``ended_at`` = removal for packages). CPU = user + system
   seconds of the service process (psutil) from setting the source to the stop.
2. **plain**: ``YOLO(weights).track(source=video, stream=True, imgsz=..., conf=threshold,
   tracker="bytetrack.yaml")``, as fast as it goes, in this process (CPU = this process's CPU over
   the loop). Its "events": a track id becomes an arrival once it has ``confirm_hits`` (3) hits
   within ``confirm_window_s`` (2 s) of video time, typed by the class most of its hits had; a
   package track not seen for ``package_removed_after_s`` (10 s) is removed at its last sighting.
   No re-identification across track ids: that is what the service's recorder adds.

Scoring (``score``, the same for both): an arrival is found when an event of its type starts within
``[arrive - tolerance, present + tolerance]`` (video seconds; at most one event per arrival, the
earliest); every other event in the video is a false event (duplicates, wrong types,
``unclassified``, objects never meant to arrive). A removal is seen when the found package's event
ended within ``[leave - tolerance, gone + tolerance]``. Targets (reported, not tuned for):
arrivals found >= 90 %, false events <= 0.1 per arrival, service CPU >= 3x less than the plain loop.
Photos: "Doorbell Camera Alert dataset, Roboflow Universe (craig-test-workspace), CC BY 4.0",
"Capston2 dataset, Roboflow Universe (siwookim), CC BY 4.0".
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detection_service import demo_video
from detection_service.bench import run_and_print

log = logging.getLogger("aidoor.bench.events")

CONFIRM_HITS, CONFIRM_WINDOW_S, PACKAGE_REMOVED_AFTER_S = 3, 2.0, 10.0


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Arrival:
    object_type: str
    scene: int
    arrive_s: float
    present_s: float
    leave_s: float
    gone_s: float
    carried: bool = False


@dataclass(frozen=True)
class SeenEvent:
    """An event as either side reports it, in video seconds. ``end_s`` None = still open."""

    object_type: str
    start_s: float
    end_s: float | None = None


def arrivals(scenes: Iterable[demo_video.Scene], fps: float) -> list[Arrival]:
    """The ground truth of a timeline: each scene's object, and what it carries, arrives once."""
    out = []
    for i, s in enumerate(scenes):
        times = (s.arrive_frame / fps, s.present_frame / fps, s.leave_frame / fps, s.gone_frame / fps)
        out.append(Arrival(s.object_type, i, *times))
        out += [Arrival(kind, i, *times, carried=True) for kind in s.carried]
    return out


def score(
    truth: Sequence[Arrival], events: Sequence[SeenEvent], *, video_s: float, tolerance_s: float = 2.0
) -> dict[str, Any]:
    """Arrivals found per class, false events, removals seen (see the module docstring)."""
    inside = sorted((e for e in events if 0 <= e.start_s <= video_s), key=lambda e: e.start_s)
    used: set[int] = set()
    matched: dict[int, SeenEvent] = {}
    for a_index, arrival in enumerate(truth):
        for e_index, event in enumerate(inside):
            if e_index in used or event.object_type != arrival.object_type:
                continue
            if arrival.arrive_s - tolerance_s <= event.start_s <= arrival.present_s + tolerance_s:
                used.add(e_index)
                matched[a_index] = event
                break
    classes = sorted({a.object_type for a in truth})
    found = {c: sum(1 for i, a in enumerate(truth) if a.object_type == c and i in matched) for c in classes}
    totals = {c: sum(1 for a in truth if a.object_type == c) for c in classes}
    false = [e for i, e in enumerate(inside) if i not in used]
    removals = [i for i, a in enumerate(truth) if a.object_type == "package" and not a.carried]
    removed = sum(
        1
        for i in removals
        if i in matched
        and matched[i].end_s is not None
        and truth[i].leave_s - tolerance_s <= matched[i].end_s <= truth[i].gone_s + tolerance_s
    )
    latencies = [matched[i].start_s - truth[i].arrive_s for i in matched]
    n = len(truth)
    return {
        "arrivals_found": {c: f"{found[c]}/{totals[c]}" for c in classes},
        "found_ratio": round(sum(found.values()) / n, 3) if n else None,
        "found_ratio_by_class": {c: round(found[c] / totals[c], 3) for c in classes},
        "false_events": len(false),
        "false_by_type": dict(sorted(Counter(e.object_type for e in false).items())),
        "false_per_arrival": round(len(false) / n, 3) if n else None,
        "removals_seen": f"{removed}/{len(removals)}",
        "latency_s_median": round(statistics.median(latencies), 2) if latencies else None,
        "events": len(inside),
    }


def plain_events(frames: Iterable[tuple[float, Iterable[tuple[int, str]]]], *, video_s: float) -> list[SeenEvent]:
    """The plain loop's events from (video time, [(track id, class name), ...]) per frame.

    A track id is an arrival once it has CONFIRM_HITS hits within CONFIRM_WINDOW_S; its type is
    the class most of its hits had by then. A package track unseen for PACKAGE_REMOVED_AFTER_S
    (before the video ends) is removed at its last sighting."""
    hits: dict[int, list[float]] = {}
    first_seen: dict[int, float] = {}
    votes: dict[int, Counter[str]] = {}
    confirmed: dict[int, str] = {}
    last_seen: dict[int, float] = {}
    for t, boxes in frames:
        for track_id, name in boxes:
            votes.setdefault(track_id, Counter())[name] += 1
            first_seen.setdefault(track_id, t)
            last_seen[track_id] = t
            if track_id in confirmed:
                continue
            recent = [h for h in hits.get(track_id, []) if t - h <= CONFIRM_WINDOW_S] + [t]
            hits[track_id] = recent
            if len(recent) >= CONFIRM_HITS:
                confirmed[track_id] = votes[track_id].most_common(1)[0][0]
    out = []
    for track_id, kind in confirmed.items():
        last = last_seen[track_id]
        end = last if kind == "package" and video_s - last >= PACKAGE_REMOVED_AFTER_S else None
        out.append(SeenEvent(kind, first_seen[track_id], end))
    return sorted(out, key=lambda e: e.start_s)


# --------------------------------------------------------------------------- the video


def _labels(path: Path) -> list[tuple[int, demo_video.Box]]:
    return demo_video._label_boxes(path) or []


def every_kth(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread over ``items`` in order: every k-th, k = len // count."""
    if count <= 0 or not items:
        return []
    k = max(1, len(items) // count)
    return list(items[::k][:count])


def pick_bench_photos(
    package_scenes: int,
    person_scenes: int,
    teacher_model: Path | None,
    dataset: Path = demo_video.DEFAULT_DATASET,
    person_dataset: Path = demo_video.PERSON_DATASET,
) -> tuple[list[demo_video.Photo], dict[str, Any]]:
    """The photos of the bench video by the module docstring's rule, and how many were eligible."""
    from detection_service.ml.near_duplicates import near_duplicates
    from detection_service.ml.teacher import label_images, load_teacher

    valid = sorted((dataset / "valid" / "images").glob("*.jpg"))
    dups = near_duplicates(valid, sorted((dataset / "train" / "images").glob("*.jpg")))
    fresh = [p for p in valid if p not in dups]
    if teacher_model is None:
        raise SystemExit("bench events needs the COCO teacher (../shared/models/yolov8n_coco_int8_openvino_model)")
    teacher = load_teacher(teacher_model)
    people = label_images(teacher, fresh, ["person"])
    package_candidates, door_people = [], []
    for image in fresh:
        parcels = [b for _, b in _labels(dataset / "valid" / "labels" / f"{image.stem}.txt")]
        persons = [tuple(float(v) for v in line.split()[1:5]) for line in people[image]]
        if len(parcels) == 1 and not persons:
            package_candidates.append(demo_video.Photo(image, dataset / "valid" / "labels" / f"{image.stem}.txt"))
        elif len(persons) == 1 and not any(demo_video.inside(p, persons[0]) for p in parcels):
            door_people.append(demo_video.person_photo(image, persons[0], parcels, "teacher"))  # type: ignore[arg-type]
    labelled_people = []
    folder = person_dataset / "valid"
    for label in sorted((folder / "labels").glob("*.txt")) if (folder / "labels").is_dir() else []:
        box = demo_video._label_box(label)
        image = demo_video._image_file(folder / "images", label.stem)
        if box is not None and image is not None and 0.03 <= box[2] * box[3] <= 0.4:
            labelled_people.append(demo_video.Photo(image, label, object_type="person"))
    packages = every_kth(package_candidates, package_scenes)
    from_door = (person_scenes + 1) // 2
    persons_door = every_kth(door_people, from_door)
    persons_other = every_kth(labelled_people, person_scenes - len(persons_door))
    persons = [p for pair in zip(persons_door, persons_other) for p in pair]
    persons += persons_door[len(persons_other) :] + persons_other[len(persons_door) :]
    ordered: list[demo_video.Photo] = []
    for i in range(max(len(packages), len(persons))):
        ordered += packages[i : i + 1] + persons[i : i + 1]
    eligible = {
        "valid_doorbell": len(valid),
        "near_duplicates_dropped": len(dups),
        "package_candidates": len(package_candidates),
        "doorbell_person_candidates": len(door_people),
        "capston2_person_candidates": len(labelled_people),
    }
    return ordered, eligible


# --------------------------------------------------------------------------- service run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _aidoor() -> str:
    return str(Path(sys.executable).parent / "aidoor")


def _wall(text: str) -> float:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class Service:
    """``aidoor serve`` in a subprocess with a throw-away data dir."""

    def __init__(self, work: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "AIDOOR_DATA_DIR": str(work / "data"),
            "AIDOOR_DATABASE_URL": f"sqlite:///{work / 'data' / 'aidoor.db'}",
            "AIDOOR_PORT": str(self.port),
            "AIDOOR_DAGSTER_PORT": str(_free_port()),  # nothing listens: no Dagster
            "AIDOOR_DEMO_VIDEO": "off",
            "AIDOOR_TELEGRAM_UPDATES": "off",
            "AIDOOR_LOG_LEVEL": "WARNING",
        }
        for key in ("AIDOOR_S3_ENDPOINT", "AIDOOR_PUBLIC_URL", "DAGSTER_HOME"):
            self.env.pop(key, None)
        self.log_path = work / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}

    def register(self, weights: Path) -> str:
        out = subprocess.run(
            [_aidoor(), "model", "register", str(weights), "--name", "bench-events"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        found = re.search(r"registered (\S+)", out.stdout)
        if out.returncode != 0 or not found:
            raise RuntimeError(f"aidoor model register failed: {out.stdout[-500:]} {out.stderr[-2000:]}")
        return found.group(1)

    def start(self) -> None:
        if not self.headers:  # an admin token (docs/security.md): the bench deploys and configures
            out = subprocess.run(
                [_aidoor(), "token", "create", "--role", "admin", "--name", "bench events"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if out.returncode != 0:
                raise RuntimeError(f"aidoor token create failed: {out.stderr[-2000:]}")
            self.headers = {"Authorization": f"Bearer {out.stdout.strip()}"}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - held until stop() closes it
        self.proc = subprocess.Popen(
            [_aidoor(), "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait(lambda: self.get("/api/system/health") is not None, 120, "the service did not answer")

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        response = httpx.request(method, self.url + path, timeout=120, headers=self.headers, **kw)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()["data"]

    def get(self, path: str) -> Any:
        try:
            return self.call("GET", path)
        except Exception:
            return None

    def wait(self, check: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"aidoor serve exited ({self.proc.returncode}): {self.tail()}")
            if check():
                return
            time.sleep(0.25)
        raise RuntimeError(f"{what} within {timeout_s} s: {self.tail()}")

    def cpu_s(self) -> float:
        import psutil

        proc = psutil.Process(self.proc.pid)  # type: ignore[union-attr]
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def run_service(work: Path, weights: Path, video: Path, video_s: float, fps: float, imgsz: int) -> dict[str, Any]:
    service = Service(work)
    model_id = service.register(weights)
    service.start()
    try:
        service.call("POST", f"/api/models/{model_id}/deploy")
        service.wait(lambda: (service.get("/api/detection") or {}).get("model_loaded"), 180, "the model did not load")
        service.call("PUT", "/api/detection/config", json={"imgsz": imgsz})
        status = service.get("/api/detection")
        threshold = service.call("GET", "/api/settings/detection")["confidence_threshold"]
        cpu0 = service.cpu_s()
        service.call("PUT", "/api/settings/camera", json={"source": str(video)})
        # Video time 0 = wall time of frame 0: frames_read / fps after it, taken at its lowest.
        starts: list[float] = []
        give_up = time.time() + video_s + 120
        while not starts or time.time() < min(starts) + video_s + 1.5:
            data = service.get("/api/detection") or {}
            now = time.time()
            frames_read = data.get("frames_read") or 0
            if 0 < frames_read < video_s * fps - fps:  # first pass only
                starts.append(now - frames_read / fps)
            if service.proc.poll() is not None or now > give_up:  # type: ignore[union-attr]
                raise RuntimeError(f"the video did not play: {data} {service.tail()}")
            time.sleep(1.0)
        final = service.get("/api/detection") or {}
        service.call("POST", "/api/detection/stop")
        cpu1 = service.cpu_s()
        t0 = min(starts)
        time.sleep(1.5)  # the writer commits what the stop flushed
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            data = service.call("GET", f"/api/events?page={page}&limit=100")
            items += data["items"]
            if len(items) >= data["total"] or not data["items"]:
                break
            page += 1
    finally:
        service.stop()
    events = [
        SeenEvent(e["type"], _wall(e["detected_at"]) - t0, _wall(e["ended_at"]) - t0 if e.get("ended_at") else None)
        for e in items
    ]
    return {
        "events": events,
        "cpu_s": cpu1 - cpu0,
        "backend": status.get("backend"),
        "imgsz": final.get("imgsz"),
        "inferences": final.get("inferences"),
        "gated_skips": final.get("gated_skips"),
        "model_id": model_id,
        "threshold": threshold,
    }


# --------------------------------------------------------------------------- plain loop


def run_plain(weights: Path, video: Path, video_s: float, fps: float, imgsz: int, conf: float) -> dict[str, Any]:
    import psutil
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    names = model.names
    me = psutil.Process()
    collected: list[tuple[float, list[tuple[int, str]]]] = []
    c0, w0 = me.cpu_times(), time.monotonic()
    results = model.track(
        source=str(video), stream=True, imgsz=imgsz, conf=conf, tracker="bytetrack.yaml", verbose=False, persist=True
    )
    for index, result in enumerate(results):
        boxes = result.boxes
        frame: list[tuple[int, str]] = []
        if boxes is not None and boxes.id is not None:
            frame = [(int(i), str(names[int(c)])) for i, c in zip(boxes.id.tolist(), boxes.cls.tolist())]
        collected.append((index / fps, frame))
    c1, wall = me.cpu_times(), time.monotonic() - w0
    return {
        "events": plain_events(collected, video_s=video_s),
        "cpu_s": (c1.user + c1.system) - (c0.user + c0.system),
        "wall_s": round(wall, 1),
        "frames": len(collected),
    }


# --------------------------------------------------------------------------- main


def run(
    *,
    weights: Path,
    imgsz: int | None = None,
    package_scenes: int = 6,
    person_scenes: int = 6,
    tolerance_s: float = 2.0,
    video: Path | None = None,
    keep_video: Path | None = None,
    settings: Any = None,
) -> dict[str, Any]:
    from detection_service.config import Settings
    from detection_service.ml.teacher import teacher_model_path
    from detection_service.ml.training import read_inference_config
    from detection_service.ml.ultralytics_env import configure_offline

    settings = settings or Settings.from_env()
    configure_offline(settings.data_dir)
    weights = Path(weights).resolve()
    if imgsz is None:
        config = read_inference_config(weights)
        imgsz = config.imgsz if config is not None else 320
    work = Path(tempfile.mkdtemp(prefix="aidoor-bench-events-"))
    try:
        eligible: dict[str, Any] | None = None
        if video is None:
            log.info("picking photos (teacher on the valid split)")
            photos, eligible = pick_bench_photos(package_scenes, person_scenes, teacher_model_path(settings))
            out = (Path(keep_video) if keep_video else work) / "bench-events.mp4"
            info = demo_video.build(out, photos=photos)
            video = out
        else:
            loaded = demo_video.load_info(Path(video))
            if loaded is None:
                raise SystemExit(f"{video}: no timeline sidecar ({demo_video.sidecar_path(Path(video)).name})")
            info = loaded
        truth = arrivals(info.scenes, info.fps)
        log.info("video %s: %.0f s, %d scenes; service run (real time)", video, info.seconds, len(info.scenes))
        service = run_service(work, weights, Path(video), info.seconds, info.fps, imgsz)
        log.info("plain loop")
        plain = run_plain(weights, Path(video), info.seconds, info.fps, imgsz, service["threshold"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_hour = 3600 / info.seconds
    s_score = score(truth, service["events"], video_s=info.seconds, tolerance_s=tolerance_s)
    p_score = score(truth, plain["events"], video_s=info.seconds, tolerance_s=tolerance_s)
    s_cpu, p_cpu = service["cpu_s"] * per_hour, plain["cpu_s"] * per_hour
    ratio = p_cpu / s_cpu if s_cpu else None
    result = {
        "service": {
            **s_score,
            "cpu_s_per_video_hour": round(s_cpu, 1),
            "cpu_s": round(service["cpu_s"], 1),
            "backend": service["backend"],
            "imgsz": service["imgsz"],
            "inferences": service["inferences"],
            "gated_skips": service["gated_skips"],
        },
        "plain": {
            **p_score,
            "cpu_s_per_video_hour": round(p_cpu, 1),
            "cpu_s": round(plain["cpu_s"], 1),
            "backend": "torch",
            "imgsz": imgsz,
            "wall_s": plain["wall_s"],
            "frames": plain["frames"],
        },
        "cpu_ratio_plain_over_service": round(ratio, 2) if ratio else None,
        "targets": {
            "service_found_ge_0.9": (s_score["found_ratio"] or 0) >= 0.9,
            "service_false_per_arrival_le_0.1": s_score["false_per_arrival"] is not None
            and s_score["false_per_arrival"] <= 0.1,
            "service_cpu_ge_3x_less": ratio is not None and ratio >= 3,
        },
        "weights": str(weights),
        "threshold": service["threshold"],
        "tolerance_s": tolerance_s,
        "video_seconds": info.seconds,
        "scenes": dict(sorted(Counter(s.object_type for s in info.scenes).items())),
        "scene_sources": dict(sorted(Counter(f"{s.dataset}:{s.object_type}" for s in info.scenes).items())),
        "eligible": eligible,
        "video": str(video) if keep_video or eligible is None else None,
        "cpu_count": os.cpu_count(),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    return result


def main(argv: Sequence[str] | None = None, settings: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="aidoor bench events", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="an Ultralytics .pt")
    parser.add_argument("--imgsz", type=int, help="detector input size of both runs (default: the model's, else 320)")
    parser.add_argument("--package-scenes", type=int, default=6)
    parser.add_argument("--person-scenes", type=int, default=6)
    parser.add_argument("--tolerance", type=float, default=2.0, help="seconds of slack around an arrival")
    parser.add_argument("--video", type=Path, help="a video built by an earlier run (--keep-video), with its sidecar")
    parser.add_argument("--keep-video", type=Path, help="folder to keep the built video and its sidecar in")
    args = parser.parse_args(argv)
    return run_and_print(
        run,
        weights=args.weights,
        imgsz=args.imgsz,
        package_scenes=args.package_scenes,
        person_scenes=args.person_scenes,
        tolerance_s=args.tolerance,
        video=args.video,
        keep_video=args.keep_video,
        settings=settings,
    )


if __name__ == "__main__":
    raise SystemExit(main())
