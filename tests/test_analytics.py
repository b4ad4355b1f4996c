"""Analytics API (issue 12, items 1-3): statistics, patterns and anomalies on a door with a planted
rhythm (weekday deliveries 10:00-12:00, people at fixed hours, packages taken in the evening by a
person) and planted oddities (a visit at 03:00, a person present 20 minutes, a package taken at
02:00). Times are built in the alert time zone (the default, Asia/Seoul), stored as UTC."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from detection_service.services.analytics import AnalyticsService, covering_runs, poisson_tail
from schemas.db import DetectionEvent, ObjectType, utcnow

ZONE = ZoneInfo("Asia/Seoul")
PERSON_HOURS = (8, 12, 13, 17, 18, 19)
HISTORY_DAYS = 90


def data(response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is (status < 400) and "timestamp" in body
    return body["data"] if status < 400 else body["error"]


def utc(day: date, hour: int, minute: int = 0, second: int = 0, zone: ZoneInfo = ZONE) -> datetime:
    local = datetime.combine(day, time(hour, minute, second), tzinfo=zone)
    return local.astimezone(UTC).replace(tzinfo=None)


class Door:
    """Writes events as rows (bulk, ids ascending with time as in real life)."""

    def __init__(self, session_factory) -> None:
        self.session_factory = session_factory
        with session_factory() as session:
            self.types = dict(session.execute(sa.select(ObjectType.code, ObjectType.id)).all())
        self.rows: list[dict] = []

    def add(self, code: str, at: datetime, duration_s: int | None = 20, confidence: float = 0.8) -> dict:
        row = {
            "object_type_id": self.types[code],
            "detected_at": at,
            "confidence_score": confidence,
            "tracking_duration": duration_s,
            "ended_at": at + timedelta(seconds=duration_s) if duration_s else None,
            "status": "active",
            "model_version": "yolo_v1",
            "created_at": at,
            "updated_at": at,
        }
        self.rows.append(row)
        return row

    def write(self) -> dict[int, int]:
        """Insert in time order; returns {id(row): event id}."""
        self.rows.sort(key=lambda r: r["detected_at"])
        ids = {}
        with self.session_factory.begin() as session:
            for row in self.rows:
                ids[id(row)] = session.execute(sa.insert(DetectionEvent).values(**row)).inserted_primary_key[0]
        self.rows = []
        return ids


def plant(session_factory, today: date) -> dict[str, int]:
    """90 days of rhythm before the anomaly window (the last 7 local days) and through it; the
    planted cases inside the window. Returns the planted event ids."""
    rng = random.Random(12)
    door = Door(session_factory)
    taken_day = today - timedelta(days=4)
    deliveries = {"mail": 0, "package": 0}

    def delivery_time(code: str, day: date) -> datetime:
        # 10:00-12:00, each half hour in turn (the minute inside it random): any month of history
        # then holds the four half hours alike, whatever today's date, so the window a pattern
        # covers is the whole 10:00-12:00 and not a chance 10:30-12:00 of one month's draws.
        rng.choice((10, 11))  # the draws of the rhythm before, so the rest of the door stays as it was
        half_hour, minute = 20 + deliveries[code] % 4, rng.randrange(60) % 30
        deliveries[code] += 1
        return utc(day, half_hour // 2, 30 * (half_hour % 2) + minute)

    for back in range(HISTORY_DAYS + 6, 0, -1):
        day = today - timedelta(days=back)
        for hour in PERSON_HOURS:
            door.add("person", utc(day, hour, rng.randrange(60), rng.randrange(60)), rng.randint(10, 90))
        if day.weekday() < 5:
            door.add("mail", delivery_time("mail", day), 5)
            if day != taken_day:
                arrived = delivery_time("package", day)
                removed = utc(day, rng.choice((18, 19)), rng.randrange(60))
                door.add("package", arrived, int((removed - arrived).total_seconds()))
                door.add("person", removed - timedelta(seconds=20), 30)  # the resident takes it
    visit = door.add("person", utc(today - timedelta(days=2), 3, 5), 20)
    loiter = door.add("person", utc(today - timedelta(days=2), 13, 40), 1200)
    arrived = utc(taken_day, 10, 30)
    package = door.add("package", arrived, int((utc(taken_day + timedelta(days=1), 2, 0) - arrived).total_seconds()))
    ids = door.write()
    return {"visit": ids[id(visit)], "loiter": ids[id(loiter)], "package": ids[id(package)]}


@pytest.fixture
def today() -> date:
    now_local = utcnow().replace(tzinfo=UTC).astimezone(ZONE)
    if now_local.hour < 1:  # the planted day -1 events must not reach past midnight into "now"
        pytest.skip("too close to local midnight")
    return now_local.date()


@pytest.fixture
def planted(client, today):
    return plant(client.app.state.session_factory, today)


def kinds(answer: dict) -> set[tuple[str, tuple[int, ...]]]:
    return {(a["kind"], tuple(a["event_ids"])) for a in answer["anomalies"]}


def test_anomalies_at_medium_find_each_planted_case_and_nothing_else(client, planted):
    answer = data(client.get("/api/analytics/anomalies", params={"sensitivity": "medium"}))
    assert answer["insufficient_history"] is False and answer["time_zone"] == "Asia/Seoul"
    assert answer["baseline"]["days"] >= 80 and answer["baseline"]["events"] > 500
    assert kinds(answer) == {
        ("rare_hour", (planted["visit"],)),
        ("loitering", (planted["loiter"],)),
        ("package_taken", (planted["package"],)),
    }
    assert answer["total"] == 3
    by_kind = {a["kind"]: a for a in answer["anomalies"]}
    assert all(a["score"] >= 1 for a in answer["anomalies"])
    assert "03:05" in by_kind["rare_hour"]["message"] and by_kind["rare_hour"]["local_time"].endswith("03:05")
    assert "20 min" in by_kind["loitering"]["message"]
    assert "02:00" in by_kind["package_taken"]["message"] and "no person" in by_kind["package_taken"]["message"]
    # The same at low: the planted cases are clear.
    low = data(client.get("/api/analytics/anomalies", params={"sensitivity": "low"}))
    assert kinds(low) == kinds(answer)


def test_high_sensitivity_also_lists_every_package_taken_by_a_person(client, planted):
    high = data(client.get("/api/analytics/anomalies", params={"sensitivity": "high"}))
    assert kinds(high) >= {
        ("rare_hour", (planted["visit"],)),
        ("loitering", (planted["loiter"],)),
        ("package_taken", (planted["package"],)),
    }
    extra = [
        a
        for a in high["anomalies"]
        if (a["kind"], tuple(a["event_ids"]))
        not in kinds(data(client.get("/api/analytics/anomalies", params={"sensitivity": "medium"})))
    ]
    assert extra and all(a["kind"] == "package_taken" and len(a["event_ids"]) == 2 for a in extra)
    assert all("while person event" in a["message"] for a in extra)


def test_a_burst_is_found_and_its_events_listed(client, planted, today):
    door = Door(client.app.state.session_factory)
    start = utc(today - timedelta(days=1), 14, 20)
    rows = [door.add("person", start + timedelta(seconds=8 * i), 5) for i in range(8)]
    ids = door.write()
    answer = data(client.get("/api/analytics/anomalies"))
    bursts = [a for a in answer["anomalies"] if a["kind"] == "burst"]
    assert len(bursts) == 1 and bursts[0]["event_ids"] == [ids[id(r)] for r in rows]
    assert "8 events" in bursts[0]["message"]
    # Nothing else new (the cache saw the new events: MAX(id) changed).
    assert {k for k in kinds(answer) if k[0] != "burst"} == {
        ("rare_hour", (planted["visit"],)),
        ("loitering", (planted["loiter"],)),
        ("package_taken", (planted["package"],)),
    }


def test_too_little_history_says_so_instead_of_flagging(client, today):
    door = Door(client.app.state.session_factory)
    for back in range(5, 0, -1):
        door.add("person", utc(today - timedelta(days=back), 3, 0), 2000)
    door.write()
    answer = data(client.get("/api/analytics/anomalies"))
    assert answer["insufficient_history"] is True and answer["anomalies"] == [] and answer["total"] == 0
    assert "Not enough history" in answer["message"]


def test_patterns_find_the_delivery_window_and_the_rhythm(client, planted, today):
    start = (today - timedelta(days=HISTORY_DAYS)).isoformat()
    answer = data(
        client.get("/api/analytics/patterns", params={"period": "month", "start": start, "end": today.isoformat()})
    )
    for code in ("package", "mail"):
        pattern = answer["delivery_windows"][code]
        assert [(w["start"], w["end"]) for w in pattern["windows"]] == [("10:00", "12:00")], pattern
        assert pattern["windows"][0]["share"] == 1.0
        assert pattern["weekdays"] == ["mon", "tue", "wed", "thu", "fri"]
    assert answer["delivery_windows"]["delivery_food"] == {
        "arrivals": 0,
        "coverage": 0.8,
        "windows": [],
        "weekdays": [],
    }
    grid = answer["histograms"]["package"]
    assert len(grid) == 7 and all(len(row) == 24 for row in grid)
    # Weekdays only (but the planted package, which may fall on a weekend), all at 10 and 11.
    assert sum(grid[5]) + sum(grid[6]) <= 1 and all(grid[wd][10] + grid[wd][11] == sum(grid[wd]) for wd in range(7))
    assert set(answer["busiest_hours_by_type"]["person"]) <= set(PERSON_HOURS)
    assert {b["hour"] for b in answer["busiest_hours"]} <= {10, 11, *PERSON_HOURS}
    # Packages arrive 10-12 and are taken 18-20: 6-10 hours; people stay 10-90 s (30 s pickups).
    assert 6 * 3600 <= answer["package_stay"]["median_s"] <= 10 * 3600
    assert 10 <= answer["person_dwell"]["median_s"] <= 90 and answer["person_dwell"]["max_s"] == 1200
    assert answer["time_zone"] == "Asia/Seoul"
    # The default window is the last 30 days.
    month = data(client.get("/api/analytics/patterns"))
    assert month["period"] == "month" and 0 < month["events"] < answer["events"]


def test_statistics_per_type_hour_weekday_and_day(client, planted, today):
    state = client.app.state
    with state.session_factory.begin() as session:
        session.execute(
            sa.update(DetectionEvent).where(DetectionEvent.id == planted["visit"]).values(is_false_positive=True)
        )
    response = client.put(f"/api/detections/{planted['loiter']}/classify", json={"type": "delivery_food"})
    assert response.status_code == 200, response.text
    week = data(client.get("/api/analytics/statistics", params={"period": "week", "group_by": "type"}))
    with state.session_factory() as session:
        expected = dict(
            session.execute(
                sa.select(ObjectType.code, sa.func.count(DetectionEvent.id))
                .join(DetectionEvent, DetectionEvent.object_type_id == ObjectType.id)
                .where(DetectionEvent.detected_at >= sa.bindparam("s"))
                .group_by(ObjectType.code),
                {"s": datetime.fromisoformat(week["start"]).replace(tzinfo=None)},
            ).all()
        )
    groups = {g["key"]: g for g in week["groups"]}
    assert set(groups) == {"person", "package", "delivery_food", "mail", "unclassified"}
    assert {k: g["count"] for k, g in groups.items() if g["count"]} == expected
    assert week["total"] == sum(expected.values())
    assert groups["delivery_food"]["count"] == 1 and groups["delivery_food"]["reclassified"] == 1
    assert groups["delivery_food"]["reclassified_share"] == 1.0 and groups["delivery_food"]["mean_duration_s"] == 1200
    assert groups["person"]["false_positives"] == 1
    assert groups["person"]["false_positive_share"] == round(1 / groups["person"]["count"], 4)
    assert groups["unclassified"] == {
        "key": "unclassified",
        "count": 0,
        "mean_confidence": None,
        "mean_duration_s": None,
        "reclassified": 0,
        "reclassified_share": None,
        "false_positives": 0,
        "false_positive_share": None,
    }
    assert groups["person"]["mean_confidence"] == 0.8

    hours = data(client.get("/api/analytics/statistics", params={"period": "week", "group_by": "hour"}))
    by_hour = {g["key"]: g["count"] for g in hours["groups"]}
    assert list(by_hour) == [f"{h:02d}" for h in range(24)] and sum(by_hour.values()) == week["total"]
    assert by_hour["03"] == 1 and by_hour["04"] == 0  # the planted visit, local time (UTC it is 18:05)

    weekdays = data(client.get("/api/analytics/statistics", params={"period": "month", "group_by": "weekday"}))
    assert [g["key"] for g in weekdays["groups"]] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

    days = data(
        client.get(
            "/api/analytics/statistics",
            params={
                "group_by": "day",
                "start": (today - timedelta(days=3)).isoformat() + "T00:00:00+09:00",
                "end": today.isoformat() + "T00:00:00+09:00",
            },
        )
    )
    assert [g["key"] for g in days["groups"]] == [(today - timedelta(days=d)).isoformat() for d in (3, 2, 1)]
    assert all(g["count"] >= len(PERSON_HOURS) for g in days["groups"])


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/St_Johns", "UTC"])
def test_local_hours_match_python_across_daylight_saving(settings, zone_name):
    """Hours, weekdays and days from SQL equal Python's zoneinfo, over a DST change (Berlin: 2026-10-25,
    St John's: a half-hour offset)."""
    from detection_service.database import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        door = Door(factory)
        rng = random.Random(3)
        base = datetime(2026, 10, 20)
        stamps = [base + timedelta(seconds=rng.randrange(10 * 86400)) for _ in range(400)]
        for at in stamps:
            door.add("person", at.replace(microsecond=0))
        door.write()
        zone = ZoneInfo(zone_name)
        service = AnalyticsService(factory, zone_name, cache=False)
        window = {"start": "2026-10-20T00:00:00", "end": "2026-10-30T00:00:00", "period": "week"}
        local = [s.replace(tzinfo=UTC).astimezone(zone) for s in stamps]
        hours = {g.key: g.count for g in service.statistics(group_by="hour", **window).groups}
        assert hours == {f"{h:02d}": sum(1 for t in local if t.hour == h) for h in range(24)}
        days = {g.key: g.count for g in service.statistics(group_by="day", **window).groups if g.count}
        assert days == {
            d: sum(1 for t in local if t.date().isoformat() == d) for d in {t.date().isoformat() for t in local}
        }
        weekdays = [g.count for g in service.statistics(group_by="weekday", **window).groups]
        assert weekdays == [sum(1 for t in local if t.weekday() == wd) for wd in range(7)]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("statistics", {"period": "year"}, "INVALID_PERIOD"),
        ("statistics", {"group_by": "minute"}, "INVALID_GROUP_BY"),
        ("statistics", {"start": "yesterday"}, "INVALID_DATE"),
        ("statistics", {"end": "2026-13-01"}, "INVALID_DATE"),
        ("statistics", {"start": "2026-11-02", "end": "2026-11-01"}, "INVALID_DATE_RANGE"),
        ("statistics", {"start": "2024-01-01", "end": "2026-01-01"}, "INVALID_DATE_RANGE"),
        ("patterns", {"period": "hour"}, "INVALID_PERIOD"),
        ("patterns", {"start": "soon"}, "INVALID_DATE"),
        ("patterns", {"start": "2026-11-02T00:00:00", "end": "2026-11-02T00:00:00"}, "INVALID_DATE_RANGE"),
        ("anomalies", {"sensitivity": "extreme"}, "INVALID_SENSITIVITY"),
        ("anomalies", {"days": 0}, "INVALID_DAYS"),
        ("anomalies", {"days": 32}, "INVALID_DAYS"),
        ("anomalies", {"baseline_days": 5}, "INVALID_BASELINE_DAYS"),
        ("anomalies", {"limit": 0}, "INVALID_LIMIT"),
        ("anomalies", {"days": "seven"}, "VALIDATION_ERROR"),
        ("anomalies", {"limit": "all"}, "VALIDATION_ERROR"),
    ],
)
def test_each_bad_value_is_its_own_400(client, path, params, code):
    error = data(client.get(f"/api/analytics/{path}", params=params), 400)
    assert error["code"] == code, error
    if code != "VALIDATION_ERROR":
        assert error["details"]["field"] in params


def test_empty_database_answers_in_the_envelope(client):
    stats = data(client.get("/api/analytics/statistics", params={"group_by": "weekday"}))
    assert stats["total"] == 0 and [g["count"] for g in stats["groups"]] == [0] * 7
    patterns = data(client.get("/api/analytics/patterns", params={"period": "day"}))
    assert patterns["events"] == 0 and patterns["package_stay"]["count"] == 0
    anomalies = data(client.get("/api/analytics/anomalies"))
    assert anomalies["insufficient_history"] is True


def test_covering_runs_and_poisson_tail():
    assert covering_runs([0] * 20 + [8, 2, 6, 5] + [0] * 23 + [1]) == [(20, 23)]
    assert covering_runs([5, 4, 5, 4, 5, 0, 0]) == [(0, 4)]
    assert covering_runs([0, 0, 0]) == []
    assert covering_runs([10, 0, 0, 0, 10]) == [(0, 0), (4, 4)]
    assert poisson_tail(0, 1.0) == 1.0
    assert abs(poisson_tail(1, 1.0) - (1 - 2.718281828459045**-1)) < 1e-12
    assert 0 < poisson_tail(8, 0.01) < 1e-15  # the far tail keeps its digits
