"""The HTTP surface: envelope on every answer, errors included; OpenAPI; health."""

from __future__ import annotations

from litestar import get

from detection_service.app import create_app
from tests.conftest import AuthedTestClient as TestClient  # sends an admin token


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "timestamp" in body
    return body


def test_unknown_route_is_404_envelope(client):
    body = assert_error(client.get("/api/does-not-exist"), 404, "NOT_FOUND")
    assert body["error"]["details"] == {"path": "/api/does-not-exist"}


def test_wrong_method_is_405_envelope(client):
    assert_error(client.delete("/api/system/health"), 405, "METHOD_NOT_ALLOWED")


def test_malformed_json_is_400_with_details(client):
    response = client.put("/api/settings/camera", content=b'{"fps": 30,', headers={"content-type": "application/json"})
    body = assert_error(response, 400, "MALFORMED_BODY")
    assert (
        "malformed" in body["error"]["details"]["reason"].lower()
        or "truncated" in body["error"]["details"]["reason"].lower()
    )


def test_out_of_range_setting_is_400_and_changes_nothing(client):
    before = client.get("/api/settings/camera").json()["data"]
    body = assert_error(client.put("/api/settings/camera", json={"fps": 500}), 400, "INVALID_SETTINGS")
    assert "fps" in body["error"]["message"]
    assert_error(client.put("/api/settings/camera", json={"fps": 20, "colour": "red"}), 400, "INVALID_SETTINGS")
    assert client.get("/api/settings/camera").json()["data"] == before


def test_setting_change_is_stored(client):
    response = client.put("/api/settings/camera", json={"fps": 25, "resolution": "640x480"})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    camera = client.get("/api/settings/camera").json()["data"]
    assert camera["fps"] == 25 and camera["resolution"] == "640x480"
    assert client.get("/api/settings").json()["data"]["camera"] == camera
    assert_error(client.get("/api/settings/nope"), 404, "NOT_FOUND")


def test_too_large_body_is_413_envelope(settings):
    import msgspec

    small = msgspec.structs.replace(settings, max_upload_mb=1)
    with TestClient(create_app(small)) as client:
        response = client.put(
            "/api/settings/camera",
            content=b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_unhandled_error_is_500_without_stack_trace(settings):
    @get("/api/test/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app = create_app(settings)
    app.register(boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/test/boom")
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert body["error"]["details"] is None


def test_openapi_document_is_served(client):
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/system/health" in paths and "/api/settings/{category}" in paths


def test_health_checks_each_component_honestly(client, settings):
    response = client.get("/api/system/health")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["timestamp"]
    report = body["data"]
    components = report["components"]
    assert components["database"]["status"] == "ok"
    assert components["storage"]["status"] == "ok"
    # Nothing listens on the configured Dagster port in this test.
    assert components["dagster"]["status"] == "down"
    assert str(settings.dagster_port) in components["dagster"]["target"]
    assert report["status"] == "degraded"
