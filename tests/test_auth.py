"""Authentication and the route guard (docs/security.md): every operation of the OpenAPI document
needs credentials but health and login; viewers cannot write; users cannot do admin work; cookie
sessions need the CSRF header on writes; tokens are revocable; logins are rate-limited; the audit
column of a relabel names the user; the camera ingest takes camera tokens; signed links and the
Telegram webhook keep their own checks."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime

import msgspec
import pytest
from litestar.testing import TestClient

from detection_service.app import create_app
from detection_service.config import ConfigError, Settings
from schemas.db import DetectionEvent
from tests.conftest import api_token
from tests.test_events_api import add_event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PASSWORD = "correct-horse-battery"
# Operations that answer without credentials (docs/security.md); the signed object route checks
# its signature instead, so it answers 4xx but never 401.
PUBLIC_OPERATIONS = {("GET", "/api/system/health"), ("POST", "/api/auth/login")}
SIGNED_OPERATIONS = {("GET", "/api/storage/objects/{key}")}
ADMIN_WRITES = {
    ("PUT", "/api/settings"),
    ("PUT", "/api/settings/{category}"),
    ("POST", "/api/system/restart"),
    ("POST", "/api/system/cleanup"),
    ("POST", "/api/models/{model_ref}/deploy"),
    ("POST", "/api/auth/tokens"),
    ("DELETE", "/api/auth/tokens/{token_id}"),
    ("POST", "/api/auth/users"),
}


@pytest.fixture
def app_client(settings):
    """The service with no credentials set on the client."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _operations(client: TestClient) -> list[tuple[str, str]]:
    document = client.get("/schema/openapi.json", headers=_bearer(api_token(client.app))).json()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _concrete(path: str) -> str:
    # Any value: the guard answers before the parameters are even parsed.
    return re.sub(r"\{[^}]+\}", "1", path)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    body = response.json()
    assert body["success"] is False and body["error"]["code"] and body["timestamp"]
    if code:
        assert body["error"]["code"] == code, body
    return body


def _login(client: TestClient, username: str, password: str) -> dict:
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_without_credentials_every_operation_but_health_and_login_is_401(app_client):
    operations = _operations(app_client)
    assert len(operations) > 60 and ("GET", "/api/events") in operations
    for method, path in operations:
        response = app_client.request(method, _concrete(path))
        if (method, path) in PUBLIC_OPERATIONS:
            assert response.status_code != 401, (method, path)
        elif (method, path) in SIGNED_OPERATIONS:
            assert response.status_code in (400, 403), (method, path, response.text)
        else:
            _assert_error(response, 401, "UNAUTHORIZED")
    # Outside the document: the metrics, the viewer page, the schema itself, the camera ingest.
    for path in ("/metrics", "/api/stream/viewer", "/schema/openapi.json", "/api/live/events"):
        _assert_error(app_client.get(path), 401, "UNAUTHORIZED")
    # A made-up or malformed token is no better than none.
    _assert_error(app_client.get("/api/events", headers=_bearer("aidoor_made-up")), 401)
    _assert_error(app_client.get("/api/events", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}), 401)
    # The dashboard's shell, its assets and the login page are served to anyone.
    for path in ("/", "/login", "/web/app.js", "/web/login.js", "/api/system/health"):
        assert app_client.get(path).status_code == 200, path


def test_viewer_token_reads_but_every_write_is_403(app_client):
    headers = _bearer(api_token(app_client.app, "viewer"))
    operations = _operations(app_client)
    writes = [(m, p) for m, p in operations if m != "GET" and (m, p) not in PUBLIC_OPERATIONS]
    assert len(writes) > 25
    for method, path in writes:
        _assert_error(app_client.request(method, _concrete(path), headers=headers), 403, "FORBIDDEN")
    assert app_client.get("/api/events", headers=headers).status_code == 200
    assert app_client.get("/api/settings", headers=headers).status_code == 200
    # Admin-only reads stay closed to a viewer.
    _assert_error(app_client.get("/api/auth/tokens", headers=headers), 403)
    me = app_client.get("/api/auth/me", headers=headers).json()["data"]
    assert me["role"] == "viewer" and me["via"] == "token" and me["csrf_token"] is None


def test_user_token_operates_but_admin_work_is_403(app_client):
    headers = _bearer(api_token(app_client.app, "user"))
    operations = set(_operations(app_client))
    assert operations >= ADMIN_WRITES
    for method, path in sorted(ADMIN_WRITES):
        _assert_error(app_client.request(method, _concrete(path), headers=headers), 403, "FORBIDDEN")
    # A user may operate: change detection knobs (validated as usual past the guard).
    response = app_client.put("/api/detection/config", json={"confirm_hits": 2}, headers=headers)
    assert response.status_code == 200, response.text
    # A camera token may push frames only.
    camera = _bearer(api_token(app_client.app, "camera"))
    _assert_error(app_client.get("/api/events", headers=camera), 403)


def test_session_login_cookie_csrf_and_logout(app_client):
    app_client.app.state.auth_service.create_user("alice", PASSWORD, "user")
    response = app_client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "aidoor_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    csrf = response.json()["data"]["csrf_token"]
    me = app_client.get("/api/auth/me").json()["data"]
    assert me["name"] == "alice" and me["via"] == "session" and me["csrf_token"] == csrf
    # A write with the cookie alone (what a cross-site form would send) is refused and changes nothing.
    before = app_client.get("/api/detection/config").json()["data"]["pipeline"]["confirm_hits"]
    changed = 5 if before != 5 else 4
    _assert_error(app_client.put("/api/detection/config", json={"confirm_hits": changed}), 403)
    _assert_error(
        app_client.put("/api/detection/config", json={"confirm_hits": changed}, headers={"X-CSRF-Token": "x"}), 403
    )
    assert app_client.get("/api/detection/config").json()["data"]["pipeline"]["confirm_hits"] == before
    response = app_client.put("/api/detection/config", json={"confirm_hits": changed}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    # Logout ends the session on the server: the old cookie no longer works.
    old_cookie = app_client.cookies.get("aidoor_session")
    assert app_client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    _assert_error(app_client.get("/api/events", cookies={"aidoor_session": old_cookie}), 401)
    # Bad credentials: 401 in the envelope, the same for an unknown account.
    _assert_error(app_client.post("/api/auth/login", json={"username": "alice", "password": "wrong-one-1"}), 401)
    _assert_error(app_client.post("/api/auth/login", json={"username": "nobody", "password": PASSWORD}), 401)


def test_login_is_rate_limited_per_account_and_per_address(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.auth_service.create_user("bob", PASSWORD, "viewer")
        for _ in range(5):
            _assert_error(client.post("/api/auth/login", json={"username": "bob", "password": "wrong-pass-1"}), 401)
        # Locked out: even the right password now answers 429 with when to try again.
        body = _assert_error(
            client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD}),
            429,
            "TOO_MANY_LOGIN_ATTEMPTS",
        )
        assert 0 < body["error"]["details"]["retry_after_s"] <= 15 * 60
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # a fresh limiter
        client.app.state.auth_service.create_user("carol", PASSWORD, "viewer")
        for i in range(5):  # one address trying many accounts
            _assert_error(client.post("/api/auth/login", json={"username": f"u{i}", "password": "wrong-pass-1"}), 401)
        _assert_error(client.post("/api/auth/login", json={"username": "carol", "password": PASSWORD}), 429)


def test_tokens_are_shown_once_hashed_revocable_and_record_last_use(client, app_client):
    created = client.post("/api/auth/tokens", json={"role": "viewer", "name": "grafana"})
    assert created.status_code == 201, created.text
    new = created.json()["data"]
    token, info = new["token"], new["info"]
    assert token.startswith("aidoor_") and info["role"] == "viewer" and token.startswith(info["prefix"])
    listed = client.get("/api/auth/tokens").json()["data"]
    assert token not in str(listed)  # never shown again
    with client.app.state.session_factory() as session:
        from schemas.db import ApiToken

        stored = session.get(ApiToken, info["id"])
        assert stored.token_hash != token and len(stored.token_hash) == 64
    # app_client is a second app on the same database: the token works there too.
    assert app_client.get("/api/events", headers=_bearer(token)).status_code == 200
    assert client.get("/api/events", headers=_bearer(token)).status_code == 200
    used = next(t for t in client.get("/api/auth/tokens").json()["data"] if t["id"] == info["id"])
    assert used["last_used_at"] is not None and used["revoked_at"] is None
    revoked = client.delete(f"/api/auth/tokens/{info['id']}")
    assert revoked.status_code == 200 and revoked.json()["data"]["revoked_at"]
    _assert_error(client.get("/api/events", headers=_bearer(token)), 401)  # at once on this service
    _assert_error(client.delete("/api/auth/tokens/999999"), 404, "TOKEN_NOT_FOUND")
    _assert_error(client.post("/api/auth/tokens", json={"role": "root"}), 400)


def test_relabel_names_the_user_in_the_audit_columns(app_client):
    state = app_client.app.state
    user = state.auth_service.create_user("dora", PASSWORD, "user")
    event_id = add_event(state, "unclassified", NOW, images=1)
    csrf = _login(app_client, "dora", PASSWORD)["csrf_token"]
    response = app_client.put(
        f"/api/detections/{event_id}/classify", json={"type": "package"}, headers={"X-CSRF-Token": csrf}
    )
    assert response.status_code == 200, response.text
    with state.session_factory() as session:
        event = session.get(DetectionEvent, event_id)
        assert event.reclassified_by == user.id and event.updated_by == "dora"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_first_start_admin_gets_a_one_time_password_that_must_be_changed(settings):
    records = _Records()
    logger = logging.getLogger("detection_service.app")
    logger.addHandler(records)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            text = "\n".join(records.lines)
            found = re.search(r"one-time password\s+(\S+)", text)
            assert found and "/login" in text, text
            password = found.group(1)
            me = _login(client, "admin", password)
            assert me["role"] == "admin" and me["password_change_required"] is True
            _assert_error(client.get("/api/events"), 403)  # nothing else until it is changed
            headers = {"X-CSRF-Token": me["csrf_token"]}
            other_cookie, _ = client.app.state.auth_service.login("admin", password, "elsewhere")
            change = {"current_password": password, "new_password": "short"}
            _assert_error(client.post("/api/auth/password", json=change), 403)  # no CSRF header
            _assert_error(client.post("/api/auth/password", json=change, headers=headers), 400, "WEAK_PASSWORD")
            change["new_password"] = PASSWORD
            changed = client.post("/api/auth/password", json=change, headers=headers)
            assert changed.status_code == 200, changed.text
            assert client.get("/api/events").status_code == 200
            # The account's other session ended with the change; this one goes on.
            assert client.app.state.auth_service.session_principal(other_cookie) is None
        # A second start prints no password: the account exists.
        records.lines.clear()
        with TestClient(create_app(settings), raise_server_exceptions=False):
            assert not any("one-time password" in line for line in records.lines)
    finally:
        logger.removeHandler(records)


def test_auth_off_only_on_loopback(settings):
    with pytest.raises(ConfigError, match="AIDOOR_AUTH=off"):
        Settings.from_env(environ={"AIDOOR_AUTH": "off", "AIDOOR_HOST": "0.0.0.0"}, data_dir=settings.data_dir)
    with pytest.raises(ConfigError, match="AIDOOR_AUTH=off"):
        create_app(msgspec.structs.replace(settings, auth="off", host="192.168.0.10"))
    assert not Settings.from_env(environ={"AIDOOR_AUTH": "off"}, data_dir=settings.data_dir).auth_enabled
    with TestClient(create_app(msgspec.structs.replace(settings, auth="off")), raise_server_exceptions=False) as c:
        assert c.get("/api/events").status_code == 200
        assert c.get("/api/auth/me").json()["data"]["via"] == "off"
        # Another site's form post through the developer's browser is refused all the same.
        cross = c.put("/api/detection/config", json={"confirm_hits": 2}, headers={"Sec-Fetch-Site": "cross-site"})
        _assert_error(cross, 403, "FORBIDDEN")
        assert c.put("/api/detection/config", json={"confirm_hits": 2}).status_code == 200


def test_camera_ingest_takes_camera_tokens_only(app_client):

    def opened(headers: dict[str, str]) -> bool:
        try:
            with app_client.websocket_connect("/api/stream/ingest", headers=headers) as socket:
                socket.receive_json()  # ready, or "source is not push": either way it was let in
                return True
        except Exception:
            return False

    assert not opened({})
    assert not opened(_bearer(api_token(app_client.app, "viewer")))
    assert opened(_bearer(api_token(app_client.app, "camera")))
    assert opened(_bearer(api_token(app_client.app, "user")))


def test_signed_links_and_the_telegram_webhook_keep_their_own_checks(app_client):
    state = app_client.app.state
    event_id = add_event(state, "package", NOW, images=1)
    images = app_client.get(f"/api/events/{event_id}/images", headers=_bearer(api_token(app_client.app))).json()
    url = images["data"][0]["url"]
    path = url.split("://", 1)[1].split("/", 1)[1]
    assert app_client.get("/" + path).status_code == 200  # the signature alone opens it
    _assert_error(app_client.get("/" + path.replace("signature=", "signature=0")), 403)
    # Telegram's webhook needs no session, but its secret-token header.
    hook = "/api/notifications/telegram/webhook/123"
    _assert_error(app_client.post(hook, json={"update_id": 1}), 403, "FORBIDDEN")
    wrong = {"X-Telegram-Bot-Api-Secret-Token": "wrong"}
    _assert_error(app_client.post(hook, json={"update_id": 1}, headers=wrong), 403, "FORBIDDEN")


def test_cli_creates_users_and_tokens_that_the_service_accepts(settings, monkeypatch, capsys):
    import io

    from detection_service.cli import main as cli_main

    monkeypatch.setenv("AIDOOR_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AIDOOR_DATABASE_URL", settings.database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli_main(["user", "create", "--username", "erin", "--role", "admin", "--password-stdin"]) == 0
    assert cli_main(["token", "create", "--role", "viewer", "--name", "script"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("aidoor_")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/api/events", headers=_bearer(token)).status_code == 200
        assert _login(client, "erin", PASSWORD)["role"] == "admin"
        token_id = next(t.id for t in client.app.state.auth_service.tokens() if t.name == "script")
        assert cli_main(["token", "revoke", str(token_id)]) == 0
        time.sleep(5.2)  # another process revoked it: this one notices within its 5 s cache
        _assert_error(client.get("/api/events", headers=_bearer(token)), 401)
    with pytest.raises(SystemExit):
        cli_main(["token", "create", "--role", "root"])


def test_audit_columns_of_settings_and_data_yaml_name_the_caller(app_client):
    """created_by / updated_by / changed_by are filled from the request's principal where the code
    left them unset (database.current_actor): INTEGER columns get users.id, VARCHAR ones the name."""
    import sqlalchemy as sa

    from schemas.db import SystemSetting

    state = app_client.app.state
    user = state.auth_service.create_user("frank", PASSWORD, "admin")
    csrf = _login(app_client, "frank", PASSWORD)["csrf_token"]
    response = app_client.put("/api/settings/camera", json={"fps": 12}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    with state.session_factory() as session:
        row = session.scalar(
            sa.select(SystemSetting).where(SystemSetting.category == "camera", SystemSetting.setting_key == "fps")
        )
        assert row.updated_by == user.id
    # Rows written outside a request (the pipeline, Dagster, the CLI) keep what the code wrote.
    event_id = add_event(state, "person", NOW, images=1)
    with state.session_factory() as session:
        assert session.get(DetectionEvent, event_id).created_by is None


def test_credentials_that_cannot_be_checked_answer_503_not_500(app_client):
    from detection_service.database import make_engine, make_session_factory
    from tests.conftest import free_port

    service = app_client.app.state.auth_service
    token = api_token(app_client.app, "viewer")
    # The database becomes unreachable (nothing listens on that port).
    unreachable = make_engine(f"mysql+pymysql://root@127.0.0.1:{free_port()}/gone?connect_timeout=2")
    real = service.session_factory
    service.session_factory = make_session_factory(unreachable)
    try:
        _assert_error(app_client.get("/api/events", headers=_bearer(token + "x")), 503, "AUTH_UNAVAILABLE")
        assert app_client.get("/api/system/health").status_code in (200, 503)  # still answers, no credentials
    finally:
        service.session_factory = real
        unreachable.dispose()
    assert app_client.get("/api/events", headers=_bearer(token)).status_code == 200
