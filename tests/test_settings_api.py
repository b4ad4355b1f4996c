"""PUT /api/settings: the whole settings object (any subset of categories), all of it or nothing."""

from __future__ import annotations

from tests.test_app import assert_error


def _everything(client) -> dict:
    response = client.get("/api/settings")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_put_all_changes_several_categories_in_one_call(client):
    response = client.put(
        "/api/settings",
        json={
            "camera": {"fps": 20, "resolution": "640x480"},
            "storage": {"max_days": 7},
            "detection": {"capture_count": 3},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert set(body["data"]) == {"camera", "storage", "detection"}
    everything = _everything(client)
    assert everything["camera"]["fps"] == 20 and everything["camera"]["resolution"] == "640x480"
    assert everything["storage"]["max_days"] == 7
    assert everything["detection"]["capture_count"] == 3
    # Keys not named keep their values.
    assert everything["storage"]["auto_cleanup"] is True


def test_put_all_with_one_invalid_field_changes_nothing(client):
    before = _everything(client)
    body = assert_error(
        client.put(
            "/api/settings",
            json={"camera": {"fps": 30}, "storage": {"max_days": 5}, "detection": {"confidence_threshold": 3.0}},
        ),
        400,
        "INVALID_SETTINGS",
    )
    assert "detection" in body["error"]["message"]
    assert [problem["category"] for problem in body["error"]["details"]] == ["detection"]
    assert _everything(client) == before  # every category read back: the valid ones were not stored either


def test_put_all_lists_every_problem_of_every_category(client):
    before = _everything(client)
    body = assert_error(
        client.put("/api/settings", json={"camera": {"fps": 500, "colour": "red"}, "storage": {"max_days": -1}}),
        400,
        "INVALID_SETTINGS",
    )
    categories = sorted({problem["category"] for problem in body["error"]["details"]})
    assert categories == ["camera", "storage"]
    assert _everything(client) == before


def test_put_all_refuses_unknown_categories_and_empty_or_odd_bodies(client):
    before = _everything(client)
    body = assert_error(
        client.put("/api/settings", json={"camera": {"fps": 20}, "colours": {}}), 400, "INVALID_SETTINGS"
    )
    assert body["error"]["details"][0]["category"] == "colours"
    assert_error(client.put("/api/settings", json={}), 400, "INVALID_SETTINGS")
    assert_error(client.put("/api/settings", json={"camera": 5}), 400, "INVALID_SETTINGS")
    assert_error(client.put("/api/settings", json=[1, 2]), 400, "VALIDATION_ERROR")
    assert _everything(client) == before


def test_put_all_tells_the_live_parts(client):
    # The pipeline subscribes to the `pipeline` and `detection` categories: a change through the
    # whole-object PUT reaches it like a change through the category PUT.
    response = client.put(
        "/api/settings", json={"detection": {"confidence_threshold": 0.65}, "pipeline": {"confirm_hits": 4}}
    )
    assert response.status_code == 200, response.text
    config = client.get("/api/detection/config").json()["data"]
    assert abs(config["detection"]["confidence_threshold"] - 0.65) < 1e-9
    assert config["pipeline"]["confirm_hits"] == 4
