"""Telegram alerts against a fake Bot API (detection_service/bench/fake_telegram.py): delivery, retries,
permanent failures, restart/kill, two workers, the inline keyboard, token secrecy, the API.

Runs on SQLite by default and on MySQL/MariaDB with AIDOOR_TEST_DATABASE_URL set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from detection_service.bench.fake_telegram import Failure, FakeTelegram
from detection_service.bus import EventBus
from detection_service.config import Settings
from detection_service.database import make_engine, make_session_factory
from detection_service.notifications import queue as q
from detection_service.notifications.crypto import TokenCipher
from detection_service.notifications.worker import Notifier, build_notifier
from detection_service.pipeline.capture import Frame
from detection_service.pipeline.config import PipelineConfig
from detection_service.pipeline.detector import Detection, classify_detections
from detection_service.pipeline.events import (
    EventHandle,
    EventRecorder,
    EventWriter,
    FrameInfo,
    InsertEvent,
    StoreImage,
    bbox_json,
)
from detection_service.pipeline.tracker import ObjectTracker
from detection_service.storage import make_object_store
from schemas.db import DetectionEvent, NotificationHistory, ObjectType, Telegram
from schemas.settings import DetectionSettings
from tests.conftest import REPO_ROOT, free_port

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
SECRET = TOKEN.split(":")[1]
TOKEN2 = "987654321:BBQwErTyUiOpAsDfGhJkLzXcVbNm1234567"
CHAT = "555000111"
CHAT2 = "555000222"
KEY = Fernet.generate_key().decode()
FAST = {
    "poll_interval_s": 0.1,
    "long_poll_s": 1,
    "lease_s": 2.0,
    "read_timeout_s": 1.0,
    "connect_timeout_s": 1.0,
    "write_timeout_s": 2.0,
    "backoff_initial_s": 0.2,
    "photo_wait_s": 5.0,
    "unclassified_hold_s": 0.0,
    "recipients_refresh_s": 0.5,
    "close_grace_s": 1.0,
    "updates": "polling",
}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def jpeg(seed: int = 1) -> bytes:
    image = np.full((120, 160, 3), 40 + seed % 150, np.uint8)
    cv2.rectangle(image, (40, 30), (100, 110), (0, 200, 0), -1)
    return cv2.imencode(".jpg", image)[1].tobytes()


class Env:
    """A migrated database, a local store, a fake Bot API and helpers to make events and notifiers."""

    def __init__(self, tmp_path: Path, url: str, fake: FakeTelegram) -> None:
        self.fake = fake
        self.settings = Settings.from_env(
            environ={
                "AIDOOR_TELEGRAM_API_URL": fake.url,
                "AIDOOR_TELEGRAM_KEY": KEY,
                "AIDOOR_PUBLIC_URL": "https://door.example.org",
            },
            data_dir=tmp_path / "data",
            database_url=url,
            dagster_port=free_port(),
        )
        self.engine = make_engine(url)
        self.sf = make_session_factory(self.engine)
        self.store = make_object_store(self.settings)
        self.store.ensure_bucket()
        self.bus = EventBus()
        self.writer: EventWriter | None = None
        self.notifiers: list[Notifier] = []

    def add_recipient(self, chat_id: str = CHAT, token: str = TOKEN) -> int:
        cipher = TokenCipher(KEY.encode(), "test")
        with self.sf.begin() as s:
            row = Telegram(user_id=chat_id, chat_id=chat_id, bot_token=cipher.encrypt(token))
            s.add(row)
            s.flush()
            return row.id

    def notifier(self, start: bool = True, **overrides: Any) -> Notifier:
        n = build_notifier(
            self.settings, self.sf, self.store, bus=self.bus, relabel=self.relabel, **{**FAST, **overrides}
        )
        self.notifiers.append(n)
        if self.writer is not None:
            self.writer.alerts = n.queue_config  # as the app wires it: events queue with its notifier
        if start:
            n.start()
        return n

    @property
    def alerts(self) -> q.QueueConfig:
        """The latest notifier's alert queue configuration (what the app hands the pipeline)."""
        return self.notifiers[-1].queue_config if self.notifiers else q.QueueConfig()

    def relabel(
        self, event_id: int, type_code: str, verified: bool | None = True, false_positive: bool | None = False
    ) -> Any:
        from detection_service.services.event_history import EventService

        return EventService(self.sf, self.store).classify(
            event_id, type_code, verified=verified, false_positive=false_positive
        )

    def event(self, type_code: str = "person", confidence: float = 0.87, seed: int = 1, ago_s: float = 0.0) -> int:
        """One event through the pipeline's writer (InsertEvent + capture 1), as the recorder makes
        it; ``ago_s``: detected that long before it is written (a write the database delayed)."""
        if self.writer is None:
            self.writer = EventWriter(self.sf, self.store, self.bus, PipelineConfig(retry_initial_s=0.05), self.alerts)
        now = datetime.now(UTC) - timedelta(seconds=ago_s)
        handle = EventHandle(now, type_code, seed)
        box = bbox_json((40, 30, 100, 110), 160, 120)
        values = {
            "confidence_score": confidence,
            "bbox_coordinates": json.dumps(box),
            "model_version": "m-test",
            "tracking_id": seed,
            "status": "active",
            "detected_at": now,
            "created_by": "pipeline",
        }
        shot = jpeg(seed)
        self.writer.insert_event(InsertEvent(handle, values, shot, box))
        self.writer.store_image(StoreImage(handle, 1, shot, now, 85))
        assert wait_until(lambda: handle.event_id is not None, 10)
        return handle.event_id  # type: ignore[return-value]

    def rows(self, **where: Any) -> list[NotificationHistory]:
        with self.sf() as s:
            stmt = sa.select(NotificationHistory).order_by(NotificationHistory.id)
            for key, value in where.items():
                stmt = stmt.where(getattr(NotificationHistory, key) == value)
            return list(s.scalars(stmt).all())

    def type_of(self, event_id: int) -> tuple[str, DetectionEvent]:
        with self.sf() as s:
            event, code = s.execute(
                sa.select(DetectionEvent, ObjectType.code)
                .join(ObjectType, DetectionEvent.object_type_id == ObjectType.id)
                .where(DetectionEvent.id == event_id)
            ).one()
            return code, event

    def close(self) -> None:
        for n in self.notifiers:
            n.close(timeout=3)
        if self.writer is not None:
            self.writer.close(2)
        self.engine.dispose()


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tracker refuses to run before Ultralytics is configured offline."""
    from detection_service.ml.ultralytics_env import configure_offline

    configure_offline(tmp_path_factory.mktemp("notify-ml"))


@pytest.fixture
def env(tmp_path: Path, migrated_database_url: str) -> Iterator[Env]:
    fake = FakeTelegram(max_poll_s=1.0)
    fake.add_bot(TOKEN)
    fake.add_bot(TOKEN2, "second_bot")
    with fake:
        e = Env(tmp_path, migrated_database_url, fake)
        try:
            yield e
        finally:
            e.close()


def _photos(fake: FakeTelegram) -> list:
    return fake.sent_to(method="sendPhoto")


# --- delivery ----------------------------------------------------------------------------------


def _det(x1: float, y1: float, x2: float, y2: float, name: str, conf: float) -> Detection:
    from detection_service.ml.classes import CLASS_IDS

    return Detection(x1, y1, x2, y2, CLASS_IDS[name], name, conf)


def test_pipeline_event_reaches_the_bot_as_one_photo_with_the_template_text(env: Env) -> None:
    env.add_recipient()
    env.notifier()
    # The realtime pipeline's recorder, fed scripted detections: a person walks by for 3 s.
    recorder = EventRecorder(
        env.sf,
        env.store,
        lambda: DetectionSettings(capture_count=2, capture_interval=0.5),
        env.bus,
        PipelineConfig(retry_initial_s=0.05),
        env.alerts,
    )
    tracker = ObjectTracker()
    wall0 = time.time()
    for i in range(40):
        t = i / 10
        image = np.full((240, 320, 3), 90, np.uint8)
        dets = [_det(40 + 5 * t, 40, 100 + 5 * t, 200, "person", 0.91)] if t < 3 else []
        seen = tracker.update(classify_detections(dets, 0.5, "medium"), t, wall0 + t)
        recorder.on_frame(Frame(image, i, t, wall0 + t), t, seen, FrameInfo("m-test", 10.0, 12.0))
    assert wait_until(lambda: recorder.writer.pending() == 0)
    try:
        assert env.fake.wait_for(lambda: len(_photos(env.fake)) >= 1, 10)
        time.sleep(0.5)  # nothing else may follow
        photos = _photos(env.fake)
        assert len(photos) == 1 and env.fake.calls("sendMessage") == 0
        sent = photos[0]
        assert sent.chat_id == CHAT and sent.photo[:3] == b"\xff\xd8\xff"  # capture 1, a JPEG
        caption = sent.caption or ""
        assert caption.splitlines()[0] == "사람이 감지되었습니다"  # TEXT_1, verbatim
        assert "유형: 사람 (person)" in caption and "신뢰도: 91%" in caption and "KST" in caption
        rows = env.rows()
        assert len(rows) == 1
        row = rows[0]
        assert caption.endswith(f"https://door.example.org/api/detections/{row.event_id}")
        assert (row.send_status, row.retry_count, row.kind, row.has_photo) == ("sent", 0, "event", True)
        assert row.telegram_message_id == sent.message_id and row.sent_at is not None and row.message_text == caption
        buttons = [b["callback_data"] for line in sent.reply_markup["inline_keyboard"] for b in line]
        assert buttons == [f"rl:{row.event_id}:{c}" for c in ("ok", "fp", "package", "delivery_food", "mail")]
        assert env.type_of(row.event_id)[1].notification_sent is True
    finally:
        recorder.close(2)


def test_retry_after_then_success_is_one_message_with_retries_counted(env: Env) -> None:
    env.add_recipient()
    env.fake.fail("sendPhoto", 429, retry_after=1)
    env.notifier()
    event_id = env.event()
    assert wait_until(lambda: env.rows(send_status="sent"), 10)
    row = env.rows()[0]
    assert row.event_id == event_id and row.retry_count >= 1
    assert len(_photos(env.fake)) == 1  # one message reached the chat
    attempts = [r for r in env.fake.requests if r[0] == "sendPhoto"]
    assert len(attempts) == 2


def test_forbidden_is_permanent_no_retry_storm(env: Env) -> None:
    env.add_recipient()
    env.fake.fail("sendPhoto", 403, times=-1, chat_id=CHAT)
    n = env.notifier()
    env.event()
    assert wait_until(lambda: env.rows(send_status="failed"), 10)
    time.sleep(1.5)  # several worker cycles: nothing is retried
    row = env.rows()[0]
    assert row.retry_count == 0 and row.error_message.startswith("Forbidden")
    assert env.fake.calls("sendPhoto") == 1 and _photos(env.fake) == []
    assert n.stats.failed == 1


def test_transient_errors_back_off_and_permanent_400_fails(env: Env) -> None:
    env.add_recipient()
    env.fake.fail("sendPhoto", 500)
    env.fake.fail("sendPhoto", hang_s=3.0)  # read timeout: TimedOut, the request was not processed
    env.notifier()
    first = env.event(seed=1)
    assert wait_until(lambda: env.rows(send_status="sent"), 15)
    row = env.rows(event_id=first)[0]
    assert row.retry_count == 2 and len(_photos(env.fake)) == 1

    env.fake.fail("sendPhoto", 400)
    second = env.event("package", seed=2)
    assert wait_until(lambda: env.rows(event_id=second, send_status="failed"), 10)
    assert env.rows(event_id=second)[0].error_message.startswith("BadRequest")


def test_cooldown_sensitivity_and_disabled(env: Env) -> None:
    env.add_recipient()
    env.notifier()
    a = env.event("person", seed=1)
    b = env.event("person", seed=2)  # within medium's 60 s cooldown: no second alert
    c = env.event("package", seed=3)  # another type alerts
    d = env.event("mail", 0.3, seed=4)  # under medium's 0.5 minimum confidence
    assert wait_until(lambda: len(env.rows(send_status="sent")) == 2, 10)
    assert {r.event_id for r in env.rows()} == {a, c} and not env.rows(event_id=b) and not env.rows(event_id=d)
    with env.sf.begin():
        from detection_service.services.settings import SettingsService

        SettingsService(env.sf).update("notification", {"enabled": False})
    env.event("delivery_food", seed=5)
    assert len(env.rows()) == 2


def test_cooldown_counts_on_event_times_not_on_delayed_writes(env: Env) -> None:
    """A person written 90 s late (the database was down) and the next one, detected 90 s after
    it: medium's 60 s cooldown lies between their arrivals, so both alert, in either write order."""
    env.add_recipient()
    env.notifier()
    late = env.event("person", seed=1, ago_s=90)
    now = env.event("person", seed=2)
    earlier = env.event("person", seed=3, ago_s=200)  # replayed last, long before both
    within = env.event("person", seed=4, ago_s=60)  # 30 s after the late one's arrival: cooled down
    assert wait_until(lambda: len(env.rows(send_status="sent")) == 3, 10)
    assert {r.event_id for r in env.rows()} == {late, now, earlier} and not env.rows(event_id=within)


def test_package_removed_alert_uses_its_template(env: Env) -> None:
    env.add_recipient()
    env.notifier()
    recorder = EventRecorder(
        env.sf,
        env.store,
        lambda: DetectionSettings(capture_count=1),
        env.bus,
        PipelineConfig(package_removed_after_s=1.0, retry_initial_s=0.05),
        env.alerts,
    )
    tracker = ObjectTracker()
    wall0 = time.time()
    try:
        for i in range(40):
            t = i / 10
            dets = [_det(200, 170, 260, 220, "package", 0.8)] if t < 2 else []
            seen = tracker.update(classify_detections(dets, 0.5, "medium"), t, wall0 + t)
            recorder.on_frame(
                Frame(np.full((240, 320, 3), 60, np.uint8), i, t, wall0 + t), t, seen, FrameInfo("m-test", 10.0, 12.0)
            )
        assert wait_until(lambda: len(env.rows(send_status="sent")) == 2, 10)
    finally:
        recorder.close(2)
    arrived, removed = env.rows()
    assert (arrived.kind, removed.kind) == ("event", "removed") and arrived.event_id == removed.event_id
    assert arrived.message_text.startswith("택배가 도착했습니다")
    assert removed.message_text.startswith("택배가 치워졌습니다")
    assert len(_photos(env.fake)) == 2


# --- restart / kill / concurrency ----------------------------------------------------------------

WORKER_SCRIPT = """
import sys, time
from detection_service.database import make_engine, make_session_factory
from detection_service.notifications.crypto import TokenCipher
from detection_service.notifications.worker import Notifier, NotifierConfig
from detection_service.storage.local import LocalObjectStore
url, api, store_dir, key = sys.argv[1:5]
sf = make_session_factory(make_engine(url))
store = LocalObjectStore(store_dir, "ai-door-system", "http://127.0.0.1", b"k" * 32)
n = Notifier(sf, store, TokenCipher(key.encode(), "env"),
             NotifierConfig(api_url=api, updates="off", batch=1, lease_s=2.0, poll_interval_s=0.1,
                            read_timeout_s=30.0, unclassified_hold_s=0.0))
n.start()
print("started", flush=True)
time.sleep(120)
"""


def test_killed_worker_pending_rows_are_each_delivered_exactly_once_after_restart(env: Env, tmp_path: Path) -> None:
    env.add_recipient()
    events = [env.event(t, seed=i) for i, t in enumerate(["person", "package", "delivery_food", "mail"])]
    env.add_recipient(CHAT2)  # a second recipient for later events
    events += [env.event(t, seed=10 + i) for i, t in enumerate(["unclassified"])]
    pending = env.rows(send_status="pending")
    assert len(pending) == 6  # 4 events x 1 recipient + 1 event x 2 recipients
    # A separate process sends the first two, then hangs on the third (Telegram never got it)
    # and is killed with SIGKILL: two sent, one claimed ("sending") by a dead worker, three pending.
    hits = {"n": 0}
    original = env.fake._take_failure

    def third_hangs(method: str, chat_id: Any) -> Failure | None:
        if method == "sendPhoto":
            hits["n"] += 1
            if hits["n"] == 3:
                return Failure(method, hang_s=60.0)
        return original(method, chat_id)

    env.fake._take_failure = third_hangs  # type: ignore[method-assign]
    store_dir = str(env.settings.local_store_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, env.settings.database_url, env.fake.url, store_dir, KEY],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert env.fake.wait_for(lambda: env.fake.calls("sendPhoto") >= 3, 30), proc.stdout and proc.poll()
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    statuses = sorted(r.send_status for r in env.rows())
    assert statuses == ["pending"] * 3 + ["sending"] + ["sent"] * 2
    assert len(env.fake.sent) == 2
    env.fake._take_failure = original  # type: ignore[method-assign]

    env.notifier()  # the service again
    assert wait_until(lambda: len(env.rows(send_status="sent")) == 6, 15)
    per_target: dict[tuple[str, int], int] = {}
    for sent in env.fake.sent:
        event_id = int(sent.reply_markup["inline_keyboard"][0][0]["callback_data"].split(":")[1])
        per_target[(sent.chat_id, event_id)] = per_target.get((sent.chat_id, event_id), 0) + 1
    assert len(per_target) == 6 and set(per_target.values()) == {1}  # each once, none twice
    time.sleep(0.5)
    assert len(env.fake.sent) == 6


def test_two_workers_never_send_the_same_row(env: Env) -> None:
    env.add_recipient()
    env.add_recipient(CHAT2, TOKEN2)
    with env.sf.begin() as s:
        for _ in range(8):
            event = DetectionEvent(
                object_type_id=s.scalar(sa.select(ObjectType.id).where(ObjectType.code == "mail")),
                confidence_score=0.9,
                detected_at=datetime.now(UTC),
            )
            s.add(event)
            s.flush()
            s.add_all(
                [
                    NotificationHistory(
                        event_id=event.id, telegram_user_id=rid, message_text="x", chat_id=chat, send_status="pending"
                    )
                    for rid, chat in s.execute(sa.select(Telegram.id, Telegram.chat_id)).all()
                ]
            )
    env.notifier(photo_wait_s=0.0, updates="off")
    env.notifier(photo_wait_s=0.0, updates="off")
    assert wait_until(lambda: len(env.rows(send_status="sent")) == 16, 15)
    time.sleep(0.5)
    targets = [(s.chat_id, s.text) for s in env.fake.sent]
    assert len(env.fake.sent) == 16
    assert {r.claim_token for r in env.rows()} == {None}
    assert len({(s.chat_id, s.reply_markup["inline_keyboard"][0][0]["callback_data"]) for s in env.fake.sent}) == 16
    assert targets  # sent as text: no captures were stored for these events


# --- the inline keyboard ------------------------------------------------------------------------


def test_button_press_relabels_the_event_and_edits_the_alert(env: Env) -> None:
    env.add_recipient()
    env.notifier()
    event_id = env.event("person", seed=3)
    assert wait_until(lambda: env.rows(send_status="sent"), 10)  # the alert's message id is recorded
    message_id = _photos(env.fake)[0].message_id

    env.fake.press(TOKEN, CHAT, message_id, f"rl:{event_id}:package")  # served by getUpdates
    assert env.fake.wait_for(lambda: len(env.fake.answers) == 1 and len(env.fake.edits) == 1, 10)
    code, event = env.type_of(event_id)
    assert code == "package" and event.user_verified is True and event.is_false_positive is False
    assert event.original_type_id is not None and event.reclassified_at is not None
    assert env.fake.answers[0]["text"] == "✏️ 택배(으)로 변경됨"
    method, fields = env.fake.edits[0]
    assert method == "editMessageCaption" and fields["caption"].endswith("✏️ 택배(으)로 변경됨")
    assert env.fake.message(CHAT, message_id)["caption"].startswith("사람이 감지되었습니다")
    assert env.rows()[0].callback_result == "✏️ 택배(으)로 변경됨"

    env.fake.press(TOKEN, CHAT, message_id, f"rl:{event_id}:fp")  # then: a false alarm after all
    assert env.fake.wait_for(lambda: len(env.fake.answers) == 2, 10)
    code, event = env.type_of(event_id)
    assert code == "package" and event.is_false_positive is True and event.user_verified is True

    env.fake.press(TOKEN, CHAT, message_id, f"rl:{event_id + 999}:ok")  # not this message's event
    assert env.fake.wait_for(lambda: len(env.fake.answers) == 3, 10)
    assert env.fake.answers[2]["text"] == "이 알림을 찾을 수 없습니다"


# --- API, secrecy, key problems ----------------------------------------------------------------


def _client(settings: Settings) -> Any:
    from detection_service.app import create_app
    from tests.conftest import AuthedTestClient as TestClient  # sends an admin token

    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_api_recipients_settings_send_history_and_tokens_never_shown(env: Env) -> None:
    env.settings = Settings.from_env(
        environ={"AIDOOR_TELEGRAM_API_URL": env.fake.url, "AIDOOR_TELEGRAM_KEY": KEY},
        data_dir=env.settings.data_dir,
        database_url=env.settings.database_url,
        dagster_port=free_port(),
    )
    bodies: list[str] = []
    with _client(env.settings) as client:

        def call(method: str, path: str, **kw: Any) -> Any:
            response = client.request(method, path, **kw)
            bodies.append(response.text)
            return response

        r = call("POST", "/api/notifications/recipients", json={"chat_id": CHAT, "bot_token": TOKEN})
        assert r.status_code == 201, r.text
        body = r.json()["data"]
        assert body["bot_token"] == "123456789:********" and body["verified"] is True
        assert body["bot_username"] == "aidoor_test_bot"
        r = call("POST", "/api/notifications/recipients", json={"chat_id": CHAT, "bot_token": TOKEN})
        assert r.status_code == 409 and r.json()["error"]["code"] == "RECIPIENT_EXISTS"
        r = call(
            "POST",
            "/api/notifications/recipients",
            json={"chat_id": CHAT2, "bot_token": "111222333:ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "BOT_TOKEN_REJECTED"
        r = call("POST", "/api/notifications/recipients", json={"chat_id": CHAT2, "bot_token": "not a token at all!!"})
        assert r.status_code == 400
        listed = call("GET", "/api/notifications/recipients").json()["data"]
        assert [(x["chat_id"], x["bot_token"]) for x in listed] == [(CHAT, "123456789:********")]

        r = call("GET", "/api/notifications/settings")
        assert r.json()["data"] == {
            "enabled": True,
            "sensitivity": "medium",
            "types": ["person", "package", "delivery_food", "mail", "unclassified"],
            "min_confidence": 0.5,
            "cooldown_s": 60,
            "unclassified_alerts": True,
        }
        r = call("PUT", "/api/notifications/settings", json={"sensitivity": "extreme"})
        assert r.status_code == 400 and r.json()["success"] is False
        r = call("PUT", "/api/notifications/settings", json={"types": ["person", "cat"]})
        assert r.status_code == 400
        r = call("PUT", "/api/notifications/settings", json={"sensitivity": "high", "types": ["person", "package"]})
        assert r.status_code == 200 and r.json()["data"]["cooldown_s"] == 15
        assert call("GET", "/api/settings/notification").json()["data"]["sensitivity"] == "high"

        r = call("POST", "/api/notifications/send", json={"text": "   "})
        assert r.status_code == 400 and r.json()["error"]["code"] == "EMPTY_TEXT"
        r = call("POST", "/api/notifications/send", json={"text": ""})
        assert r.status_code == 400
        r = call("POST", "/api/notifications/send", json={"text": "테스트 알림입니다"})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["queued"], data["sent"], data["failed"]) == (1, 1, 0)
        assert [s.text for s in env.fake.sent_to(CHAT, "sendMessage")] == ["테스트 알림입니다"]

        env.fake.fail("sendMessage", 403, chat_id=CHAT)
        r = call("POST", "/api/notifications/send", json={"text": "두 번째"})
        assert r.json()["data"]["failed"] == 1

        page = call("GET", "/api/notifications/history", params={"limit": 1}).json()["data"]
        assert page["total"] == 2 and page["limit"] == 1 and len(page["items"]) == 1
        assert page["items"][0]["send_status"] == "failed" and page["items"][0]["kind"] == "test"
        sent = call("GET", "/api/notifications/history", params={"status": "sent"}).json()["data"]
        assert sent["total"] == 1 and sent["items"][0]["message_text"] == "테스트 알림입니다"
        assert call("GET", "/api/notifications/history", params={"status": "bogus"}).status_code == 400
        assert call("GET", "/api/notifications/history", params={"limit": 1000}).status_code == 400

        templates = call("GET", "/api/notifications/templates").json()["data"]
        assert [t["template_key"] for t in templates] == [f"TEXT_{i}" for i in range(6)]
        r = call("PUT", "/api/notifications/templates/TEXT_1", json={"message_text": "문 앞에 {type} ({confidence})"})
        assert r.status_code == 200 and r.json()["data"]["message_text"] == "문 앞에 {type} ({confidence})"
        assert call("PUT", "/api/notifications/templates/TEXT_9", json={"is_active": False}).status_code == 404

        # An event now: the edited template, the 'high' sensitivity.
        event_id = env.event("person", 0.66, seed=7)
        assert env.fake.wait_for(lambda: len(_photos(env.fake)) == 1, 10)
        assert _photos(env.fake)[0].caption.splitlines()[0] == "문 앞에 사람 (66%)"
        assert "/api/detections/" not in _photos(env.fake)[0].caption  # no public URL configured

        health = call("GET", "/api/system/health").json()["data"]["components"]["notifications"]
        assert health["status"] == "ok" and "1 recipient" in health["detail"]
        assert call("GET", "/api/detection").json()["data"]["notification_ready"] is True
        assert call("GET", f"/api/detections/{event_id}").status_code in (200, 404)

        removed = call("DELETE", f"/api/notifications/recipients/{listed[0]['id']}")
        assert removed.status_code == 200 and removed.json()["data"]["bot_token"] == "123456789:********"
        assert call("DELETE", f"/api/notifications/recipients/{listed[0]['id']}").status_code == 404

    for text in bodies:  # no answer ever carried a token or its secret part
        assert SECRET not in text and "ZZZZZZZZZZZZZZZZZZZZ" not in text
    # Nor is it readable anywhere in the database.
    meta = sa.MetaData()
    meta.reflect(env.engine)
    with env.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(table.select()):
                assert SECRET not in " ".join(str(v) for v in row), table.name


def test_encrypted_tokens_without_key_notifications_down_service_up(env: Env, tmp_path: Path) -> None:
    env.add_recipient()  # encrypted with KEY
    env.event()  # queued while the service is down
    with env.sf() as s:
        stored = s.scalar(sa.select(Telegram.bot_token))
    assert stored.startswith("gAAAAA") and SECRET not in stored
    no_key = Settings.from_env(
        environ={"AIDOOR_TELEGRAM_API_URL": env.fake.url},
        data_dir=tmp_path / "other",
        database_url=env.settings.database_url,
        dagster_port=free_port(),
    )
    with _client(no_key) as client:
        report = client.get("/api/system/health").json()["data"]
        component = report["components"]["notifications"]
        assert component["status"] == "down"
        assert "AIDOOR_TELEGRAM_KEY" in component["detail"] and "telegram.key" in component["detail"]
        assert report["components"]["database"]["status"] == "ok"
        assert client.get("/api/notifications/settings").status_code == 200
        r = client.post("/api/notifications/send", json={"text": "hello"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "NOTIFICATIONS_DOWN"
        listed = client.get("/api/notifications/recipients").json()["data"]
        assert listed[0]["bot_token"] == "********"
        time.sleep(0.5)
    assert env.fake.sent == [] and env.rows()[0].send_status == "pending"  # kept for when the key is back
    wrong = Settings.from_env(
        environ={"AIDOOR_TELEGRAM_API_URL": env.fake.url, "AIDOOR_TELEGRAM_KEY": Fernet.generate_key().decode()},
        data_dir=tmp_path / "other",
        database_url=env.settings.database_url,
        dagster_port=free_port(),
    )
    with _client(wrong) as client:
        component = client.get("/api/system/health").json()["data"]["components"]["notifications"]
        assert component["status"] == "down" and "does not decrypt" in component["detail"]


def test_plaintext_tokens_are_encrypted_at_start_and_errors_are_scrubbed(env: Env) -> None:
    with env.sf.begin() as s:  # a row as the seed schema stored it
        s.add(Telegram(user_id=CHAT, chat_id=CHAT, bot_token=TOKEN))
    env.fake.tokens.pop(TOKEN)  # Telegram now rejects the token: 401 -> InvalidToken (permanent)
    n = env.notifier()
    with env.sf() as s:
        assert s.scalar(sa.select(Telegram.bot_token)).startswith("gAAAAA")
    env.event()
    assert wait_until(lambda: env.rows(send_status="failed"), 10)
    row = env.rows()[0]
    assert row.error_message.startswith("InvalidToken") and SECRET not in row.error_message
    assert SECRET not in (n.stats.last_error or "")


def test_webhook_update_is_checked_and_applied(env: Env) -> None:
    env.add_recipient()
    n = env.notifier(updates="webhook", webhook_base="https://door.example.org")
    assert env.fake.wait_for(lambda: TOKEN in env.fake.webhooks, 5)
    hook = env.fake.webhooks[TOKEN]
    assert hook["url"] == "https://door.example.org/api/notifications/telegram/webhook/123456789"
    event_id = env.event()
    assert wait_until(lambda: env.rows(send_status="sent"), 10)  # the alert's message id is recorded
    message_id = _photos(env.fake)[0].message_id
    update = {
        "update_id": 1,
        "callback_query": {
            "id": "cb1",
            "from": {"id": 1, "is_bot": False, "first_name": "O"},
            "chat_instance": "x",
            "data": f"rl:{event_id}:ok",
            "message": env.fake.message(CHAT, message_id),
        },
    }
    assert n.submit(n.handle_webhook("123456789", "wrong", update)).result(5) is False
    assert n.submit(n.handle_webhook("123456789", hook["secret_token"], update)).result(5) is True
    code, event = env.type_of(event_id)
    assert code == "person" and event.user_verified is True
    assert env.fake.answers[-1]["text"] == "✅ 확인됨: 사람"
