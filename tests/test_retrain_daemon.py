"""Retraining on new labels with a real Dagster daemon (issue #9's acceptance): `aidoor run` (the
service, dagster-webserver, dagster-daemon) is up, a champion is deployed, the training settings
and retrain_min_new_labels relabels arrive through the REST API, and the daemon alone does the
rest: `retrain_on_new_labels_sensor` queues one auto-collect + retrain, `batch_job_sensor`
launches `collection_job` then `dataset_to_model_job`, and the challenger, fine-tuned from the
champion, is evaluated with it on the fixed evaluation set and deployed only if the gate passes.
tests/test_retrain.py drives the same chain in-process (and the rejection of a worse challenger)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from detection_service.bench.retrain import frame_event
from detection_service.datasets.evaluation_set import EVALUATION_SET_ID
from detection_service.datasets.importer import import_dataset
from schemas.db import Model, ObjectType
from tests.conftest import SHARED_DATASETS, free_port, start_aidoor_run
from tests.dagster_helpers import ephemeral_instance
from tests.test_batch_e2e import _wait, data
from tests.test_dagster_e2e import _diagnostics
from tests.test_evaluation import _subset
from tests.test_retrain import TRAIN, _materialize, _train_config

DOORBELL = SHARED_DATASETS / "doorbell-camera-alert-v4"
pytestmark = pytest.mark.skipif(not DOORBELL.is_dir(), reason=f"shared dataset missing: {DOORBELL}")

LABELS = 4  # retrain_min_new_labels: the relabels that trigger the retrain
_ENDED = ("SUCCESS", "FAILURE", "CANCELED")
RUNS = "query { runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"
TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { ticks(limit: 50) { status timestamp skipReason } } }
  }
}"""
RETRAIN_SENSOR = {
    "repositoryLocationName": "ai_door_system",  # workspace.yaml
    "repositoryName": "__repository__",  # a code location's dg.Definitions
    "sensorName": "retrain_on_new_labels_sensor",
}


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=30).json()
    assert "errors" not in body, body
    return body["data"]


def _runs(url: str) -> list[dict]:
    """Every run of the daemon's instance, oldest first."""
    try:
        return list(reversed(_graphql(url, RUNS)["runsOrError"]["results"]))
    except httpx.HTTPError:  # the webserver is still starting
        return []


def _ticks(url: str) -> list[dict]:
    """The retrain sensor's ticks, oldest first."""
    sensor = _graphql(url, TICKS, {"selector": RETRAIN_SENSOR})["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return sorted(sensor["sensorState"]["ticks"], key=lambda tick: tick["timestamp"])


# Dagster start-up, a tiny champion, up to one sensor interval (60 s), a collection run and a
# tiny fine-tune with two evaluations: 142-174 s measured on the 2-core machine; bounded loops
# (180 + 120 + 420 + 75 s at most), above the suite-wide 300 s timeout.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_daemon_retrains_once_on_new_labels_and_deploys_only_a_better_challenger(client, settings, tmp_path: Path):
    state = client.app.state
    train_stems = [p.stem for p in sorted((DOORBELL / "train" / "images").iterdir())[:16]]
    valid_stems = [p.stem for p in sorted((DOORBELL / "valid" / "images").iterdir())[:6]]
    export = _subset(DOORBELL, tmp_path / "door", train_stems, valid_stems, ["Box"])
    import_dataset(state.session_factory, state.object_store, export, "doorbell")

    # Dagster on the port this test's service talks to; no demo video (its detector would take
    # the CPU the trainings need).
    log_path = tmp_path / "run.log"
    proc = start_aidoor_run(
        settings.data_dir,
        settings.database_url,
        free_port(),
        settings.dagster_port,
        log_path,
        AIDOOR_DEMO_VIDEO="off",
    )
    graphql = f"{settings.dagster_url}/graphql"
    try:
        # The champion, trained and deployed while Dagster starts (in this process, its own
        # ephemeral instance: the daemon sees only the retrain's runs). Fine-tuning needs .pt
        # weights, which a model trained here has.
        with ephemeral_instance() as instance:
            assert _materialize(TRAIN, "doorbell@v1", settings, instance, _train_config(epochs=1)).success
        champion = data(client.get("/api/models/current"))
        assert champion["weights_path"].endswith(".pt")

        # Four real doorbell frames the champion never saw, recorded as unclassified events with
        # the box a detector would have drawn.
        frames = sorted((DOORBELL / "valid" / "images").iterdir())[100 : 100 + LABELS]
        ids = []
        with state.session_factory.begin() as session:
            unclassified = session.scalar(sa.select(ObjectType.id).where(ObjectType.code == "unclassified"))
            for n, frame in enumerate(frames):
                event = frame_event(state.object_store, frame, f"events/daemon/{n}.jpg", object_type_id=unclassified)
                session.add(event)
                session.flush()
                ids.append(event.id)

        # As a user would: the settings, then the relabels.
        _wait("the daemon's Dagster webserver", lambda: _graphql_up(graphql), 180, log_path, proc)
        training = data(
            client.put("/api/settings/training", json={"retrain_min_new_labels": LABELS, "profile": "tiny"})
        )
        assert (training["retrain_min_new_labels"], training["profile"], training["auto_retrain"]) == (
            LABELS,
            "tiny",
            True,
        )
        for event_id in ids:
            assert (
                data(client.put(f"/api/detections/{event_id}/classify", json={"type": "package"}))["type"] == "package"
            )
        progress = data(client.get("/api/models/retrain/status"))
        assert progress["new_verified_labels"] == LABELS, progress

        # The sensor ticks every 60 s: one interval and the collection run's launch at most.
        collect = _wait(
            "the retrain sensor's collection run",
            lambda: [r for r in _runs(graphql) if r["jobName"] == "collection_job"],
            120,
            log_path,
            proc,
        )
        assert len(collect) == 1, collect

        def retrain_ended():
            runs = [r for r in _runs(graphql) if r["jobName"] == "dataset_to_model_job"]
            return runs if runs and all(r["status"] in _ENDED for r in runs) else None

        retrain = _wait("the retrain run to end", retrain_ended, 420, log_path, proc)
        runs = _runs(graphql)
        # One retrain: the collection and the one training it queued, nothing else.
        assert [r["jobName"] for r in runs] == ["collection_job", "dataset_to_model_job"], runs
        assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], f"{runs}\n{_diagnostics(log_path)}"
        [retrain] = retrain

        # The sensor queued once; a tick after that (the labels collected) did not queue again.
        def ticked_after_queueing():
            ticks = _ticks(graphql)
            queued = [n for n, t in enumerate(ticks) if (t["skipReason"] or "").startswith("queued")]
            return ticks if queued and queued[-1] < len(ticks) - 1 else None

        ticks = _wait("a retrain sensor tick after the one that queued", ticked_after_queueing, 75, log_path, proc)
        assert [t["skipReason"] for t in ticks if (t["skipReason"] or "").startswith("queued")] == [
            f"queued auto-collect + retrain for {LABELS} new verified labels"
        ]
        assert data(client.get("/api/models/retrain/status"))["new_verified_labels"] == 0

        # The challenger: trained by that run, fine-tuned from the champion on base + collected data.
        versions = data(client.get("/api/models/versions"))
        assert len(versions) == 2, versions
        challenger = next(v for v in versions if v["model_id"] != champion["model_id"])
        assert challenger["training_params"]["model"].endswith(f"models/{champion['model_id']}/best.pt")
        with state.session_factory() as session:
            stored = session.scalar(sa.select(Model.metrics).where(Model.model_id == challenger["model_id"]))
            champion_metrics = session.scalar(sa.select(Model.metrics).where(Model.model_id == champion["model_id"]))
        assert stored["dagster_run_id"] == retrain["runId"]
        assert stored["base_model_id"] == champion["model_id"]
        lineage = {(e["ref"], e["role"]) for e in stored["lineage"]}
        assert {("auto-collected@v1", "collected"), ("doorbell@v1", "human")} <= lineage

        # The verdict, through the Model API: both models on the same fixed evaluation-set version.
        gate = data(client.get(f"/api/models/{challenger['model_id']}/info"))["gate"]
        assert gate["champion_id"] == champion["model_id"] and gate["split"].startswith(f"{EVALUATION_SET_ID}@")
        assert gate["challenger"] and gate["champion"], gate
        assert {c["name"] for c in gate["per_class"]} == {"package"}
        assert gate["split"] in stored["evaluations"] and gate["split"] in champion_metrics["evaluations"]
        # The deployed model follows the verdict (tiny models usually tie at mAP 0: rejected, but
        # the gate may go either way).
        current = data(client.get("/api/models/current"))["model_id"]
        assert current == (challenger["model_id"] if gate["passed"] else champion["model_id"]), gate
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _graphql_up(url: str) -> bool:
    try:
        return httpx.post(url, json={"query": "{ version }"}, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
