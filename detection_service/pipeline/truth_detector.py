"""A detector that answers a demo video's ground truth: for benchmarks and tests, never for a camera.

``AIDOOR_TRUTH_DETECTOR=<video>`` (a video ``aidoor demo-video`` built, with its ``door-demo.json``
sidecar) makes the service run this instead of a model (realtime/pipeline_service.py); nothing else
selects it. ``aidoor bench faults`` uses it because it measures the way from frames to rows, objects
and alerts, not a model, and a fresh machine has no trained model.

At start every frame of the video is decoded once and reduced to a 24x24 grey thumbnail. ``detect``
reduces the frame it is given the same way and takes the nearest thumbnail (mean absolute
difference): the frame's index in the video, whatever frames were dropped before, whether the
service restarted, and after a JPEG round trip (an MJPEG camera). It answers the sidecar's box of
that scene's object on the frames from ``arrive_frame`` to ``gone_frame`` (the fade-in and fade-out
included), and nothing on a frame farther than ``MAX_DISTANCE`` from every frame of the video (not
this video: counted in ``unknown``). Carried objects (a parcel in a courier's hands) are not
answered: one object per scene is the ground truth.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detection_service import demo_video
from detection_service.ml.classes import CLASS_IDS, MODEL_CLASSES
from detection_service.pipeline.detector import Detection, Detector, DetectorError

THUMB = 24
MAX_DISTANCE = 12.0  # mean grey levels; a JPEG round trip at quality 80 stays under 2
CONFIDENCE = 0.9


def _thumb(frame_bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


class TruthDetector(Detector):
    backend = "truth"

    def __init__(self, video: Path) -> None:
        super().__init__()
        video = Path(video)
        info = demo_video.load_info(video)
        if info is None:
            raise DetectorError(f"{video}: no readable sidecar {demo_video.sidecar_path(video).name}")
        cap = cv2.VideoCapture(str(video))
        thumbs = []
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                thumbs.append(_thumb(frame))
        finally:
            cap.release()
        if not thumbs:
            raise DetectorError(f"{video}: no frames")
        self.video = video
        self.info_ = info
        self.model_id = f"truth:{video.name}"
        self.imgsz = max(info.width, info.height)
        self.names = dict(enumerate(MODEL_CLASSES))
        self._thumbs = np.stack(thumbs)
        # Per frame: the boxes present (sidecar boxes are in video pixels).
        self._boxes: list[list[tuple[int, int, int, int, str]]] = [[] for _ in thumbs]
        for scene in info.scenes:
            for f in range(scene.arrive_frame, min(scene.gone_frame, len(thumbs))):
                self._boxes[f].append((*scene.bbox, scene.object_type))
        self.unknown = 0
        self.last_frame: int | None = None

    def frame_index(self, frame_bgr: np.ndarray) -> int | None:
        """The video frame ``frame_bgr`` shows (the nearest one), or None if it is none of them."""
        distances = np.abs(self._thumbs - _thumb(frame_bgr)).mean(axis=1)
        best = int(np.argmin(distances))
        return best if distances[best] <= MAX_DISTANCE else None

    def _detect(self, frame_bgr: np.ndarray, conf: float) -> list[Detection]:
        index = self.frame_index(frame_bgr)
        self.last_frame = index
        if index is None:
            self.unknown += 1
            return []
        sx = frame_bgr.shape[1] / self.info_.width
        sy = frame_bgr.shape[0] / self.info_.height
        return [
            Detection(x1 * sx, y1 * sy, x2 * sx, y2 * sy, CLASS_IDS[kind], kind, CONFIDENCE)
            for x1, y1, x2, y2, kind in self._boxes[index]
            if conf <= CONFIDENCE
        ]

    def info(self) -> dict:  # type: ignore[type-arg]
        return {**super().info(), "truth_video": str(self.video), "unknown_frames": self.unknown}
