"""GET /api/models/retrain/status: the verified labels toward the next automatic retraining. It is
the retrain sensor's own count (detection_service/services/retrain_progress.py): it moves with
relabels, the sensor fires exactly when it reaches retrain_min_new_labels, and the queued
auto-collection starts the count again."""

from __future__ import annotations

import time

import dagster as dg

from detection_service.services.settings import SettingsService
from orchestration.sensors import retrain_on_new_labels_sensor
from tests.conftest import api_token
from tests.dagster_helpers import ephemeral_instance, tick
from tests.test_events_api import NOW, add_event, data


def _status(client, viewer: str) -> dict:
    return data(client.get("/api/models/retrain/status", headers={"Authorization": f"Bearer {viewer}"}))


def _relabel(client, event_id: int, type_code: str = "package") -> None:
    data(client.put(f"/api/detections/{event_id}/classify", json={"type": type_code, "verified": True}))


def test_count_moves_with_relabels_and_matches_the_sensor(client, settings):
    state = client.app.state
    SettingsService(state.session_factory).update("training", {"retrain_min_new_labels": 2})
    events = [add_event(state, "unclassified", NOW, images=1) for _ in range(3)]
    viewer = api_token(client.app, "viewer")  # a reader may see it

    status = _status(client, viewer)
    assert status == {
        "new_verified_labels": 0,
        "retrain_min_new_labels": 2,
        "auto_retrain": True,
        "since": None,
        "queued": False,
    }

    with ephemeral_instance() as instance:
        _relabel(client, events[0])
        assert _status(client, viewer)["new_verified_labels"] == 1
        below, _ = tick(retrain_on_new_labels_sensor, settings, instance)
        assert isinstance(below, dg.SkipReason) and "1 new verified labels, retraining at 2" in str(below)

        # Relabelling the same event again (no change) does not count twice.
        _relabel(client, events[0])
        assert _status(client, viewer)["new_verified_labels"] == 1

        _relabel(client, events[1], "mail")
        assert _status(client, viewer)["new_verified_labels"] == 2
        fired, _ = tick(retrain_on_new_labels_sensor, settings, instance)
        assert "queued auto-collect + retrain for 2 new verified labels" in str(fired)

        # The queued auto-collection took those labels: the count starts again, and shows the queue.
        status = _status(client, viewer)
        assert status["new_verified_labels"] == 0 and status["queued"] is True and status["since"] is not None
        again, _ = tick(retrain_on_new_labels_sensor, settings, instance)
        assert "queued" not in str(again) and "0 new verified labels" in str(again)

        time.sleep(1.1)  # times are whole seconds: a relabel in the queueing second counts for neither
        _relabel(client, events[2])
        assert _status(client, viewer)["new_verified_labels"] == 1
        below, _ = tick(retrain_on_new_labels_sensor, settings, instance)
        assert "1 new verified labels" in str(below)


def test_sensor_off_still_reports_the_count(client):
    state = client.app.state
    SettingsService(state.session_factory).update("training", {"auto_retrain": False})
    _relabel(client, add_event(state, "unclassified", NOW, images=1), "person")
    status = data(client.get("/api/models/retrain/status"))
    assert status["new_verified_labels"] == 1 and status["auto_retrain"] is False
    assert status["retrain_min_new_labels"] == 50
