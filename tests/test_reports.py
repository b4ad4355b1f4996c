"""Analytics reports (issue 12, item 6): content on a seeded door (the planted rhythm of
test_analytics plus a day with false positives, an unclassified and a relabelled event, a parcel
left overnight and component outages), the endpoint's 400s and 202, and end to end: the daily
schedule's tick materializes yesterday's daily_summary in Dagster, the endpoint serves it as JSON,
CSV and HTML, and headless Chromium shows and prints the page (screenshot and PDF in
tests/artifacts/reports/, git-ignored)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from detection_service.services.reports import ReportService
from detection_service.storage.keys import event_image_key, report_key
from schemas.db import BatchJob, DetectionEvent, SystemStatusLog
from schemas.reports import period_key
from tests.test_analytics import ZONE, Door, data, plant, utc

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "reports"


@pytest.fixture
def today() -> date:
    now_local = datetime.now(UTC).astimezone(ZONE)
    if now_local.hour < 1 or now_local.hour == 23:  # the planted days must stay where they are
        pytest.skip("too close to local midnight")
    return now_local.date()


def seed_day(state, day: date) -> dict[str, int]:
    """Oddities of one local day on top of the rhythm; returns their event ids."""
    door = Door(state.session_factory)
    fp = door.add("person", utc(day, 9, 10), 12)
    fp["is_false_positive"] = True
    unclassified = door.add("unclassified", utc(day, 14, 0), 8, confidence=0.41)
    relabelled = door.add("package", utc(day, 15, 0), 60)
    relabelled["original_type_id"] = door.types["mail"]
    overnight = door.add("package", utc(day, 21, 30), 12 * 3600)  # taken at 09:30 next morning
    shot = door.add("person", utc(day, 16, 45), 40)
    ids = door.write()
    # The snapshot of one person event, so the page has a thumbnail to link.
    import cv2

    frame = np.full((96, 128, 3), (60, 140, 60), np.uint8)
    key = event_image_key(ids[id(shot)], shot["detected_at"], 1)
    state.object_store.put_bytes(key, cv2.imencode(".jpg", frame)[1].tobytes(), "image/jpeg")
    with state.session_factory.begin() as session:
        session.execute(sa.update(DetectionEvent).where(DetectionEvent.id == ids[id(shot)]).values(image_path=key))
        for component, status, hour, minute in (
            ("camera", "running", 8, 0),
            ("camera", "error", 10, 0),
            ("camera", "running", 10, 30),
            ("detection", "running", 8, 0),
            ("detection", "stopped", 23, 0),
        ):
            session.add(
                SystemStatusLog(
                    component=component,
                    status=status,
                    logged_at=utc(day, hour, minute),
                    error_message="RTSP timeout" if status == "error" else None,
                )
            )
    rows = {"fp": fp, "unclassified": unclassified, "relabelled": relabelled, "overnight": overnight, "shot": shot}
    return {name: ids[id(row)] for name, row in rows.items()}


def events_of(state, start: datetime, end: datetime) -> list[DetectionEvent]:
    with state.session_factory() as session:
        return list(
            session.scalars(
                sa.select(DetectionEvent)
                .where(DetectionEvent.detected_at >= start, DetectionEvent.detected_at < end)
                .order_by(DetectionEvent.detected_at, DetectionEvent.id)
            )
        )


def table(report, name: str):
    return next(t for t in report.tables if t.name == name)


def test_daily_reports_on_a_seeded_day(client, today):
    state = client.app.state
    planted = plant(state.session_factory, today)
    day = today - timedelta(days=2)  # the day of the planted 03:05 visit and the 20-minute person
    seeded = seed_day(state, day)
    service = ReportService(state.session_factory, state.object_store, "Asia/Seoul")
    start, end = service.window("daily_summary", day.isoformat())
    assert start == utc(day, 0) and end == utc(day + timedelta(days=1), 0)
    rows = events_of(state, start, end)
    with state.session_factory() as session:
        codes = dict(session.execute(sa.text("SELECT id, code FROM object_types")).all())

    summary = service.materialize("daily_summary", day.isoformat())
    assert summary.counts["events"] == len(rows)
    for tid, code in codes.items():
        assert summary.counts[f"type:{code}"] == sum(1 for r in rows if r.object_type_id == tid)
    assert summary.counts["false_positives"] == 1 and summary.counts["reclassified"] == 1
    assert service.database_counts(summary) == summary.counts
    hours = table(summary, "by_hour")
    assert sum(r[-1] for r in hours.rows) == len(rows) - 1  # false positives out
    assert hours.rows[3][-1] == 1  # the 03:05 visit, local hour
    anomalies = {(r[0], r[3]) for r in table(summary, "anomalies").rows}
    assert ("rare_hour", str(planted["visit"])) in anomalies and ("loitering", str(planted["loiter"])) in anomalies
    assert [r[0] for r in table(summary, "events").rows] == [r.id for r in rows]  # in time order
    assert [t.event_id for t in summary.thumbnails] == [seeded["shot"]]
    assert any("Busiest hour" in line for line in summary.summary)
    stored = service.keys("daily_summary", day.isoformat())
    assert stored == [
        report_key("daily_summary", day.isoformat(), name)
        for name in ("by_hour.png", "report.csv", "report.html", "report.json")
    ]
    assert state.object_store.get_bytes(stored[0]).startswith(b"\x89PNG")

    security = service.build("security_report", day.isoformat())
    assert security.counts["unclassified"] == 1 and service.database_counts(security) == security.counts
    assert [r[0] for r in table(security, "unclassified").rows] == [seeded["unclassified"]]
    assert [r[0] for r in table(security, "false_positives").rows] == [seeded["fp"]]
    overnight = table(security, "packages_overnight").rows
    assert [r[0] for r in overnight] == [seeded["overnight"]] and overnight[0][3] == 12.0  # 21:30 to 09:30
    outages = table(security, "outages").rows
    assert [(r[0], r[1], r[2][11:], r[3][11:] if ":" in r[3] else r[3], r[4]) for r in outages] == [
        ("camera", "error", "10:00", "10:30", 30.0),
        ("detection", "stopped", "23:00", "still at the end of the period", 60.0),
    ]
    assert outages[0][5] == "RTSP timeout"
    kinds = {r[0] for r in table(security, "anomalies").rows}
    assert {"rare_hour", "loitering"} <= kinds


def test_weekly_reports_on_the_planted_rhythm(client, today):
    state = client.app.state
    plant(state.session_factory, today)
    service = ReportService(state.session_factory, state.object_store, "Asia/Seoul")
    week = period_key("week", (today - timedelta(days=7)).isoformat())
    start, end = service.window("weekly_pattern", week)
    rows = events_of(state, start, end)
    with state.session_factory() as session:
        person = session.execute(sa.text("SELECT id FROM object_types WHERE code = 'person'")).scalar_one()
    persons = [r for r in rows if r.object_type_id == person]

    pattern = service.materialize("weekly_pattern", week)
    assert pattern.counts["events"] == len(rows) and service.database_counts(pattern) == pattern.counts
    by_day = table(pattern, "by_day").rows
    assert len(by_day) == 7 and by_day[0][0] == week and sum(r[1] for r in by_day) == len(rows)
    grid = table(pattern, "hour_by_weekday").rows
    assert sum(sum(r[1:]) for r in grid) == len(rows)
    # Weekday parcels and mail come 10:00-12:00: every window lies inside it, on weekdays only.
    windows = {r[0]: r for r in table(pattern, "delivery_windows").rows}
    for code in ("package", "mail"):
        assert windows[code][1] > 0 and set(windows[code][3].split()) <= {"mon", "tue", "wed", "thu", "fri"}
        spans = re.findall(r"(\d\d:\d\d)-(\d\d:\d\d)", windows[code][2])
        assert spans and all(a >= "10:00" and b <= "12:00" for a, b in spans), windows[code]
    assert [c.name for c in pattern.charts] == ["heatmap", "by_day"]

    visitors = service.build("visitor_analysis", week)
    assert sum(r[2] for r in table(visitors, "visits_by_day").rows) == len(persons)
    assert sum(r[1] for r in table(visitors, "visits_by_hour").rows) == len(persons)
    # Returning visitors come from the frequent-visitor grouping over the same week: the planted
    # events have no captures, so nobody can be recognised, and the report says why.
    returning = table(visitors, "visitors")
    assert returning.rows == [] and returning.note
    assert any("appearance" in note and "0 of" in note for note in visitors.notes)


def test_endpoint_bad_values_and_one_pending_job(client, today):
    for params, code in (
        ({"type": "monthly"}, "INVALID_REPORT_TYPE"),
        ({"format": "pdf"}, "INVALID_FORMAT"),
        ({"period": "yesterday"}, "INVALID_PERIOD"),
        ({"period": "2026-13-01"}, "INVALID_PERIOD"),
        ({"period": today.isoformat()}, "INVALID_PERIOD"),  # not over yet
        ({"period": "2020-01-01"}, "INVALID_PERIOD"),  # before the reports start
        ({"type": "weekly_pattern", "period": "2026-W60"}, "INVALID_PERIOD"),
    ):
        error = data(client.get("/api/analytics/reports", params=params), 400)
        assert error["code"] == code, (params, error)
    with client.app.state.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(BatchJob)) == 0  # nothing queued

    week = period_key("week", (today - timedelta(days=14)).isoformat())
    iso_week = "{}-W{:02d}".format(*date.fromisoformat(week).isocalendar()[:2])
    first = client.get("/api/analytics/reports", params={"type": "weekly_pattern", "period": iso_week})
    pending = data(first, 202)
    assert pending["period"] == week and pending["submitted"] is True
    assert pending["job"]["job_type"] == "report_generate" and pending["job"]["status"] == "pending"
    assert pending["job"]["parameters"] == {"report_type": "weekly_pattern", "period": week}
    again = data(
        client.get("/api/analytics/reports", params={"type": "weekly_pattern", "period": week, "format": "html"}), 202
    )
    assert again["job"]["id"] == pending["job"]["id"] and again["submitted"] is False
    # The default period is the last one that is over: yesterday.
    default = data(client.get("/api/analytics/reports"), 202)
    assert default["period"] == (today - timedelta(days=1)).isoformat() and default["job"]["id"] != pending["job"]["id"]
    # On demand through the Batch API: the endpoint then answers with that job, not a second one.
    day = (today - timedelta(days=5)).isoformat()
    trigger = {"job_type": "report_generate", "parameters": {"report_type": "security_report", "period": "2026-1-1"}}
    assert client.post("/api/batch/trigger", json=trigger).json()["error"]["code"] == "INVALID_JOB"
    trigger["parameters"]["period"] = day
    triggered = client.post("/api/batch/trigger", json=trigger).json()["data"]
    asked = data(client.get("/api/analytics/reports", params={"type": "security_report", "period": day}), 202)
    assert asked["job"]["id"] == triggered["id"] and asked["submitted"] is False
    # ... and a second trigger of the same report and period answers 200 with that job, queueing nothing;
    # so does a trigger of the partition the endpoint queued.
    second = client.post("/api/batch/trigger", json=trigger)
    assert data(second, 200)["id"] == triggered["id"] and "already pending" in second.json()["message"]
    same_week = {"job_type": "report_generate", "parameters": {"report_type": "weekly_pattern", "period": week}}
    assert data(client.post("/api/batch/trigger", json=same_week), 200)["id"] == pending["job"]["id"]
    with client.app.state.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(BatchJob)) == 3


@pytest.mark.timeout(300)
def test_daily_schedule_materializes_yesterday_and_the_endpoint_serves_it(client, settings, today):
    from assets.reports import REPORT_ASSETS, detection_events, system_status_logs
    from orchestration.reports import REPORT_SCHEDULES, daily_reports_job, daily_reports_schedule
    from orchestration.resources import resources_from_settings
    from tests.dagster_helpers import ephemeral_instance

    state = client.app.state
    plant(state.session_factory, today)
    yesterday = today - timedelta(days=1)
    seeded = seed_day(state, yesterday)
    defs = dg.Definitions(
        assets=[detection_events, system_status_logs, *REPORT_ASSETS],
        jobs=[daily_reports_job],
        schedules=REPORT_SCHEDULES,
        resources=resources_from_settings(settings),
    )
    with ephemeral_instance() as instance:
        # The daemon's tick at 00:15 local today requests yesterday's partition.
        tick_at = datetime.combine(today, time(0, 15), tzinfo=ZONE)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick_at) as context:
            [request] = daily_reports_schedule.evaluate_tick(context).run_requests
        assert request.partition_key == yesterday.isoformat()
        result = defs.get_job_def(daily_reports_job.name).execute_in_process(
            partition_key=request.partition_key, instance=instance, tags=request.tags
        )
        assert result.success
        materialized = {m.asset_key.path[-1]: m for m in result.asset_materializations_for_node("daily_summary")}
        metadata = materialized["daily_summary"].metadata
        assert metadata["period"].value == yesterday.isoformat() and "preview" in metadata
        checks = {c.asset_key.path[-1]: c for c in result.get_asset_check_evaluations()}
        assert checks["daily_summary"].passed and checks["security_report"].passed

    answer = data(
        client.get("/api/analytics/reports", params={"type": "daily_summary", "period": yesterday.isoformat()})
    )
    rows = events_of(
        state, *ReportService(state.session_factory, None, "Asia/Seoul").window("daily_summary", yesterday.isoformat())
    )
    assert answer["period"] == yesterday.isoformat() and answer["counts"]["events"] == len(rows)
    assert metadata["events"].value == len(rows)

    as_csv = client.get("/api/analytics/reports", params={"period": yesterday.isoformat(), "format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.content.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert lines[0] == ["report", "daily_summary"] and ["events", str(len(rows))] in lines
    assert sum(1 for line in lines if line and line[0] == str(seeded["shot"])) == 1

    page = client.get("/api/analytics/reports", params={"period": yesterday.isoformat(), "format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.count("data:image/png;base64,") == 1 and "/api/storage/objects/" in html

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium missing: the page was not opened in a browser")
    from playwright.sync_api import sync_playwright

    from tests.test_viewer import CHROMIUM_FLAGS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            browser_page = browser.new_page(viewport={"width": 1000, "height": 800})

            def serve(route) -> None:
                # Nothing leaves the machine: the signed thumbnail link is answered by the app itself.
                url = route.request.url
                if "/api/storage/objects/" not in url:
                    return route.abort()
                answer = client.get(url[url.index("/api/storage/objects/") :])
                return route.fulfill(status=answer.status_code, body=answer.content, content_type="image/jpeg")

            browser_page.route("**/*", serve)
            browser_page.set_content(html, wait_until="load")
            assert browser_page.title().startswith("Daily summary")
            chart = browser_page.locator("figure img").first
            assert chart.evaluate("img => img.naturalWidth") > 300  # the inline PNG decoded
            thumbnail = browser_page.locator(".thumbs img").first
            thumbnail.scroll_into_view_if_needed()
            browser_page.wait_for_function("() => document.querySelector('.thumbs img').complete")
            assert thumbnail.evaluate("img => img.naturalWidth") == 128  # the signed link served the JPEG
            browser_page.screenshot(path=str(ARTIFACTS / "daily_summary.png"), full_page=True)
            printed = {"daily_summary": browser_page.pdf(path=str(ARTIFACTS / "daily_summary.pdf"), format="A4")}
            # The other types on the same door print on one or two pages too.
            service = ReportService(state.session_factory, state.object_store, "Asia/Seoul")
            for report_type in ("security_report", "weekly_pattern", "visitor_analysis"):
                period = yesterday.isoformat() if report_type == "security_report" else None
                period = period or service.latest_period(report_type)
                service.materialize(report_type, period)
                browser_page.set_content(service.serve(report_type, period, "html").body, wait_until="load")
                browser_page.screenshot(path=str(ARTIFACTS / f"{report_type}.png"), full_page=True)
                printed[report_type] = browser_page.pdf(path=str(ARTIFACTS / f"{report_type}.pdf"), format="A4")
        finally:
            browser.close()
    pages = {name: len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) for name, pdf in printed.items()}
    assert all(1 <= n <= 2 for n in pages.values()), f"A4 pages per report: {pages}"


def test_a_pending_report_job_runs_through_the_batch_sensor(client, settings, today):
    from assets.reports import REPORT_ASSETS, detection_events, system_status_logs
    from orchestration.batch_runs import batch_target_jobs
    from orchestration.reports import REPORT_TYPE_JOBS
    from orchestration.resources import resources_from_settings
    from tests.dagster_helpers import ephemeral_instance, next_batch_run

    state = client.app.state
    plant(state.session_factory, today)
    day = (today - timedelta(days=3)).isoformat()
    pending = data(client.get("/api/analytics/reports", params={"type": "security_report", "period": day}), 202)
    with ephemeral_instance() as instance:
        run = next_batch_run(settings, instance)
        assert run.job_name == "security_report_report_job" and run.partition_key == day
        assert {job.name for job in REPORT_TYPE_JOBS.values()} <= {job.name for job in batch_target_jobs()}
        defs = dg.Definitions(
            assets=[detection_events, system_status_logs, *REPORT_ASSETS],
            jobs=list(REPORT_TYPE_JOBS.values()),
            resources=resources_from_settings(settings),
        )
        result = defs.get_job_def(run.job_name).execute_in_process(
            partition_key=run.partition_key, run_config=run.run_config, tags=run.tags, instance=instance
        )
        assert result.success
        assert [m.asset_key.path[-1] for m in result.get_asset_materialization_events()] == ["security_report"]
    finished = state.jobs.get(pending["job"]["id"])
    assert finished.status == "completed" and finished.result["period"] == day
    served = data(client.get("/api/analytics/reports", params={"type": "security_report", "period": day}))
    assert served["type"] == "security_report" and served["counts"]["events"] == finished.result["counts"]["events"]


def test_visitor_analysis_lists_the_returning_visitors_of_the_week(client, today):
    from tests.test_visitors import Door as CaptureDoor

    state = client.app.state
    door = CaptureDoor(state.session_factory, state.object_store)
    week = period_key("week", (today - timedelta(days=7)).isoformat())
    monday = date.fromisoformat(week)
    a_events = [door.visit("A", utc(monday + timedelta(days=d), 8, 10)) for d in (0, 2, 4)]
    d_events = [door.visit("D", utc(monday + timedelta(days=d), 19, 30)) for d in (1, 5)]
    door.visit("E", utc(monday + timedelta(days=3), 12, 0))  # once: not returning
    door.visit("A", utc(monday + timedelta(days=8), 8, 10))  # the week after: not in this report

    report = ReportService(state.session_factory, state.object_store, "Asia/Seoul").build("visitor_analysis", week)
    returning = table(report, "visitors")
    assert [(r[1], r[5]) for r in returning.rows] == [(3, "08"), (2, "19")]
    assert returning.rows[0][3].startswith(f"{monday.isoformat()} 08:10")
    assert sum(r[2] for r in table(report, "visits_by_day").rows) == 6
    # Thumbnails: each returning visitor's representative capture (a key of one of their events).
    assert [t.caption for t in report.thumbnails] == ["visitor 1: 3 visits", "visitor 2: 2 visits"]
    assert report.thumbnails[0].event_id in a_events and report.thumbnails[1].event_id in d_events
    assert all(state.object_store.exists(t.key) for t in report.thumbnails)
    assert any("2 returning visitor(s)" in line for line in report.summary)
