"""Detection and Event APIs: history paging and filters, detail with image links that open and
expire (local store and S3), relabelling with label files, unclassified list, compression,
retention clean-up. Events are written as the realtime pipeline writes them (row, then captures)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.app import create_app
from detection_service.config import Settings
from detection_service.storage.keys import event_image_key, label_key
from schemas.db import DetectionEvent, EventImage, ObjectType, utcnow
from tests.conftest import AuthedTestClient as TestClient  # sends an admin token
from tests.conftest import free_port

NOW = utcnow().replace(microsecond=0)
JPEG = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))[1].tobytes()
BOX = {"x1": 10, "y1": 8, "x2": 42, "y2": 40, "frame_width": 64, "frame_height": 48}
# As the pipeline writes it: the first capture's box, later captures' boxes under "frames".
BBOX = {**BOX, "frames": {"2": {**BOX, "x1": 12, "x2": 44}}}


def add_event(state, type_code: str, detected_at: datetime, images: int = 3, ended: bool = True) -> int:
    """One finished event with ``images`` captures in the store, written in the pipeline's order."""
    with state.session_factory.begin() as session:
        type_id = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == type_code))
        event = DetectionEvent(
            object_type_id=type_id,
            confidence_score=0.8,
            detected_at=detected_at,
            ended_at=detected_at + timedelta(seconds=5) if ended else None,
            tracking_id=7,
            tracking_duration=5,
            bbox_coordinates=json.dumps(BBOX),
            model_version="yolo_v1",
        )
        session.add(event)
        session.flush()
        event_id = event.id
    with state.session_factory.begin() as session:
        for seq in range(1, images + 1):
            key = event_image_key(event_id, detected_at, seq)
            state.object_store.put_bytes(key, JPEG, "image/jpeg")
            session.add(
                EventImage(
                    event_id=event_id,
                    image_path=key,
                    sequence_number=seq,
                    compression_quality=85,
                    captured_at=detected_at + timedelta(seconds=seq),
                )
            )
            if seq == 1:
                session.get(DetectionEvent, event_id).image_path = key
    return event_id


@pytest.fixture
def populated(client):
    """25 events over ~12 days: every 3rd a package, every 5th unclassified, the rest persons."""
    ids = []
    for i in range(25):
        kind = "package" if i % 3 == 0 else "unclassified" if i % 5 == 0 else "person"
        ids.append(add_event(client.app.state, kind, NOW - timedelta(hours=12 * i), images=2))
    return ids  # ids[0] is the newest


def data(response: httpx.Response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is (status < 400) and "timestamp" in body
    return body["data"] if status < 400 else body["error"]


def test_history_pages_newest_first_with_totals(client, populated):
    first = data(client.get("/api/detections", params={"limit": 10}))
    assert first["total"] == 25 and first["page"] == 1 and first["limit"] == 10
    assert [e["id"] for e in first["items"]] == populated[:10]
    third = data(client.get("/api/detections", params={"limit": 10, "page": 3}))
    assert [e["id"] for e in third["items"]] == populated[20:]
    beyond = data(client.get("/api/detections", params={"limit": 10, "page": 9}))
    assert beyond["items"] == [] and beyond["total"] == 25
    item = first["items"][0]
    assert item["type"] == "package" and item["image_count"] == 2 and item["duration_s"] == 5
    assert item["thumbnail_url"] and item["tracking_id"] == 7


def test_history_filters(client, populated):
    packages = data(client.get("/api/detections", params={"type": "package", "limit": 100}))
    assert packages["total"] == 9 and {e["type"] for e in packages["items"]} == {"package"}
    start = (NOW - timedelta(days=2)).isoformat()
    recent = data(client.get("/api/detections", params={"start_date": start}))
    assert recent["total"] == 5  # 0, 12, 24, 36, 48 hours ago
    end_day = (NOW - timedelta(days=3)).date().isoformat()  # a bare end date includes that day
    older = data(client.get("/api/detections", params={"end_date": end_day, "type": "person", "limit": 100}))
    assert older["total"] > 0
    assert all(
        datetime.fromisoformat(e["detected_at"][:19]) < datetime.fromisoformat(end_day) + timedelta(days=1)
        for e in older["items"]
    )
    events = data(client.get("/api/events", params={"date_range": "7d", "limit": 100}))
    assert events["total"] == 14  # 0..156 hours ago, 7 days = 168 h
    span = f"{(NOW - timedelta(days=1, minutes=1)).isoformat()}/{NOW.isoformat()}"
    assert data(client.get("/api/events", params={"date_range": span}))["total"] == 2  # NOW itself is excluded
    assert data(client.get("/api/events", params={"status": "archived"}))["total"] == 0


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/api/detections", {"limit": 101}, "INVALID_PAGING"),
        ("/api/detections", {"page": 0}, "INVALID_PAGING"),
        ("/api/detections", {"page": "two"}, "VALIDATION_ERROR"),
        ("/api/detections", {"type": "cat"}, "UNKNOWN_TYPE"),
        ("/api/detections", {"start_date": "yesterday"}, "INVALID_DATE"),
        ("/api/detections", {"start_date": "2026-02-02", "end_date": "2026-01-01"}, "INVALID_DATE_RANGE"),
        ("/api/events", {"date_range": "fortnight"}, "INVALID_DATE_RANGE"),
        ("/api/events", {"status": "deleted"}, "INVALID_STATUS"),
        ("/api/detections/recent", {"limit": 0}, "INVALID_PAGING"),
        ("/api/events/images/unclassified", {"limit": 500}, "INVALID_PAGING"),
    ],
)
def test_bad_list_queries_are_400(client, path, params, code):
    assert data(client.get(path, params=params), 400)["code"] == code


def test_recent_types_and_unknown_ids(client, populated):
    assert [e["id"] for e in data(client.get("/api/detections/recent"))] == populated[:10]
    assert len(data(client.get("/api/detections/recent", params={"limit": 3}))) == 3
    codes = {t["code"] for t in data(client.get("/api/detections/types"))}
    assert codes == {"person", "package", "delivery_food", "mail", "unclassified"}
    for path in ("/api/detections/999999", "/api/events/999999", "/api/events/999999/images"):
        assert data(client.get(path), 404)["code"] == "EVENT_NOT_FOUND"
    assert data(client.put("/api/detections/999999/classify", json={"type": "mail"}), 404)["code"] == "EVENT_NOT_FOUND"


def test_event_detail_and_images_in_sequence(client, populated):
    event_id = populated[3]
    detail = data(client.get(f"/api/events/{event_id}"))
    assert detail["id"] == event_id and detail["bbox"] == BBOX and detail["tracking_id"] == 7
    assert [i["sequence_number"] for i in detail["images"]] == [1, 2]
    same = data(client.get(f"/api/detections/{event_id}"))
    assert same["id"] == event_id and [i["id"] for i in same["images"]] == [i["id"] for i in detail["images"]]
    images = data(client.get(f"/api/events/{event_id}/images"))
    assert [i["sequence_number"] for i in images] == [1, 2]
    for image in images:
        url = urlsplit(image["url"])
        response = client.get(f"{url.path}?{url.query}")  # the local store's signed route
        assert response.status_code == 200 and response.content == JPEG


def test_relabel_unclassified_to_package(client, populated):
    state = client.app.state
    event_id = populated[5]  # i = 5: unclassified
    before = data(client.get("/api/detections", params={"type": "package", "limit": 100}))["total"]
    body = {"type": "package", "verified": True}
    relabelled = data(client.put(f"/api/detections/{event_id}/classify", json=body))
    assert relabelled["type"] == "package" and relabelled["original_type"] == "unclassified"
    assert relabelled["user_verified"] is True and relabelled["reclassified_at"]
    packages = data(client.get("/api/detections", params={"type": "package", "limit": 100}))
    assert packages["total"] == before + 1 and event_id in [e["id"] for e in packages["items"]]
    for image in relabelled["images"]:
        label = state.object_store.get_bytes(label_key(image["key"])).decode().split()
        assert label[0] == "1" and len(label) == 5  # class 1 = package
        cx, cy, w, h = map(float, label[1:])
        x_center = 26 if image["sequence_number"] == 1 else 28
        assert (cx, cy, w, h) == pytest.approx((x_center / 64, 24 / 48, 32 / 64, 32 / 48), abs=1e-5)
    again = data(client.put(f"/api/detections/{event_id}/classify", json=body))
    assert again["reclassified_at"] == relabelled["reclassified_at"]  # nothing changed
    # A second relabel keeps the detector's original type.
    mail = data(client.put(f"/api/detections/{event_id}/classify", json={"type": "mail"}))
    assert mail["original_type"] == "unclassified" and mail["type"] == "mail"
    fp = data(client.put(f"/api/detections/{event_id}/classify", json={"type": "mail", "false_positive": True}))
    assert fp["is_false_positive"] is True
    assert state.object_store.get_bytes(label_key(fp["images"][0]["key"])) == b""  # a background image


def test_relabel_rejects_bad_input_and_changes_nothing(client, populated):
    event_id = populated[5]
    for body in ({"type": "cat"}, {}, {"type": "mail", "verified": "yes"}, {"type": "mail", "colour": "red"}):
        assert client.put(f"/api/detections/{event_id}/classify", json=body).status_code == 400
    event = data(client.get(f"/api/detections/{event_id}"))
    assert event["type"] == "unclassified" and event["reclassified_at"] is None and event["original_type"] is None


def test_unclassified_images_list(client, populated):
    page = data(client.get("/api/events/images/unclassified", params={"limit": 3}))
    unclassified = [e for i, e in enumerate(populated) if i % 3 and i % 5 == 0]  # i = 5, 10, 20
    assert page["total"] == 2 * len(unclassified)
    assert [i["event_id"] for i in page["items"]] == [unclassified[0], unclassified[0], unclassified[1]]
    assert page["items"][0]["bbox"] == BBOX and page["items"][0]["url"]
    client.put(f"/api/detections/{unclassified[0]}/classify", json={"type": "person"})
    assert data(client.get("/api/events/images/unclassified"))["total"] == 2 * (len(unclassified) - 1)


def test_compress_quality(client):
    assert data(client.put("/api/events/images/compress", json={"quality": 55}))["quality"] == 55
    assert data(client.get("/api/settings/detection"))["jpeg_quality"] == 55
    for bad in ({"quality": 0}, {"quality": 101}, {"quality": "high"}, {}):
        assert client.put("/api/events/images/compress", json=bad).status_code == 400
    assert data(client.get("/api/settings/detection"))["jpeg_quality"] == 55


def _event_objects(store) -> list[str]:
    return [info.key for info in store.list("events/")]


def test_cleanup_max_days_zero_leaves_nothing_behind(client, populated):
    state = client.app.state
    # Orphans of both kinds: an object whose event row is gone, a row whose object is gone.
    orphan_key = event_image_key(999_999, NOW, 1)
    state.object_store.put_bytes(orphan_key, JPEG, "image/jpeg")
    state.object_store.delete(event_image_key(populated[7], NOW - timedelta(hours=12 * 7), 2))
    data(client.put(f"/api/detections/{populated[5]}/classify", json={"type": "package"}))  # + label files
    assert data(client.put("/api/settings/storage", json={"max_days": 0}))["max_days"] == 0
    report = data(client.post("/api/system/cleanup", json={"type": "images"}))
    assert report["events_deleted"] == 25 and report["images_deleted"] == 50
    assert report["orphan_objects_deleted"] == 1 and report["bytes_freed"] > 0
    with state.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DetectionEvent)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(EventImage)) == 0
    assert _event_objects(state.object_store) == []
    assert data(client.get("/api/detections"))["total"] == 0


def test_cleanup_keeps_recent_events_and_respects_the_quota(client, populated):
    state = client.app.state
    in_flight = add_event(state, "person", utcnow(), images=1, ended=False)
    # A capture deleted behind the service's back: its row would hand out a link that 404s.
    state.object_store.delete(event_image_key(populated[1], NOW - timedelta(hours=12), 2))
    report = data(client.post("/api/system/cleanup", json={"type": "images"}))  # defaults: 30 days, 50 GB
    assert report["events_deleted"] == 0 and report["events_kept"] == 26 and report["orphan_rows_deleted"] == 1
    assert data(client.get(f"/api/events/{populated[1]}/images"))[0]["sequence_number"] == 1
    # A quota of 7.5 captures, newest first: in-flight 1 + 2 + 1 + 2 fit, the next event would not.
    quota = 7.5 * len(JPEG)
    state.settings_service.update("storage", {"max_size_gb": quota / 1024**3})
    report = data(client.post("/api/system/cleanup"))
    assert report["bytes_kept"] <= quota
    remaining = [e["id"] for e in data(client.get("/api/detections", params={"limit": 100}))["items"]]
    assert remaining == [in_flight, *populated[:3]]
    assert report["events_deleted"] == 22
    # An unknown type is refused (`temp` is a type now: tests/test_system_storage.py).
    assert data(client.post("/api/system/cleanup", json={"type": "everything"}), 400)["code"] == "VALIDATION_ERROR"


def test_cleanup_logs(client):
    from schemas.db import SystemLog

    state = client.app.state
    with state.session_factory.begin() as session:
        session.add(SystemLog(level="INFO", component="test", message="old", created_at=NOW - timedelta(days=40)))
        session.add(SystemLog(level="INFO", component="test", message="new", created_at=NOW))
    report = data(client.post("/api/system/cleanup", json={"type": "logs"}))
    assert report["logs_deleted"] == 1 and report["logs_archived"] == 1  # archived before it went


def test_storage_cleanup_job_honours_auto_cleanup(client, populated, settings):
    import dagster as dg

    from orchestration.jobs import storage_cleanup_job
    from orchestration.resources import resources_from_settings

    state = client.app.state
    state.settings_service.update("storage", {"max_days": 1, "auto_cleanup": False})
    resources = resources_from_settings(settings)
    result = storage_cleanup_job.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success and data(client.get("/api/detections"))["total"] == 25
    state.settings_service.update("storage", {"auto_cleanup": True})
    result = storage_cleanup_job.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert data(client.get("/api/detections"))["total"] == 2  # 0 and 12 hours old


@pytest.mark.s3
def test_s3_image_urls_open_and_expire(s3_server, migrated_database_url, tmp_path):
    settings = Settings.from_env(
        environ={},
        data_dir=tmp_path / "data",
        database_url=migrated_database_url,
        dagster_port=free_port(),
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_bucket=f"events-{uuid.uuid4().hex[:10]}",
        image_url_ttl_s=2,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        event_id = add_event(client.app.state, "package", NOW, images=2)
        images = data(client.get(f"/api/events/{event_id}/images"))
        assert [i["sequence_number"] for i in images] == [1, 2]
        for image in images:  # presigned: a plain GET, no credentials
            response = httpx.get(image["url"], timeout=10)
            assert response.status_code == 200 and response.content == JPEG
        time.sleep(3)
        assert httpx.get(images[0]["url"], timeout=10).status_code == 403
        data(client.put("/api/settings/storage", json={"max_days": 0}))
        report = data(client.post("/api/system/cleanup"))
        assert report["events_deleted"] == 1 and report["objects_deleted"] == 2
        assert _event_objects(client.app.state.object_store) == []


def test_local_image_urls_open_over_http_and_expire(settings):
    """The local store's signed links, fetched from a real server like a browser would."""
    from tests.test_viewer import LiveServer

    port = free_port()
    live_settings = msgspec_replace(settings, port=port, public_url=f"http://127.0.0.1:{port}", image_url_ttl_s=2)
    with LiveServer(live_settings, port=port) as live:
        event_id = add_event(live.app.state, "person", NOW, images=2)
        images = live.get(f"/api/events/{event_id}/images")
        for image in images:
            assert image["url"].startswith(live.url)
            response = httpx.get(image["url"], timeout=10)
            assert response.status_code == 200 and response.content == JPEG
            assert response.headers["content-type"].startswith("image/jpeg")
        time.sleep(3)
        expired = httpx.get(images[0]["url"], timeout=10)
        assert expired.status_code == 403 and expired.json()["error"]["code"] == "INVALID_SIGNATURE"


def msgspec_replace(struct, **changes):
    import msgspec

    return msgspec.structs.replace(struct, **changes)


def test_bench_api_prints_every_figure(tmp_path):
    """`aidoor bench api` end to end on a small SQLite table (the real run seeds 100k into MariaDB)."""
    import subprocess
    import sys
    from pathlib import Path

    aidoor = str(Path(sys.executable).parent / "aidoor")
    out = subprocess.run(
        [
            aidoor,
            "bench",
            "api",
            "--database-url",
            f"sqlite:///{tmp_path / 'bench.db'}",
            "--events",
            "400",
            "--requests",
            "32",
            "--clients",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = out.stdout.strip().splitlines()
    result = json.loads(line)
    assert result["events"] == 400 and result["images"] == 1200
    assert set(result["queries"]) == {"first_page", "deep_page", "filtered"}
    for figures in result["queries"].values():
        assert {"p50_ms", "p95_ms", "p99_ms", "rps", "sql_p50_ms"} <= set(figures)
        assert figures["errors"] == 0 and figures["rps"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]
