"""`aidoor bench events`: scoring of events against the video's timeline, and the plain loop's
event rule (pure functions; the benchmark itself runs the service for minutes)."""

from __future__ import annotations

import pytest

from detection_service.bench.events import Arrival, SeenEvent, arrivals, every_kth, plain_events, score
from detection_service.demo_video import Scene

FPS = 10.0


def _scene(start: int, kind: str, carried: tuple[str, ...] = ()) -> Scene:
    # arrive 3 s after the start, fully there at +4 s, leaves at +14 s, gone at +15 s, ends at +27 s
    return Scene(
        image=f"valid/{start}.jpg",
        bbox=(0, 0, 10, 10),
        start_frame=start,
        arrive_frame=start + 30,
        present_frame=start + 40,
        leave_frame=start + 140,
        gone_frame=start + 150,
        end_frame=start + 270,
        object_type=kind,
        carried=carried,
    )


TIMELINE = [_scene(0, "package"), _scene(270, "person"), _scene(540, "package")]
VIDEO_S = 81.0


def test_arrivals_come_from_the_timeline_with_carried_objects():
    truth = arrivals([_scene(0, "package"), _scene(270, "person", carried=("package",))], FPS)
    assert [(a.object_type, a.scene, a.carried) for a in truth] == [
        ("package", 0, False),
        ("person", 1, False),
        ("package", 1, True),
    ]
    assert truth[1].arrive_s == 30.0 and truth[1].present_s == 31.0 and truth[1].gone_s == 42.0


def test_score_counts_found_arrivals_false_events_and_removals():
    truth = arrivals(TIMELINE, FPS)
    events = [
        SeenEvent("package", 3.4, 14.2),  # scene 0: found, removed within its window
        SeenEvent("package", 9.0, None),  # a second event for the same parcel: false
        SeenEvent("unclassified", 31.0, 33.0),  # not a class: false, even during the person's stay
        SeenEvent("person", 30.5, 40.0),  # scene 1: found
        SeenEvent(
            "package", 58.0, 76.0
        ),  # scene 2 (arrives 57 s): found, but ended 7 s after gone (69 s): not a removal seen
        SeenEvent("person", 90.0, None),  # after the video: ignored
    ]
    result = score(truth, events, video_s=VIDEO_S, tolerance_s=2.0)
    assert result["arrivals_found"] == {"package": "2/2", "person": "1/1"} and result["found_ratio"] == 1.0
    assert result["false_events"] == 2 and result["false_by_type"] == {"package": 1, "unclassified": 1}
    assert result["false_per_arrival"] == round(2 / 3, 3)
    assert result["removals_seen"] == "1/2"
    assert result["events"] == 5
    assert result["latency_s_median"] == 0.5  # 0.4, 0.5, 1.0


def test_an_event_outside_the_tolerance_or_of_another_type_finds_nothing():
    truth = arrivals(TIMELINE, FPS)
    late = [SeenEvent("person", 31.0 + 2.5, None)]  # present at 31 s, 2.5 s later than the tolerance allows
    result = score(truth, late, video_s=VIDEO_S, tolerance_s=2.0)
    assert result["arrivals_found"]["person"] == "0/1" and result["false_events"] == 1
    assert score(truth, late, video_s=VIDEO_S, tolerance_s=3.0)["arrivals_found"]["person"] == "1/1"
    early = [SeenEvent("package", 0.5, None)]  # 2.5 s before the parcel starts to appear
    assert score(truth, early, video_s=VIDEO_S)["arrivals_found"]["package"] == "0/2"
    wrong = [SeenEvent("person", 3.5, None)]  # a person while a parcel arrives
    result = score(truth, wrong, video_s=VIDEO_S)
    assert result["found_ratio"] == 0.0 and result["false_by_type"] == {"person": 1}


def test_one_event_finds_one_arrival_only():
    # two parcels arriving at once (one carried); one package event finds one of them
    truth = [Arrival("package", 0, 3.0, 4.0, 14.0, 15.0), Arrival("package", 0, 3.0, 4.0, 14.0, 15.0, carried=True)]
    result = score(truth, [SeenEvent("package", 3.5, 15.0)], video_s=30.0)
    assert result["arrivals_found"] == {"package": "1/2"} and result["removals_seen"] == "1/1"


def test_plain_events_confirm_after_three_hits_and_remove_after_ten_seconds():
    frames = []
    for i in range(400):  # 40 s at 10 fps
        t = i / FPS
        boxes = []
        if 5.0 <= t < 12.0:
            boxes.append((1, "package" if i % 4 else "person"))  # mostly package: typed package
        if t in (20.0, 21.5):
            boxes.append((2, "person"))  # two hits only: never an arrival
        if t in (22.0, 23.0, 24.5):
            boxes.append((3, "person"))  # three hits, but not within 2 s: never an arrival
        if t >= 30.0:
            boxes.append((4, "package"))  # still there at the end: not removed
        frames.append((t, boxes))
    events = plain_events(frames, video_s=40.0)
    assert [(e.object_type, e.start_s) for e in events] == [("package", 5.0), ("package", 30.0)]
    assert events[0].end_s == pytest.approx(11.9) and events[1].end_s is None
    # a package gone less than 10 s before the end is not (yet) removed
    assert plain_events(frames[:200], video_s=20.0)[0].end_s is None


def test_every_kth_spreads_the_pick_over_the_candidates():
    assert every_kth(list(range(10)), 3) == [0, 3, 6]
    assert every_kth(list(range(4)), 6) == [0, 1, 2, 3]
    assert every_kth([], 3) == [] and every_kth([1, 2], 0) == []
