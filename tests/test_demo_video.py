"""`aidoor demo-video`: built from the shared dataset's real photos (short versions here), and
played by the service when no camera source is configured."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest

from detection_service import demo_video
from detection_service.app import create_app
from detection_service.cli import main as cli_main
from tests.conftest import AuthedTestClient as TestClient  # sends an admin token
from tests.pipeline.conftest import wait_until

pytestmark = pytest.mark.skipif(
    not demo_video.dataset_available(), reason=f"shared dataset missing: {demo_video.DEFAULT_DATASET}"
)


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory: pytest.TempPathFactory) -> demo_video.DemoInfo:
    return demo_video.build(tmp_path_factory.mktemp("demo") / "door-demo.mp4", scenes=2, person_scenes=1, max_frames=90)


def test_build_a_short_demo(short_demo: demo_video.DemoInfo):
    path = Path(short_demo.path)
    frames = _frames(path)
    assert len(frames) == short_demo.frames and 75 <= short_demo.frames <= 100
    assert frames[0].shape == (640, 640, 3) and short_demo.fps == 15
    assert demo_video.load_info(path) == short_demo
    assert json.loads(demo_video.sidecar_path(path).read_text())["credit"].startswith("Doorbell Camera Alert")
    # parcel, person, parcel; each scene starts where the last one ended
    assert [s.object_type for s in short_demo.scenes] == ["package", "person", "package"]
    assert all(b.start_frame == a.end_frame for a, b in zip(short_demo.scenes, short_demo.scenes[1:]))
    assert short_demo.scenes[-1].end_frame == short_demo.frames
    for scene in short_demo.scenes:
        assert scene.start_frame < scene.arrive_frame < scene.present_frame <= scene.leave_frame < scene.gone_frame
        x1, y1, x2, y2 = scene.bbox
        empty, present, gone = (
            frames[i].astype(int) for i in (scene.start_frame, scene.present_frame, scene.gone_frame)
        )
        inside = (slice(y1, y2), slice(x1, x2))
        # The parcel changes its box, and (almost) nothing else changes.
        assert np.abs(present[inside] - empty[inside]).mean() > 15
        outside = np.ones(empty.shape[:2], bool)
        outside[max(0, y1 - 40) : y2 + 40, max(0, x1 - 40) : x2 + 40] = False
        assert np.abs(present - empty)[outside].mean() < 3
        assert np.abs(gone - empty).mean() < 3
    # Different doors (real photos, not a synthetic pattern).
    assert len({s.image for s in short_demo.scenes}) == 3


def test_person_scene_is_a_courier_at_a_real_door(short_demo: demo_video.DemoInfo):
    """The person scene: a held-out doorbell frame, the teacher's person box (a tall box, not a
    parcel's), the parcel in his hands marked as carried; the person fades in and out."""
    person = short_demo.scenes[1]
    assert person.dataset == "doorbell-camera-alert-v4" and person.image.startswith("valid/")
    assert person.box_source == "teacher" and person.carried == ("package",)
    x1, y1, x2, y2 = person.bbox
    assert (y2 - y1) > 2 * (x2 - x1) and (y2 - y1) > 300
    frames = _frames(Path(short_demo.path))
    inside = (slice(y1, y2), slice(x1, x2))
    diffs = [
        np.abs(frames[i][inside].astype(int) - frames[person.start_frame][inside]).mean()
        for i in range(person.start_frame, person.end_frame)
    ]
    arrive, gone = person.arrive_frame - person.start_frame, person.gone_frame - person.start_frame
    # nothing before the arrival, a rising fade, the whole person while present, nothing after
    assert max(diffs[:arrive]) < 1 and max(diffs[gone:]) < 3
    fade = diffs[arrive : person.present_frame - person.start_frame + 1]
    assert fade == sorted(fade) and diffs[person.present_frame - person.start_frame] > 15


def test_person_photo_clears_parcels_it_does_not_carry():
    person = (0.5, 0.5, 0.2, 0.6)
    photo = demo_video.person_photo(Path("x.jpg"), person, [(0.52, 0.6, 0.08, 0.1), (0.15, 0.85, 0.1, 0.1)], "label")
    assert photo.object_type == "person" and photo.carried == ("package",)
    assert photo.clear == ((0.15, 0.85, 0.1, 0.1),)
    alone = demo_video.person_photo(Path("x.jpg"), person, [(0.15, 0.85, 0.1, 0.1)], "label")
    assert alone.carried == () and len(alone.clear) == 1


def test_a_demo_of_the_old_format_is_rebuilt(settings, monkeypatch):
    """An install upgraded from parcel-only demos gets the people too: ensure() rebuilds a sidecar
    without the current version, and reuses a current one."""
    default = demo_video.default_path(settings.data_dir)
    default.parent.mkdir(parents=True)
    default.write_bytes(b"old")
    demo_video.sidecar_path(default).write_text(
        json.dumps(
            {"path": str(default), "fps": 15, "frames": 1, "width": 640, "height": 640, "seconds": 0.1, "scenes": []}
        )
    )
    assert demo_video.load_info(default).version == 1
    built: list[Path] = []
    real_build = demo_video.build

    def short_build(out: Path, dataset: Path = demo_video.DEFAULT_DATASET, **kw):
        built.append(out)
        return real_build(out, dataset, scenes=1, person_scenes=1, max_frames=20)

    monkeypatch.setattr(demo_video, "build", short_build)
    assert demo_video.ensure(settings.data_dir) == default and built == [default]
    assert demo_video.load_info(default).version == demo_video.DEMO_VERSION
    assert demo_video.ensure(settings.data_dir) == default and len(built) == 1


def test_cli_builds_into_the_given_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "cli" / "demo.mp4"
    assert cli_main(["demo-video", "--out", str(out), "--scenes", "1", "--frames", "30", "--fps", "10"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["path"] == str(out) and out.is_file() and printed["fps"] == 10
    assert printed["scenes"][0].startswith("valid/")  # the first scene is a held-out photo
    assert printed["types"] == ["package", "person"]  # --person-scenes defaults to 1
    assert cli_main(["demo-video", "--out", str(out), "--scenes", "0", "--person-scenes", "2", "--frames", "20"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["types"] == ["person", "person"]


def test_service_plays_the_demo_video_when_no_camera_is_set(settings, short_demo):
    with TestClient(create_app(msgspec.structs.replace(settings, demo_video=short_demo.path))) as client:
        assert wait_until(lambda: client.get("/api/detection").json()["data"]["camera_status"] == "connected", 8)
        data = client.get("/api/detection").json()["data"]
        assert data["status"] == "running" and data["demo"] is True and data["source"] == short_demo.path
        assert client.get("/api/detection/config").json()["data"]["demo_video"] == short_demo.path
        assert client.get("/api/settings/camera").json()["data"]["source"] == ""  # the stored setting is untouched
        # A configured camera replaces the demo at once; clearing it brings the demo back.
        client.put("/api/settings/camera", json={"source": "push"})
        data = client.get("/api/detection").json()["data"]
        assert data["demo"] is False and data["source"] == "push"
        client.put("/api/settings/camera", json={"source": ""})
        assert client.get("/api/detection").json()["data"]["demo"] is True
    with TestClient(create_app(msgspec.structs.replace(settings, demo_video="off"))) as client:
        data = client.get("/api/detection").json()["data"]
        assert data["status"] == "stopped" and data["demo"] is False and data["source"] is None


def test_auto_policy_builds_the_default_demo_and_plays_it(settings, monkeypatch):
    """What `make run` does (AIDOOR_DEMO_VIDEO=auto): build the demo in the background, then play it."""
    built: list[Path] = []
    real_build = demo_video.build

    def short_build(out: Path, dataset: Path = demo_video.DEFAULT_DATASET, **kw):
        built.append(out)
        return real_build(out, dataset, scenes=1, person_scenes=0, max_frames=20)

    monkeypatch.setattr(demo_video, "build", short_build)
    with TestClient(create_app(msgspec.structs.replace(settings, demo_video="auto"))) as client:
        assert wait_until(lambda: client.get("/api/detection").json()["data"]["demo"], 15)
        assert wait_until(lambda: client.get("/api/detection").json()["data"]["camera_status"] == "connected", 8)
    default = demo_video.default_path(settings.data_dir)
    assert built == [default] and default.is_file()
    assert demo_video.ensure(settings.data_dir) == default and len(built) == 1  # built once, then reused
