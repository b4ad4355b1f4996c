"""The truth detector of ``aidoor bench faults`` (AIDOOR_TRUTH_DETECTOR): it recognises the demo frame
it is given, also after a JPEG round trip, answers the sidecar's box on the frames the object is
there, and nothing on a frame of another video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detection_service import demo_video
from detection_service.pipeline.detector import DetectorHolder
from detection_service.pipeline.truth_detector import TruthDetector

pytestmark = pytest.mark.skipif(not demo_video.dataset_available(), reason="the doorbell dataset is needed")


def test_the_truth_detector_answers_the_sidecar(tmp_path: Path) -> None:
    video = tmp_path / "door-demo.mp4"
    info = demo_video.build(video, scenes=1, person_scenes=1, max_frames=120)
    detector = TruthDetector(video)
    holder = DetectorHolder(detector)  # the service's normal way to a detector
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (read := cap.read())[0]:
        frames.append(read[1])
    cap.release()
    assert len(frames) == info.frames
    for index in range(0, len(frames), 3):  # every third frame: dropped frames do not matter
        jpeg = cv2.imdecode(cv2.imencode(".jpg", frames[index], [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)
        found = holder.get().detect(jpeg)  # type: ignore[union-attr]
        scene = next(s for s in info.scenes if s.start_frame <= index < s.end_frame)
        if scene.arrive_frame <= index < scene.gone_frame:
            assert [(d.class_name, tuple(round(v) for v in d.xyxy)) for d in found] == [
                (scene.object_type, scene.bbox)
            ], index
        else:
            assert found == [], index
    assert detector.detect(np.full((640, 640, 3), 200, np.uint8)) == [] and detector.unknown == 1
    assert detector.info()["backend"] == "truth"
