"""Frequent visitors (issue 12, item 5): the appearance embedding and the grouping on synthetic people
with planted identities (deterministic: drawn figures, seeded noise), and
GET /api/analytics/frequent-visitors (visits merged per track, usual local hours, a signed
thumbnail, each bad value a 400, the "no person model" and "no person events" answers)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.database import make_engine, make_session_factory
from detection_service.errors import Invalid
from detection_service.services.visitors import (
    EMBEDDING_DIM,
    VisitorService,
    appearance_embedding,
    group_embeddings,
    model_detects_person,
    pairwise_precision_recall,
)
from detection_service.storage import make_object_store
from detection_service.storage.keys import event_image_key
from schemas.db import DetectionEvent, EventImage, Model, ObjectType, utcnow

ZONE = ZoneInfo("Asia/Seoul")  # the default alert time zone

# Planted identities: (head, upper body, lower body, shoes) colours, BGR. B shares A's shirt and C
# shares A's trousers: only where the colours sit tells them apart.
PEOPLE = {
    "A": ((40, 60, 90), (30, 30, 200), (120, 60, 20), (20, 20, 20)),  # red shirt, blue jeans
    "B": ((40, 60, 90), (30, 30, 200), (200, 200, 200), (20, 20, 20)),  # red shirt, light grey trousers
    "C": ((40, 60, 90), (40, 160, 40), (120, 60, 20), (230, 230, 230)),  # green shirt, blue jeans
    "D": ((30, 30, 30), (0, 200, 230), (30, 30, 30), (20, 20, 20)),  # yellow jacket, black trousers
    "E": ((40, 60, 90), (160, 80, 150), (60, 90, 120), (20, 20, 20)),  # purple top, brown trousers
}


def draw_scene(person: str, rng: random.Random, size=(480, 640)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A door scene (noisy background) with the person drawn at a random place and scale, under a
    random brightness; returns the frame and the person's box (x1, y1, x2, y2)."""
    height, width = size
    frame = np.full((height, width, 3), 120, np.uint8)  # one door: the same wall every time
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 40, (height, width, 3), dtype=np.uint8)
    frame = cv2.add(frame, noise)
    box_h = rng.randrange(220, 420)
    box_w = int(box_h * rng.uniform(0.36, 0.45))
    x1, y1 = rng.randrange(0, width - box_w), rng.randrange(0, height - box_h)
    head, upper, lower, shoes = PEOPLE[person]
    # Body parts as shares of the box height; a little background stays beside the figure.
    parts = ((0.0, 0.15, head, 0.3), (0.15, 0.55, upper, 0.05), (0.55, 0.93, lower, 0.12), (0.93, 1.0, shoes, 0.12))
    for top, bottom, colour, inset in parts:
        shade = rng.randrange(-5, 6)  # folds and shadows: a part a little lighter or darker
        jitter = tuple(int(np.clip(c + shade, 0, 255)) for c in colour)
        cv2.rectangle(
            frame,
            (x1 + int(box_w * inset), y1 + int(box_h * top)),
            (x1 + box_w - int(box_w * inset), y1 + int(box_h * bottom)),
            jitter,
            -1,
        )
    # Sensor noise over everything (cloth is never one flat colour), then the light of the moment.
    grain = np.random.default_rng(rng.randrange(1 << 30)).normal(0.0, 4.0, frame.shape)
    frame = np.clip(frame.astype(np.float64) + grain, 0, 255).astype(np.uint8)
    frame = cv2.convertScaleAbs(frame, alpha=rng.uniform(0.7, 1.3), beta=rng.uniform(-15, 15))
    return frame, (x1, y1, x1 + box_w, y1 + box_h)


def test_embedding_is_normalised_and_scale_free():
    rng = random.Random(1)
    frame, box = draw_scene("A", rng)
    embedding = appearance_embedding(frame, box)
    assert embedding is not None and embedding.shape == (EMBEDDING_DIM,)
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5
    x1, y1, x2, y2 = box
    crop = frame[y1:y2, x1:x2]
    half = cv2.resize(crop, (crop.shape[1] // 2, crop.shape[0] // 2), interpolation=cv2.INTER_AREA)
    assert float(appearance_embedding(half) @ embedding) > 0.97  # the same person at half the size
    assert appearance_embedding(frame, (10, 10, 14, 14)) is None  # too small to say anything


def test_grouping_recovers_planted_identities():
    rng = random.Random(7)
    truth, vectors = [], []
    for person in PEOPLE:
        for _ in range(6):
            frame, box = draw_scene(person, rng)
            vectors.append(appearance_embedding(frame, box))
            truth.append(person)
    labels = group_embeddings(np.stack(vectors))
    scores = pairwise_precision_recall(labels, truth)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0, scores
    assert len(set(labels)) == len(PEOPLE)


def test_pairwise_scores_count_pairs():
    # Two groups of 2 predicted as one group of 3 and one single.
    scores = pairwise_precision_recall([0, 0, 0, 1], ["a", "a", "b", "b"])
    assert scores == {"precision": 1 / 3, "recall": 1 / 2, "true_pairs": 2, "predicted_pairs": 3}
    # A pair of different identities whose relation is unknown (here 1-2) is left out.
    ignored = pairwise_precision_recall([0, 0, 0, 1], ["a", "a", "b", "b"], ignore=lambda i, j: {i, j} == {1, 2})
    assert ignored == {"precision": 1 / 2, "recall": 1 / 2, "true_pairs": 2, "predicted_pairs": 2}


def test_model_detects_person_from_its_metrics():
    assert model_detects_person({"per_class": [["person", 10, 25, 0.5], ["package", 5, 9, 0.4]]})
    assert not model_detects_person({"per_class": [["person", 0, 0, 0.0], ["package", 5, 9, 0.4]]})
    assert model_detects_person({"classes": ["person", "car"], "class_mapping": {"mapped": {"person": "person"}}})
    assert not model_detects_person({"classes": ["Box"], "class_mapping": {"mapped": {"Box": "package"}}})
    assert not model_detects_person(None)


# --- the door: person events with captures in the object store --------------------------------


def local(day_back: int, hour: int, minute: int = 0) -> datetime:
    day = datetime.now(ZONE).date() - timedelta(days=day_back)
    return datetime.combine(day, time(hour, minute), tzinfo=ZONE).astimezone(UTC).replace(tzinfo=None)


class Door:
    def __init__(self, session_factory, store) -> None:
        self.session_factory, self.store = session_factory, store
        with session_factory() as session:
            self.types = dict(session.execute(sa.select(ObjectType.code, ObjectType.id)).all())
        self.rng = random.Random(3)

    def visit(self, person: str, at: datetime, tracking_id: int | None = None, captures: int = 3) -> int:
        """One person event with ``captures`` JPEGs; the box of the first goes top-level, the
        others under ``frames`` (docs/datasets.md)."""
        with self.session_factory.begin() as session:
            event = DetectionEvent(
                object_type_id=self.types["person"],
                detected_at=at,
                ended_at=at + timedelta(seconds=30),
                tracking_duration=30,
                tracking_id=tracking_id,
                confidence_score=0.8,
                status="active",
            )
            session.add(event)
            session.flush()
            bbox: dict = {"frames": {}}
            for seq in range(1, captures + 1):
                frame, (x1, y1, x2, y2) = draw_scene(person, self.rng)
                key = event_image_key(event.id, at, seq)
                self.store.put_bytes(key, cv2.imencode(".jpg", frame)[1].tobytes(), "image/jpeg")
                session.add(EventImage(event_id=event.id, image_path=key, sequence_number=seq, captured_at=at))
                box = {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "width": frame.shape[1], "height": frame.shape[0]}
                if seq == 1:
                    event.image_path = key
                    bbox.update(box)
                else:
                    bbox["frames"][str(seq)] = box
            event.bbox_coordinates = json.dumps(bbox)
            return event.id


def data(response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is (status < 400) and "timestamp" in body
    return body["data"] if status < 400 else body["error"]


def test_frequent_visitors_groups_visits(client):
    door = Door(client.app.state.session_factory, client.app.state.object_store)
    a_events = [door.visit("A", local(back, 8, 10 + back)) for back in (1, 2, 3, 5)]
    # One presence split into two events of the same track: one visit.
    a_events += [door.visit("A", local(7, 18, 0), tracking_id=42), door.visit("A", local(7, 18, 1), tracking_id=42)]
    b_events = [door.visit("D", local(2, 19, 30)), door.visit("D", local(4, 19, 45))]
    door.visit("E", local(6, 12, 0))  # once: not a frequent visitor
    door.visit("C", local(45, 8, 0))  # outside the 30-day window

    result = data(client.get("/api/analytics/frequent-visitors", params={"days": 30}))
    assert result["status"] == "ok" and result["person_detection"] is False  # no model deployed in tests
    assert "does not detect people" in result["message"]
    assert result["person_events"] == 9 and result["visits"] == 8 and result["grouped_visits"] == 8
    assert result["time_zone"] == "Asia/Seoul"
    first, second = result["visitors"]
    assert (first["visitor_id"], first["visits"], first["events"]) == (1, 5, 6)
    assert first["event_ids"] == sorted(a_events)
    # 4 of 5 visits at 08 local: 80 % of the visits, so 08 alone is the usual hour.
    assert first["usual_hours"] == [8] and sum(first["visits_by_hour"]) == 5 and first["visits_by_hour"][18] == 1
    assert first["first_visit"].startswith(local(7, 18).isoformat()[:16])
    assert first["last_visit"].startswith(local(1, 8, 11).isoformat()[:16])
    assert (second["visits"], second["event_ids"], second["usual_hours"]) == (2, sorted(b_events), [19])
    # The thumbnail is one of the visitor's captures, behind a signed link that works.
    thumb = first["thumbnail"]
    assert thumb["event_id"] in a_events and thumb["bbox"]["x2"] > thumb["bbox"]["x1"]
    link = urlsplit(thumb["url"])
    image = client.get(f"{link.path}?{link.query}")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"

    everyone = data(client.get("/api/analytics/frequent-visitors", params={"days": 30, "min_visits": 1}))
    assert [v["visits"] for v in everyone["visitors"]] == [5, 2, 1]
    assert everyone["visitors_total"] == 3
    top = data(client.get("/api/analytics/frequent-visitors", params={"days": 30, "min_visits": 1, "limit": 1}))
    assert len(top["visitors"]) == 1 and top["visitors_total"] == 3
    older = data(client.get("/api/analytics/frequent-visitors", params={"days": 60, "min_visits": 2}))
    assert older["person_events"] == 10 and older["visitors"][0]["visits"] == 5


def test_the_answer_is_cached_until_person_events_change(client, monkeypatch):
    """A repeated call reuses the answer (no events, images or captures read again); a new event, a
    relabel, a false-positive mark and a capture added to an event each make the next call recompute."""
    from detection_service.services.visitors import VisitorService
    from detection_service.storage import StorageError

    state = client.app.state
    door = Door(state.session_factory, state.object_store)
    a_first = door.visit("A", local(1, 8, 10))
    door.visit("A", local(2, 8, 20))
    d_first = door.visit("D", local(3, 19, 30))
    service = VisitorService(state.session_factory, state.object_store, "Asia/Seoul")
    loads = []
    real_load = service._load
    monkeypatch.setattr(service, "_load", lambda *a: loads.append(1) or real_load(*a))

    first = service.visitors(30, min_visits=1)
    assert service.visitors(30, min_visits=1) is first and len(loads) == 1
    assert first.person_events == 3 and [v.visits for v in first.visitors] == [2, 1]
    assert service.visitors(30, min_visits=2) is not first and len(loads) == 2  # another question

    door.visit("D", local(4, 19, 40))  # a new person event shows at once
    assert service.visitors(30, min_visits=1).person_events == 4 and len(loads) == 3
    with state.session_factory.begin() as session:  # relabelled: no longer a person
        session.get(DetectionEvent, a_first).object_type_id = door.types["package"]
    relabelled = service.visitors(30, min_visits=1)
    assert relabelled.person_events == 3 and len(loads) == 4
    assert service.visitors(30, min_visits=1) is relabelled and len(loads) == 4
    with state.session_factory.begin() as session:
        session.get(DetectionEvent, d_first).is_false_positive = True
    assert service.visitors(30, min_visits=1).person_events == 2 and len(loads) == 5
    with state.session_factory.begin() as session:  # a capture added to an event being recorded
        key = event_image_key(d_first, local(3, 19, 30), 9)
        session.add(EventImage(event_id=d_first, image_path=key, sequence_number=9, captured_at=local(3, 19, 30)))
    service.visitors(30, min_visits=1)
    assert len(loads) == 6

    # An answer made while a capture could not be read is not kept: the store is asked again.
    cold = VisitorService(state.session_factory, state.object_store, "Asia/Seoul")
    real_get = state.object_store.get_bytes

    def flaky(key):
        raise StorageError("store down")

    monkeypatch.setattr(state.object_store, "get_bytes", flaky)
    degraded = cold.visitors(30, min_visits=1)
    assert degraded.grouped_visits == 0
    monkeypatch.setattr(state.object_store, "get_bytes", real_get)
    assert cold.visitors(30, min_visits=1).grouped_visits == 2
    # Off, or past its time to live: computed every call.
    off = VisitorService(state.session_factory, state.object_store, "Asia/Seoul", cache=False)
    assert off.visitors(30) is not off.visitors(30)
    service._answer_ttl_s = 0.0
    assert service.visitors(30, min_visits=1) is not service.visitors(30, min_visits=1)


def test_frequent_visitors_without_person_model(client):
    result = data(client.get("/api/analytics/frequent-visitors"))
    assert result["status"] == "no_person_model" and result["person_detection"] is False
    assert result["visitors"] == [] and "does not detect people" in result["message"]
    assert (result["days"], result["min_visits"]) == (30, 2)


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"days": 0}, "INVALID_DAYS", "days"),
        ({"days": 366}, "INVALID_DAYS", "days"),
        ({"min_visits": 0}, "INVALID_MIN_VISITS", "min_visits"),
        ({"min_visits": 1001}, "INVALID_MIN_VISITS", "min_visits"),
        ({"limit": 0}, "INVALID_LIMIT", "limit"),
        ({"limit": 501}, "INVALID_LIMIT", "limit"),
        ({"days": "week"}, "VALIDATION_ERROR", None),
    ],
)
def test_frequent_visitors_bad_values(client, params, code, field):
    error = data(client.get("/api/analytics/frequent-visitors", params=params), 400)
    assert error["code"] == code
    if field:
        assert error["details"]["field"] == field


def test_person_model_without_person_events(settings):
    """A deployed model that knows people and a window without any: said so, not an empty list
    that looks like a quiet door. (A standalone service: no app whose model loader would try to
    load the fake model row.)"""
    engine = make_engine(settings.database_url)
    try:
        session_factory = make_session_factory(engine)
        store = make_object_store(settings)
        store.ensure_bucket()
        service = VisitorService(session_factory, store)
        with session_factory.begin() as session:
            session.add(
                Model(
                    model_id="m1",
                    model_name="starter",
                    model_path="models/m1/best.pt",
                    version="1",
                    is_current=True,
                    metrics={"per_class": [["person", 40, 90, 0.5, 0.5, 0.4, 0.3]]},
                )
            )
        result = service.visitors(days=7)
        assert result.status == "no_person_events" and result.person_detection is True
        assert result.visitors == [] and "No person was recorded" in result.message
        door = Door(session_factory, service.store)
        door.visit("B", utcnow() - timedelta(hours=3))
        door.visit("B", utcnow() - timedelta(hours=1))
        grouped = service.visitors(days=7)
        assert grouped.status == "ok" and grouped.person_detection is True
        assert [v.visits for v in grouped.visitors] == [2]
        assert "does not detect" not in grouped.message
        # An explicit window (a report's week): only the visit inside it.
        now = datetime.now(UTC)
        window = service.between(now - timedelta(hours=2), now, min_visits=1)
        assert window.person_events == 1 and [v.visits for v in window.visitors] == [1] and window.days == 1
        with pytest.raises(Invalid) as bad:
            service.between(now, now - timedelta(hours=2))
        assert bad.value.code == "INVALID_DATE_RANGE"
    finally:
        engine.dispose()


def test_bench_on_the_identity_set():
    """`aidoor bench visitors` on real people with known identities (../shared/datasets): the
    figures docs/analytics.md reports, as a floor."""
    from detection_service.bench.visitors import DEFAULT_DATASET, identity_set, run

    if not DEFAULT_DATASET.is_dir():
        pytest.skip(f"{DEFAULT_DATASET} is not there")
    crops = identity_set(DEFAULT_DATASET)
    # Each crop's identity is its video plus a frame and a rank, or the one person of a one-person video.
    assert len(crops) > 150 and all(c.identity.startswith(c.video) for c in crops)
    result = run(DEFAULT_DATASET, 0.08)
    assert result["identity_set"]["identities_with_2_or_more_crops"] >= 30
    assert result["visitors_precision"] >= 0.9 and result["visitors_recall"] >= 0.7, result
    # The part-based descriptor beats one histogram of the whole crop.
    baseline = result["baseline_global_hsv"]["all"]
    assert result["visitors_precision"] > baseline["precision"] and result["visitors_recall"] > baseline["recall"]
