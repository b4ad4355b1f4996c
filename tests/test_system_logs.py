"""GET /api/system/logs and the handler that feeds system_logs: non-blocking, counted, no feedback."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from detection_service.services import retention
from detection_service.services.system_logs import COMPONENTS, SystemLogHandler, component_of
from schemas.db import SystemLog, utcnow
from tests.test_app import assert_error

NOW = utcnow()


def _data(response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is (status < 400)
    return body["data"] if status < 400 else body["error"]


def _wait_for_log(client, message: str, timeout: float = 5.0, **params) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in _data(client.get("/api/system/logs", params={"limit": 100, **params}))["items"]:
            if item["message"] == message:
                return item
        time.sleep(0.1)
    return None


def test_a_warning_of_a_service_module_shows_up(client):
    retention.log.warning("disk nearly full: %d%%", 97)
    item = _wait_for_log(client, "disk nearly full: 97%")
    assert item is not None
    assert item["level"] == "WARNING" and item["component"] == "storage"
    assert item["details"]["logger"] == "detection_service.services.retention"
    # Below the default general.log_level (WARNING): not kept. Third-party loggers: not kept.
    retention.log.info("an info line")
    logging.getLogger("httpx").warning("a library's warning")
    retention.log.error("after them")
    assert _wait_for_log(client, "after them") is not None
    messages = [i["message"] for i in _data(client.get("/api/system/logs", params={"limit": 100}))["items"]]
    assert "an info line" not in messages and "a library's warning" not in messages
    handler = _data(client.get("/api/system/logs"))["handler"]
    assert handler["level"] == "WARNING" and handler["written"] >= 2 and handler["dropped"] == 0


def test_log_level_setting_applies_live(client):
    assert _data(client.get("/api/settings/general"))["log_level"] == "WARNING"
    assert_error(client.put("/api/settings/general", json={"log_level": "LOUD"}), 400, "INVALID_SETTINGS")
    assert _data(client.put("/api/settings/general", json={"log_level": "ERROR"}))["log_level"] == "ERROR"
    retention.log.warning("a warning under the bar")
    retention.log.error("an error over it")
    assert _wait_for_log(client, "an error over it") is not None
    assert _wait_for_log(client, "a warning under the bar", timeout=0.5) is None
    assert _data(client.get("/api/system/logs"))["handler"]["level"] == "ERROR"


def _only_these_rows(client) -> None:
    """The app's own records aside: the handler keeps nothing more, the table holds only these."""
    state = client.app.state
    state.system_logs.handler.flush()
    state.system_logs.handler.setLevel(logging.CRITICAL + 1)
    with state.session_factory.begin() as session:
        session.execute(sa.delete(SystemLog))


def _add_rows(client) -> None:
    _only_these_rows(client)
    rows = [
        ("DEBUG", "camera", 1),
        ("INFO", "camera", 2),
        ("WARNING", "camera", 3),
        ("ERROR", "detection", 4),
        ("CRITICAL", "storage", 5),
        ("WARNING", "api", 48),
    ]
    with client.app.state.session_factory.begin() as session:
        for level, component, hours_ago in rows:
            session.add(
                SystemLog(
                    level=level,
                    component=component,
                    message=f"{level} {component} {hours_ago}h",
                    created_at=NOW - timedelta(hours=hours_ago),
                )
            )


def test_filters_newest_first_and_paged(client):
    _add_rows(client)
    everything = _data(client.get("/api/system/logs", params={"date_range": "7d", "limit": 100}))
    assert [i["message"] for i in everything["items"]] == [
        "DEBUG camera 1h",
        "INFO camera 2h",
        "WARNING camera 3h",
        "ERROR detection 4h",
        "CRITICAL storage 5h",
        "WARNING api 48h",
    ]
    serious = _data(client.get("/api/system/logs", params={"level": "error", "date_range": "7d"}))
    assert [i["level"] for i in serious["items"]] == ["ERROR", "CRITICAL"]
    camera = _data(client.get("/api/system/logs", params={"component": "camera", "level": "INFO"}))
    assert [i["message"] for i in camera["items"]] == ["INFO camera 2h", "WARNING camera 3h"]
    assert camera["total"] == 2
    day = _data(client.get("/api/system/logs", params={"date_range": "24h", "component": "api"}))
    assert day["total"] == 0
    start = (NOW - timedelta(hours=50)).isoformat()
    end = (NOW - timedelta(hours=4, minutes=30)).isoformat()
    span = _data(client.get("/api/system/logs", params={"date_range": f"{start}/{end}"}))
    assert [i["message"] for i in span["items"]] == ["CRITICAL storage 5h", "WARNING api 48h"]
    page2 = _data(
        client.get("/api/system/logs", params={"component": "camera", "level": "DEBUG", "limit": 2, "page": 2})
    )
    assert [i["message"] for i in page2["items"]] == ["WARNING camera 3h"] and page2["total"] == 3
    assert page2["page"] == 2 and page2["limit"] == 2 and page2["handler"]["dropped"] == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"level": "LOUD"}, "INVALID_LEVEL"),
        ({"component": "kitchen"}, "INVALID_COMPONENT"),
        ({"date_range": "fortnight"}, "INVALID_DATE_RANGE"),
        ({"date_range": "2026-02-02/2026-01-01"}, "INVALID_DATE_RANGE"),
        ({"date_range": "yesterday/"}, "INVALID_DATE"),
        ({"limit": 0}, "INVALID_PAGING"),
        ({"limit": 101}, "INVALID_PAGING"),
        ({"page": 0}, "INVALID_PAGING"),
        ({"page": "two"}, "VALIDATION_ERROR"),
        ({"limit": "many"}, "VALIDATION_ERROR"),
    ],
)
def test_each_bad_value_is_its_own_400(client, params, code):
    assert_error(client.get("/api/system/logs", params=params), 400, code)


# -- the handler on its own -------------------------------------------------------------------


class _StuckDatabase:
    """A session factory whose database hangs until released, then refuses."""

    def __init__(self, on_write=None) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.on_write = on_write

    def begin(self):
        self.calls += 1
        if self.on_write:
            self.on_write()
        self.release.wait(10)
        raise sa.exc.OperationalError("INSERT INTO system_logs", {}, ConnectionRefusedError("database is down"))


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def test_a_dead_database_never_blocks_logging_and_drops_are_counted(caplog):
    stuck = _StuckDatabase()
    handler = SystemLogHandler(
        stuck,
        capacity=10,
        batch_size=10,
        flush_interval_s=0.01,  # type: ignore[arg-type]
        retry_after_s=0.01,
    )
    logger = _logger("detection_service.pipeline.test_dead_database", handler)
    try:
        with caplog.at_level(logging.WARNING, logger="detection_service.services.system_logs"):
            started = time.monotonic()
            for i in range(500):
                logger.warning("frame %d late", i)
            elapsed = time.monotonic() - started
            assert elapsed < 1.0  # 500 records while the database hangs: no call waited on it
            stats = handler.stats()
            # The writer holds at most one batch (10) while it hangs; the queue holds 10; the rest drop.
            assert stats.queue_size == 10 and stats.dropped >= 500 - 10 - handler.batch_size
            full = [r for r in caplog.records if "queue full" in r.getMessage()]
            assert len(full) == 1  # logged once, not once per drop
        stuck.release.set()
        assert handler.flush(timeout=5)
        stats = handler.stats()
        assert stats.failed >= 1 and "database is down" in (stats.last_error or "")
        assert stats.written == 0 and stats.failed + stats.dropped == 500
    finally:
        stuck.release.set()
        logger.removeHandler(handler)
        handler.close()


def test_records_made_while_writing_do_not_feed_back():
    # The write itself logs (as a driver or SQLAlchemy might) and then fails: neither that record
    # nor the handler's own warning about the failure comes back into the queue.
    stuck = _StuckDatabase(on_write=lambda: logging.getLogger("detection_service.database").error("write failed"))
    stuck.release.set()
    handler = SystemLogHandler(stuck, flush_interval_s=0.01, retry_after_s=0.01)  # type: ignore[arg-type]
    logger = _logger("detection_service.notifications.test_feedback", handler)
    own = _logger("detection_service.database", handler)
    own_module = _logger("detection_service.services.system_logs", handler)
    try:
        logger.warning("one record")
        assert handler.flush(timeout=5)
        time.sleep(0.1)
        assert handler.flush(timeout=5)
        stats = handler.stats()
        assert stuck.calls == 1 and stats.failed == 1 and stats.queue_size == 0
    finally:
        for each in (logger, own, own_module):
            each.removeHandler(handler)
            each.propagate = True
        handler.close()


def test_component_table_names_modules_that_exist():
    for prefix in COMPONENTS:
        if prefix.startswith("detection_service.") or prefix in ("assets", "orchestration", "schemas"):
            assert importlib.util.find_spec(prefix) is not None, f"{prefix} in COMPONENTS no longer exists"
    assert component_of("detection_service.pipeline.capture") == "camera"
    assert component_of("detection_service.pipeline.runner") == "detection"
    assert component_of("detection_service.notifications.worker") == "notification"
    assert component_of("detection_service.storage.s3") == "storage"
    assert component_of("detection_service.api.events") == "api"
    assert component_of("detection_service.somewhere_new") == "system"
    assert component_of("httpx") is None and component_of("detection_servicex") is None
