"""GET /api/system/storage (served from the storage_usage snapshot) and POST /api/system/cleanup type temp."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg

from assets.system import storage_usage
from detection_service.database import make_engine, make_session_factory
from detection_service.services.retention import RetentionService
from detection_service.services.settings import SettingsService
from detection_service.storage import make_object_store
from orchestration.resources import resources_from_settings
from schemas.db import BatchJob, Model, ModelTraining
from tests.test_app import assert_error


def _data(response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


def test_storage_says_when_there_is_no_snapshot_then_serves_the_assets(client, settings):
    report = _data(client.get("/api/system/storage"))
    assert report["object_store"] is None and "no object store snapshot" in report["message"]
    database = report["database"]
    assert database["dialect"] in ("sqlite", "mysql", "mariadb") and database["bytes"] > 0
    disk = report["disk"]
    assert disk["path"] == str(settings.data_dir) and 0 < disk["free_bytes"] <= disk["total_bytes"]

    store = client.app.state.object_store
    store.put_bytes("events/2026/11/29/1/1.jpg", b"x" * 1000, "image/jpeg")
    store.put_bytes("models/m1/best.pt", b"y" * 500)
    store.put_bytes("exports/odd.bin", b"z" * 7)
    result = dg.materialize(
        [storage_usage], resources=resources_from_settings(settings), instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    report = _data(client.get("/api/system/storage"))
    snapshot = report["object_store"]
    assert snapshot["objects"] == 3 and snapshot["bytes"] == 1507
    assert snapshot["by_prefix"]["events"] == {"objects": 1, "bytes": 1000}
    assert snapshot["by_prefix"]["models"] == {"objects": 1, "bytes": 500}
    assert snapshot["by_prefix"]["datasets"] == {"objects": 0, "bytes": 0}
    assert snapshot["by_prefix"]["reports"] == {"objects": 0, "bytes": 0}
    assert snapshot["by_prefix"]["exports"] == {"objects": 1, "bytes": 7}
    assert 0 <= snapshot["age_s"] < 120 and snapshot["taken_at"]
    assert "s ago" in report["message"]


# -- temp clean-up ----------------------------------------------------------------------------

OLD = time.time() - 3 * 86400  # three days
ANCIENT = time.time() - 60 * 86400


def _tree(root: Path, files: dict[str, bytes], mtime: float | None = None) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if mtime is not None:
        for folder, dirs, names in os.walk(root):
            for name in (*dirs, *names):
                os.utime(os.path.join(folder, name), (mtime, mtime))
        os.utime(root, (mtime, mtime))
    return root


def test_temp_cleanup_deletes_stale_and_keeps_live(settings):
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    retention = RetentionService(session_factory, make_object_store(settings), SettingsService(session_factory))
    data_dir = settings.data_dir
    try:
        with session_factory.begin() as session:
            session.add(
                BatchJob(job_type="model_retrain", job_name="retrain", status="running", dagster_run_id="run-live")
            )
            session.add(
                BatchJob(job_type="dataset_update", job_name="update", status="completed", dagster_run_id="run-done")
            )
            session.add(ModelTraining(job_name="t", job_type="train", status="running", dagster_run_id="run-train"))
            session.add(
                Model(
                    model_id="champion",
                    model_name="c",
                    model_path="models/champion/best.pt",
                    version="1",
                    is_current=True,
                    status="deployed",
                )
            )
        _tree(data_dir / "work" / "train-run-live", {"weights/last.pt": b"w" * 10}, OLD)  # running job
        _tree(data_dir / "work" / "train-run-train", {"data/x.txt": b"1"}, OLD)  # running training
        _tree(data_dir / "work" / "dataset-run-done", {"export/a.jpg": b"a" * 100}, OLD)  # finished: stale
        _tree(data_dir / "work" / "collect-run-new", {"a.jpg": b"a"})  # written just now
        _tree(data_dir / "tmp" / "dataset-imports" / "upload-old", {"export.zip": b"z" * 50}, OLD)
        _tree(data_dir / "tmp" / "dataset-imports" / "upload-new", {"export.zip": b"z"})
        _tree(data_dir / "cache" / "models" / "m2" / "best.exports" / "640-abc" / ".staging-x", {"model.pt": b"s"}, OLD)
        _tree(data_dir / "cache" / "models" / "champion", {"best.pt": b"c" * 20}, ANCIENT)  # deployed
        _tree(data_dir / "cache" / "models" / "old-model", {"best.pt": b"o" * 30}, ANCIENT)
        _tree(data_dir / "cache" / "datasets" / "packages" / "v1", {"data.yaml": b"d"}, ANCIENT)

        report = retention.cleanup_temp(data_dir, older_than=timedelta(hours=24), cache_max_age=timedelta(days=30))
        gone = set(report.deleted_paths)
        assert gone == {
            "work/dataset-run-done",
            "tmp/dataset-imports/upload-old",
            "cache/models/m2/best.exports/640-abc/.staging-x",
        }
        assert report.kept_paths["work/train-run-live"] == "work dir of a running job"
        assert report.kept_paths["work/train-run-train"] == "work dir of a running job"
        assert report.kept_paths["work/collect-run-new"].startswith("changed within")
        assert report.kept_paths["tmp/dataset-imports/upload-new"].startswith("changed within")
        # A job is running: no cache goes (it may be reading one).
        assert report.kept_paths["cache/models/old-model"].startswith("a job is running")
        assert report.temp_deleted == 3 and report.bytes_freed == 100 + 50 + 1
        for rel in gone:
            assert not (data_dir / rel).exists()
        for rel in ("work/train-run-live/weights/last.pt", "work/collect-run-new/a.jpg", "cache/models/m2"):
            assert (data_dir / rel).exists()

        with session_factory.begin() as session:  # the jobs end
            for job in session.query(BatchJob).all():
                job.status = "completed"
            for training in session.query(ModelTraining).all():
                training.status = "completed"
        report = retention.cleanup_temp(data_dir, older_than=timedelta(hours=24), cache_max_age=timedelta(days=30))
        assert set(report.deleted_paths) == {
            "work/train-run-live",
            "work/train-run-train",
            "cache/models/old-model",
            "cache/datasets/packages/v1",
        }
        assert report.kept_paths["cache/models/champion"] == "cache of the deployed model"
        assert (data_dir / "cache" / "models" / "champion" / "best.pt").exists()
        assert (data_dir / "cache" / "models" / "m2").exists()  # not stale: its staging went a moment ago
    finally:
        engine.dispose()


def test_temp_cleanup_through_the_api(client, settings):
    stale = _tree(settings.data_dir / "tmp" / "dataset-imports" / "upload-1", {"export.zip": b"z" * 5}, OLD)
    fresh = _tree(settings.data_dir / "work" / "train-someone", {"x": b"1"})
    report = _data(client.post("/api/system/cleanup", json={"type": "temp", "older_than_hours": 1}))
    assert report["type"] == "temp" and report["temp_deleted"] == 1 and report["bytes_freed"] == 5
    assert not stale.exists() and fresh.exists()
    assert report["kept_paths"] == {"work/train-someone": "changed within 1 h"}
    assert_error(
        client.post("/api/system/cleanup", json={"type": "temp", "older_than_hours": 0}), 400, "VALIDATION_ERROR"
    )
    assert_error(client.post("/api/system/cleanup", json={"type": "everything"}), 400, "VALIDATION_ERROR")
