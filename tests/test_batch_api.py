"""Batch API (/api/batch: list, trigger, one job, cancel), the job-type -> Dagster job registry,
and the log archive (system_logs -> gzip JSON lines in the object store, then deleted)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from detection_service.batch_jobs import BATCH_JOB_TAG, BatchJobs
from detection_service.dagster_client import DagsterUnavailable
from detection_service.services.log_archive import LogArchiveService, read_archive
from detection_service.storage.keys import SYSTEM_LOG_ARCHIVE_PREFIX
from schemas.batch_jobs import LogArchive, StorageCleanup
from schemas.db import BatchJob, SystemLog, SystemStatusLog, utcnow
from schemas.enums import BatchJobType

NOW = utcnow()


def data(response):
    body = response.json()
    assert response.status_code < 300, body
    assert body["success"] is True and "timestamp" in body
    return body["data"]


def error(response, status: int, code: str) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert body["success"] is False and body["error"]["code"] == code, body
    return body["error"]


def job_count(state) -> int:
    with state.session_factory() as session:
        return session.scalar(sa.select(sa.func.count(BatchJob.id)))


# ---------------------------------------------------------------------- trigger, list, one job


def test_trigger_list_and_show(client, settings):
    cleanup = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
    assert (cleanup["job_type"], cleanup["status"], cleanup["job_name"]) == (
        "storage_cleanup",
        "pending",
        "storage cleanup",
    )
    assert cleanup["dagster_run_id"] is None and cleanup["dagster_run_url"] is None
    archive = data(
        client.post("/api/batch/trigger", json={"job_type": "log_archive", "job_name": "logs now", "priority": 2})
    )
    assert (archive["job_name"], archive["priority"], archive["parameters"]) == ("logs now", 2, {})

    listed = data(client.get("/api/batch/jobs"))
    assert [job["id"] for job in listed] == [archive["id"], cleanup["id"]]  # newest first
    assert [job["id"] for job in data(client.get("/api/batch/jobs", params={"limit": 1}))] == [archive["id"]]

    # A run claims the archive job: its id and the link to it in the Dagster UI show.
    BatchJobs(client.app.state.session_factory).start(archive["id"], "run-abc", "archiving")
    shown = data(client.get(f"/api/batch/jobs/{archive['id']}"))
    assert (shown["status"], shown["current_step"], shown["dagster_run_id"]) == ("running", "archiving", "run-abc")
    assert shown["dagster_run_url"] == f"http://127.0.0.1:{settings.dagster_port}/runs/run-abc"
    assert [job["id"] for job in data(client.get("/api/batch/jobs", params={"status": "running"}))] == [archive["id"]]
    assert [job["id"] for job in data(client.get("/api/batch/jobs", params={"status": "PENDING"}))] == [cleanup["id"]]
    assert data(client.get("/api/batch/jobs", params={"status": "failed"})) == []


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"status": "done"}, "INVALID_STATUS", "status"),
        ({"limit": 0}, "INVALID_LIMIT", "limit"),
        ({"limit": 101}, "INVALID_LIMIT", "limit"),
        ({"limit": "many"}, "VALIDATION_ERROR", None),
    ],
)
def test_each_bad_list_value_is_its_own_400(client, params, code, field):
    details = error(client.get("/api/batch/jobs", params=params), 400, code)["details"]
    if field:
        assert field in details


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"job_type": "nightly_magic"}, "INVALID_JOB"),
        ({"job_type": "report_generation", "parameters": {}}, "INVALID_JOB"),
        ({"job_type": "storage_cleanup", "parameters": {"max_days": 3}}, "INVALID_JOB"),
        ({"job_type": "log_archive", "parameters": {"job_type": "storage_cleanup"}}, "INVALID_JOB"),
        ({"job_type": "model_evaluation", "parameters": {}}, "INVALID_JOB"),
        ({"job_type": "dataset_update", "parameters": {"source": "ftp", "dataset_id": "d"}}, "INVALID_JOB"),
        ({"job_type": "dataset_update", "parameters": {"source": "roboflow", "dataset_id": "d"}}, "INVALID_JOB"),
        ({"job_type": "model_retrain", "parameters": {"dataset_id": "d", "epochs": 0}}, "INVALID_JOB"),
        ({"job_type": "model_retrain", "parameters": {"dataset_id": "d", "learning_rate": 1}}, "INVALID_JOB"),
        ({"parameters": {}}, "VALIDATION_ERROR"),
        ({"job_type": "log_archive", "priority": 11}, "VALIDATION_ERROR"),
        ({"job_type": "log_archive", "job_name": ""}, "VALIDATION_ERROR"),
        ({"job_type": "log_archive", "when": "now"}, "VALIDATION_ERROR"),
    ],
)
def test_a_bad_trigger_is_a_400_and_queues_nothing(client, body, code):
    error(client.post("/api/batch/trigger", json=body), 400, code)
    assert job_count(client.app.state) == 0


def test_triggers_that_name_what_does_not_exist_queue_nothing(client, settings):
    state = client.app.state
    error(
        client.post("/api/batch/trigger", json={"job_type": "model_evaluation", "parameters": {"model_id": "nope"}}),
        404,
        "NOT_FOUND",
    )
    auto = {"source": "auto_collect", "dataset_id": "nope"}
    error(
        client.post("/api/batch/trigger", json={"job_type": "dataset_update", "parameters": auto}),
        404,
        "DATASET_NOT_FOUND",
    )
    outside = {"source": "path", "path": "/etc", "dataset_id": "etc"}
    error(
        client.post("/api/batch/trigger", json={"job_type": "dataset_update", "parameters": outside}),
        403,
        "SOURCE_PATH_NOT_ALLOWED",
    )
    missing = {"source": "path", "path": str(settings.import_dirs[0] / "absent"), "dataset_id": "x"}
    error(
        client.post("/api/batch/trigger", json={"job_type": "dataset_update", "parameters": missing}),
        400,
        "INVALID_JOB",
    )
    materialize = {"dataset_id": "nope", "version": "v1"}
    error(
        client.post("/api/batch/trigger", json={"job_type": "dataset_materialize", "parameters": materialize}),
        404,
        "DATASET_VERSION_NOT_FOUND",
    )
    roboflow = {"source": "roboflow", "project_name": "p", "version": 1, "dataset_id": "p"}
    assert (
        client.post("/api/batch/trigger", json={"job_type": "dataset_update", "parameters": roboflow}).status_code
        == 400
    )
    retrain = {"dataset_id": "nope", "profile": "tiny"}
    error(
        client.post("/api/batch/trigger", json={"job_type": "model_retrain", "parameters": retrain}), 404, "NOT_FOUND"
    )
    assert job_count(state) == 0


def test_a_path_import_inside_the_import_folders_is_queued(client, settings):
    folder = settings.import_dirs[0] / "export"
    folder.mkdir(parents=True)
    parameters = {"source": "path", "path": str(folder), "dataset_id": "door"}
    job = data(client.post("/api/batch/trigger", json={"job_type": "dataset_update", "parameters": parameters}))
    assert (job["status"], job["parameters"]) == ("pending", parameters)


def test_unknown_jobs_are_404(client):
    error(client.get("/api/batch/jobs/999"), 404, "BATCH_JOB_NOT_FOUND")
    error(client.delete("/api/batch/jobs/999"), 404, "BATCH_JOB_NOT_FOUND")


def test_the_same_report_period_twice_is_one_job(client):
    """report_generate names its whole result (report type + period): triggers while that job is
    pending or running answer it (200) instead of queueing the same work again, also when they
    arrive at once; another period, or the same one after the job finished, is queued (202)."""
    from concurrent.futures import ThreadPoolExecutor

    day = (NOW - timedelta(days=3)).date().isoformat()
    body = {"job_type": "report_generate", "parameters": {"report_type": "daily_summary", "period": day}}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: client.post("/api/batch/trigger", json=body), range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [202]
    assert len({a.json()["data"]["id"] for a in answers}) == 1 and job_count(client.app.state) == 1
    job_id = answers[0].json()["data"]["id"]
    BatchJobs(client.app.state.session_factory).start(job_id, "run-1")
    running = client.post("/api/batch/trigger", json=body)
    assert running.status_code == 200 and running.json()["data"]["status"] == "running"
    other = {"job_type": "report_generate", "parameters": {"report_type": "security_report", "period": day}}
    assert client.post("/api/batch/trigger", json=other).status_code == 202
    BatchJobs(client.app.state.session_factory).complete(job_id)
    again = client.post("/api/batch/trigger", json=body)
    assert again.status_code == 202 and again.json()["data"]["id"] != job_id and job_count(client.app.state) == 3
    # Other job types are not merged: two clean-ups are two jobs.
    for _ in range(2):
        assert client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}).status_code == 202


# ---------------------------------------------------------------------- cancel


def test_a_pending_job_cancelled_never_starts(client, settings):
    from orchestration.sensors import batch_job_sensor
    from tests.dagster_helpers import ephemeral_instance, tick

    job = data(client.post("/api/batch/trigger", json={"job_type": "log_archive"}))
    result = data(client.delete(f"/api/batch/jobs/{job['id']}"))
    assert (result["job"]["status"], result["job"]["current_step"]) == ("cancelled", "cancelled")
    assert result["job"]["error_message"] == "cancelled by request"
    # Dagster is not running here: nothing had claimed the job, so there was nothing to terminate.
    assert result["terminated_run_ids"] == [] and result["termination_error"] is None
    error(client.delete(f"/api/batch/jobs/{job['id']}"), 409, "BATCH_JOB_FINISHED")
    with ephemeral_instance() as instance:
        skipped, _ = tick(batch_job_sensor, settings, instance)
        assert isinstance(skipped, dg.SkipReason)
    # And a run that the sensor had launched already finds it finished and does nothing.
    assert BatchJobs(client.app.state.session_factory).start(job["id"], "late-run") is None


def test_cancelling_a_running_job_terminates_its_run(client, monkeypatch):
    state = client.app.state
    job = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
    BatchJobs(state.session_factory).start(job["id"], "run-1", "deleting expired events")
    terminated: list[str] = []
    monkeypatch.setattr(state.dagster, "runs_tagged", lambda key, value: [("run-1", "STARTED"), ("run-0", "FAILURE")])
    monkeypatch.setattr(state.dagster, "terminate_run", terminated.append)
    result = data(client.delete(f"/api/batch/jobs/{job['id']}"))
    assert terminated == ["run-1"] and result["terminated_run_ids"] == ["run-1"]
    assert result["termination_error"] is None
    assert (result["job"]["status"], result["job"]["dagster_run_id"]) == ("cancelled", "run-1")
    # The run's own code ends later: it cannot mark the job completed.
    assert not BatchJobs(state.session_factory).complete(job["id"])
    assert data(client.get(f"/api/batch/jobs/{job['id']}"))["status"] == "cancelled"
    error(client.delete(f"/api/batch/jobs/{job['id']}"), 409, "BATCH_JOB_FINISHED")


def test_cancel_while_dagster_is_down_still_cancels(client, monkeypatch):
    state = client.app.state
    job = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
    BatchJobs(state.session_factory).start(job["id"], "run-9")

    def down(run_id):
        raise DagsterUnavailable("Dagster webserver is not reachable")

    monkeypatch.setattr(state.dagster, "runs_tagged", lambda key, value: [])
    monkeypatch.setattr(state.dagster, "terminate_run", down)
    response = client.delete(f"/api/batch/jobs/{job['id']}")
    result = data(response)
    assert result["job"]["status"] == "cancelled" and "not reachable" in result["termination_error"]
    assert "could not be reached" in response.json()["message"]


# ---------------------------------------------------------------------- the registry


def test_every_job_type_runs_as_a_dagster_job(settings):
    from orchestration.batch_runs import BATCH_JOB_RUNS, batch_target_jobs
    from orchestration.definitions import defs
    from orchestration.sensors import batch_job_sensor, run_request_for

    assert set(BATCH_JOB_RUNS) == set(BatchJobType)
    defined = {job.name for job in defs.get_repository_def().get_all_jobs()}
    targets = {job.name for job in batch_target_jobs()}
    assert targets <= defined
    assert {target.job_name for target in batch_job_sensor.targets} == targets
    for params, job_name in ((StorageCleanup(), "storage_cleanup_job"), (LogArchive(), "log_archive_job")):
        request, key = run_request_for(7, params)
        assert (request.job_name, request.tags, request.run_key, key) == (
            job_name,
            {BATCH_JOB_TAG: "7"},
            "batch-job-7",
            None,
        )


def test_the_sensor_launches_a_cleanup_and_an_archive(client, settings):
    from orchestration.sensors import batch_job_sensor
    from tests.dagster_helpers import ephemeral_instance, tick

    cleanup = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
    archive = data(client.post("/api/batch/trigger", json={"job_type": "log_archive"}))
    with ephemeral_instance() as instance:
        result, _ = tick(batch_job_sensor, settings, instance)
    assert {(r.job_name, r.tags[BATCH_JOB_TAG]) for r in result.run_requests} == {
        ("storage_cleanup_job", str(cleanup["id"])),
        ("log_archive_job", str(archive["id"])),
    }


# ---------------------------------------------------------------------- the log archive


def _logs(session_factory, ages_days: list[float]) -> list[int]:
    with session_factory.begin() as session:
        rows = [
            SystemLog(
                level="WARNING",
                component="camera",
                message=f"log {i} ({age} days old)",
                details={"i": i, "text": "ünïcode"},
                created_at=NOW - timedelta(days=age),
            )
            for i, age in enumerate(ages_days)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _remaining(session_factory) -> list[int]:
    with session_factory() as session:
        return list(session.scalars(sa.select(SystemLog.id).order_by(SystemLog.id)))


def test_the_archive_writes_old_logs_then_deletes_exactly_those(client):
    state = client.app.state
    ids = _logs(state.session_factory, [40, 31, 29, 45, 0, 35, 100, 1])
    old = [ids[i] for i in (0, 1, 3, 5, 6)]
    seen: list[tuple[int, int]] = []
    service = LogArchiveService(state.session_factory, state.object_store, rows_per_object=2, read_batch=1)
    report = service.archive(max_days=30, now=NOW, progress=lambda done, total: seen.append((done, total)))

    assert report.rows_archived == 5 and len(report.object_keys) == 3  # 2 + 2 + 1 rows
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert _remaining(state.session_factory) == [ids[i] for i in (2, 4, 7)]
    archived = []
    for key in report.object_keys:
        assert key.startswith(f"{SYSTEM_LOG_ARCHIVE_PREFIX}{NOW:%Y/%m/%d}/") and key.endswith(".jsonl.gz")
        archived += read_archive(state.object_store.get_bytes(key))
    assert [record["id"] for record in archived] == old
    assert archived[0]["message"] == "log 0 (40 days old)" and archived[0]["details"] == {"i": 0, "text": "ünïcode"}
    assert archived[0]["level"] == "WARNING" and archived[0]["created_at"].endswith("Z")
    assert report.bytes_written == sum(state.object_store.stat(k).size for k in report.object_keys)
    # Nothing old is left: a second run archives nothing and writes no object.
    again = service.archive(max_days=30, now=NOW)
    assert again.rows_archived == 0 and again.object_keys == []


def test_a_failed_upload_deletes_nothing(client, monkeypatch):
    state = client.app.state
    ids = _logs(state.session_factory, [40, 50])

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(state.object_store, "put_bytes", refuse)
    with pytest.raises(OSError):
        LogArchiveService(state.session_factory, state.object_store).archive(max_days=30)
    assert _remaining(state.session_factory) == ids


def test_the_api_log_cleanup_archives_before_it_deletes(client):
    """POST /api/system/cleanup {"type": "logs"} takes the nightly clean-up's path: old system_logs
    reach the object store (gzip JSON lines) before they go; old status logs are deleted too."""
    state = client.app.state
    state.settings_service.update("storage", {"max_days": 30})
    ids = _logs(state.session_factory, [40, 31, 29, 1])
    with state.session_factory.begin() as session:
        session.add(SystemStatusLog(component="camera", status="running", logged_at=NOW - timedelta(days=45)))
    report = data(client.post("/api/system/cleanup", json={"type": "logs"}))
    assert report["logs_archived"] == 2 and report["logs_deleted"] == 3  # two logs + one status row
    [key] = report["archive_keys"]
    assert key.startswith(SYSTEM_LOG_ARCHIVE_PREFIX)
    assert [r["id"] for r in read_archive(state.object_store.get_bytes(key))] == ids[:2]
    assert set(ids[2:]) <= set(_remaining(state.session_factory)) and not set(ids[:2]) & set(
        _remaining(state.session_factory)
    )


def test_the_api_log_cleanup_with_the_store_down_deletes_nothing(client, monkeypatch):
    from detection_service.storage import StorageUnavailable

    state = client.app.state
    state.settings_service.update("storage", {"max_days": 30})
    ids = _logs(state.session_factory, [40, 50, 1])
    with state.session_factory.begin() as session:
        session.add(SystemStatusLog(component="camera", status="running", logged_at=NOW - timedelta(days=45)))

    def down(*args, **kwargs):
        raise StorageUnavailable("connection refused")

    monkeypatch.setattr(state.object_store, "put_bytes", down)
    failed = error(client.post("/api/system/cleanup", json={"type": "logs"}), 503, "LOG_ARCHIVE_FAILED")
    assert failed["details"]["rows_archived"] == 0 and "connection refused" in failed["message"]
    assert set(ids) <= set(_remaining(state.session_factory))  # not one unarchived log deleted
    with state.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count(SystemStatusLog.id))) >= 1
    monkeypatch.undo()  # the store is back: the same request archives and deletes
    report = data(client.post("/api/system/cleanup", json={"type": "logs"}))
    assert report["logs_archived"] == 2 and not set(ids[:2]) & set(_remaining(state.session_factory))


def test_the_archive_job_records_metadata_and_its_batch_job(client, settings):
    from assets.system import system_log_archive
    from orchestration.resources import resources_from_settings
    from tests.dagster_helpers import ephemeral_instance

    state = client.app.state
    state.settings_service.update("storage", {"max_days": 7})
    _logs(state.session_factory, [8, 9, 1])
    job = data(client.post("/api/batch/trigger", json={"job_type": "log_archive"}))
    with ephemeral_instance() as instance:
        result = dg.materialize(
            [system_log_archive],
            resources=resources_from_settings(settings),
            instance=instance,
            tags={BATCH_JOB_TAG: str(job["id"])},
        )
    assert result.success
    [materialization] = result.asset_materializations_for_node("system_log_archive")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["rows_archived"] == 2 and metadata["retention_days"] == 7
    assert state.object_store.stat(metadata["object_key"]).size == metadata["bytes"] > 0
    done = data(client.get(f"/api/batch/jobs/{job['id']}"))
    assert (done["status"], done["progress_percentage"], done["dagster_run_id"]) == ("completed", 100, result.run_id)
    assert done["result"]["rows_archived"] == 2 and done["result"]["object_keys"] == [metadata["object_key"]]
    assert len(_remaining(state.session_factory)) == 1


def test_a_cleanup_job_runs_when_asked_and_archives_logs_first(client, settings):
    """A storage_cleanup batch job runs even with auto_cleanup off (that switch is for the
    nightly run), and the logs it would delete reach the archive first."""
    from orchestration.jobs import storage_cleanup_job
    from orchestration.resources import resources_from_settings
    from tests.dagster_helpers import ephemeral_instance

    state = client.app.state
    state.settings_service.update("storage", {"max_days": 7, "auto_cleanup": False})
    _logs(state.session_factory, [8, 1])
    job = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
    with ephemeral_instance() as instance:
        result = storage_cleanup_job.execute_in_process(
            resources=resources_from_settings(settings), instance=instance, tags={BATCH_JOB_TAG: str(job["id"])}
        )
    assert result.success
    done = data(client.get(f"/api/batch/jobs/{job['id']}"))
    assert done["status"] == "completed" and done["result"]["logs_archived"] == 1
    assert len(list(state.object_store.list(SYSTEM_LOG_ARCHIVE_PREFIX))) == 1
    assert len(_remaining(state.session_factory)) == 1


def test_a_cancelled_job_does_not_run(client, settings):
    from assets.system import system_log_archive
    from orchestration.resources import resources_from_settings
    from tests.dagster_helpers import ephemeral_instance

    state = client.app.state
    ids = _logs(state.session_factory, [100])
    job = data(client.post("/api/batch/trigger", json={"job_type": "log_archive"}))
    data(client.delete(f"/api/batch/jobs/{job['id']}"))
    with ephemeral_instance() as instance:
        result = dg.materialize(
            [system_log_archive],
            resources=resources_from_settings(settings),
            instance=instance,
            tags={BATCH_JOB_TAG: str(job["id"])},
            raise_on_error=False,
        )
    assert not result.success
    assert _remaining(state.session_factory) == ids
    assert data(client.get(f"/api/batch/jobs/{job['id']}"))["status"] == "cancelled"


def test_a_run_cancelled_in_the_dagster_ui_cancels_its_job(client, settings):
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.dagster_run import DagsterRun

    from assets.resources import DatabaseResource
    from orchestration.sensors import batch_job_canceled_sensor
    from tests.dagster_helpers import ephemeral_instance

    state = client.app.state
    job = data(client.post("/api/batch/trigger", json={"job_type": "storage_cleanup"}))
    BatchJobs(state.session_factory).start(job["id"], "run-ui")
    with ephemeral_instance() as instance:
        run = instance.add_run(
            DagsterRun(
                job_name="storage_cleanup_job",
                run_id="run-ui",
                status=dg.DagsterRunStatus.CANCELED,
                tags={BATCH_JOB_TAG: str(job["id"])},
            )
        )
        event = DagsterEvent(DagsterEventType.RUN_CANCELED.value, job_name="storage_cleanup_job")
        with dg.build_run_status_sensor_context(
            sensor_name=batch_job_canceled_sensor.name,
            dagster_event=event,
            dagster_instance=instance,
            dagster_run=run,
            resources={"database": DatabaseResource(url=settings.database_url)},
        ) as context:
            batch_job_canceled_sensor(context)
    closed = data(client.get(f"/api/batch/jobs/{job['id']}"))
    assert (closed["status"], closed["error_message"]) == ("cancelled", "its Dagster run was terminated")
