"""Process settings, read once from ``AIDOOR_*`` environment variables.

These are deployment facts (where the database and the object store live, which ports to bind).
User-tunable product settings (camera, detection, storage retention, notifications) live in the
``system_settings`` table and are validated by the structs in ``schemas.settings``.

This module is the only reader of ``AIDOOR_*`` variables in ``detection_service`` (enforced by
``tests/test_env_reader.py``): every other module gets a ``Settings`` (Litestar app state, the
Dagster ``settings`` resource, the CLI). ``AIDOOR_<FIELD>`` sets the field of that name; values
are stripped, an empty value counts as unset, and ``msgspec.convert`` parses them.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

ENV_PREFIX = "AIDOOR_"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
DEFAULT_TEACHER_MODEL = SHARED_DIR / "models" / "yolov8n_coco_int8_openvino_model"
DEFAULT_BOOTSTRAP_EXPORTS = (
    SHARED_DIR / "datasets" / "doorbell-camera-alert-v4",
    SHARED_DIR / "datasets" / "person-capston2-v11",
)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str  # default sqlite:///<data dir>/aidoor.db
    # Object store: S3-compatible (MinIO, SeaweedFS, AWS) when s3_endpoint is set, else a
    # directory under data_dir.
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "ai-door-system"
    s3_region: str | None = None
    s3_secure: bool = False
    # Absolute URL under which this service is reachable from a browser; used for links in
    # alerts and for signed image URLs of the local store. Default http://<host>:<port>.
    public_url: str
    # HMAC key for signed URLs of the local store. Generated and kept in data_dir when unset.
    url_signing_key: str | None = None
    dagster_host: str = "127.0.0.1"
    dagster_port: int = 3000
    dagster_home: Path  # DAGSTER_HOME (Dagster's own name), default <data dir>/dagster
    max_upload_mb: int = 20
    # How long an image link handed out by the Event/Detection APIs stays valid.
    image_url_ttl_s: int = 3600
    log_level: str = "INFO"
    # The event writer's local journal (<data dir>/journal, docs/pipeline.md "Journal"): its bound in MiB.
    journal_max_mb: int = 256
    # Telegram alerts (docs/notifications.md). Bot tokens are Fernet-encrypted with this key
    # (AIDOOR_TELEGRAM_KEY), else with the key in telegram_key_file (default <data dir>/telegram.key).
    telegram_key: str | None = None
    telegram_key_file: Path | None = None
    telegram_api_url: str = "https://api.telegram.org"  # tests point it at a fake Bot API
    telegram_updates: str = "auto"  # auto | polling | webhook | off (button presses)
    public_url_set: bool = False  # AIDOOR_PUBLIC_URL given explicitly: alerts link to events
    alert_timezone: str = "Asia/Seoul"
    # The demo video played while no camera is set (docs/pipeline.md "Service wiring"): "" plays
    # <data dir>/demo/door-demo.mp4 if it exists, "auto" (`aidoor run`) builds it first when
    # missing, "off" never, anything else is the path of a video to play.
    demo_video: str = ""
    # Benchmarks and tests only (`aidoor bench faults`): the path of a demo video whose sidecar is
    # the ground truth; the detector then answers that truth instead of running a model
    # (pipeline/truth_detector.py). None: models as usual.
    truth_detector: Path | None = None
    # Folders a dataset import by ``source_path`` may read (os.pathsep-separated); empty: the
    # default <data dir>/imports (``import_dirs``).
    dataset_import_dirs: tuple[Path, ...] = ()
    # Exports the starter model is trained on (':'-separated, the first the main one; the others
    # are left out when not there): the doorbell parcels + person photos in ../shared/datasets.
    bootstrap_dataset: tuple[Path, ...] = DEFAULT_BOOTSTRAP_EXPORTS
    # The teacher model (labels the classes a dataset lacks); None = AIDOOR_TEACHER_MODEL=off
    # (or none, 0): no teacher labels. Used only when it exists (ml.teacher.teacher_model_path).
    teacher_model: Path | None = DEFAULT_TEACHER_MODEL
    # Roboflow sync (docs/datasets.md): workspace slug and private API key (both needed), API
    # address (None: the SDK's https://api.roboflow.com) and the download's time limit.
    roboflow_workspace: str | None = None
    roboflow_api_key: str | None = None
    roboflow_api_url: str | None = None
    roboflow_timeout_s: float = 1800.0
    # Scratch database of `aidoor bench api` (dropped and re-created!); None: the bench's default.
    bench_database_url: str | None = None
    # Authentication (docs/security.md): "on", or "off" for local development only, which the
    # service refuses unless it is bound to a loopback address (check_auth_bind).
    auth: str = "on"
    session_ttl_h: int = 168  # a dashboard login lasts this many hours
    # The API token `aidoor camera` sends to the WebSocket ingest (a `camera` token).
    camera_token: str | None = None
    # MQTT / Home Assistant (docs/mqtt.md): mqtt[s]://user:pass@host:port/<topic prefix>; None: off.
    mqtt_url: str | None = None
    mqtt_topic_prefix: str = ""  # empty: the URL's path, else "aidoor"
    mqtt_discovery_prefix: str = "homeassistant"  # Home Assistant's discovery prefix; "off": none
    mqtt_client_id: str | None = None  # default aidoor-<node>
    # The live link between the API and `aidoor detect` workers (docs/deployment.md): an MQTT broker
    # mqtt[s]://user:pass@host:port/<topic prefix>. None: the pipeline runs inside the API process.
    live_broker_url: str | None = None
    live_timeout_s: float = 5.0  # how long the API waits for a detector's answer (then 504)

    def __repr__(self) -> str:  # logs and tracebacks must not show the secrets
        shown = (
            f"{name}={'***' if name in _SECRETS and value else repr(value)}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"Settings({', '.join(shown)})"

    @property
    def telegram_key_path(self) -> Path:
        return self.telegram_key_file or self.data_dir / "telegram.key"

    @property
    def import_dirs(self) -> tuple[Path, ...]:
        return self.dataset_import_dirs or ((self.data_dir / "imports").resolve(),)

    @property
    def object_store_kind(self) -> str:
        return "s3" if self.s3_endpoint else "local"

    @property
    def mqtt(self) -> MqttBroker | None:
        """The parsed AIDOOR_MQTT_URL (checked by ``from_env``), or None when MQTT is off."""
        return parse_mqtt_url(self.mqtt_url, self.mqtt_topic_prefix) if self.mqtt_url else None

    @property
    def live_broker(self) -> MqttBroker | None:
        """The parsed AIDOOR_LIVE_BROKER_URL, or None: no live link, the pipeline runs in the API."""
        if not self.live_broker_url:
            return None
        return parse_mqtt_url(self.live_broker_url, "", variable="AIDOOR_LIVE_BROKER_URL")

    @property
    def local_store_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def dagster_url(self) -> str:
        return f"http://{self.dagster_host}:{self.dagster_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); ``overrides`` (typed values) win.
        Raises ConfigError naming the variable when a value cannot be used."""
        env = os.environ if environ is None else environ
        raw = _env_values(env)
        env_data_dir = raw.pop("data_dir", "./data")
        data_dir = Path(str(overrides.pop("data_dir", None) or env_data_dir)).resolve()
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{data_dir / 'aidoor.db'}",
            "public_url": "",  # derived below from the parsed host and port
            **raw,
            "data_dir": data_dir,
            "dagster_home": Path(env.get("DAGSTER_HOME") or data_dir / "dagster").resolve(),
        }
        try:
            settings = msgspec.convert(values, cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise _config_error(exc, raw) from None
        settings = msgspec.structs.replace(
            settings,
            public_url=(raw.get("public_url") or f"http://{_url_host(settings.host)}:{settings.port}").rstrip("/"),
            public_url_set="public_url" in raw,
            log_level=settings.log_level.upper(),
            telegram_key_file=settings.telegram_key_file.resolve() if settings.telegram_key_file else None,
            telegram_api_url=settings.telegram_api_url.rstrip("/"),
            telegram_updates=settings.telegram_updates.lower(),
            auth=settings.auth.strip().lower(),
            dataset_import_dirs=tuple(p.expanduser().resolve() for p in settings.dataset_import_dirs),
            **overrides,  # type: ignore[arg-type]
        )
        if settings.telegram_updates not in ("auto", "polling", "webhook", "off"):
            raise ConfigError("AIDOOR_TELEGRAM_UPDATES must be auto, polling, webhook or off")
        if settings.s3_endpoint and not (settings.s3_access_key and settings.s3_secret_key):
            raise ConfigError("AIDOOR_S3_ENDPOINT is set but AIDOOR_S3_ACCESS_KEY / AIDOOR_S3_SECRET_KEY are not")
        if not 1 <= settings.journal_max_mb <= 1024 * 1024:
            raise ConfigError("AIDOOR_JOURNAL_MAX_MB must be between 1 and 1048576")
        if not 1 <= settings.image_url_ttl_s <= 7 * 86400:
            raise ConfigError("AIDOOR_IMAGE_URL_TTL_S must be between 1 and 604800 (7 days, S3's limit)")
        if not settings.roboflow_timeout_s > 0:
            raise ConfigError("AIDOOR_ROBOFLOW_TIMEOUT_S must be a positive number of seconds")
        if settings.auth not in ("on", "off"):
            raise ConfigError("AIDOOR_AUTH must be on or off")
        if not 1 <= settings.session_ttl_h <= 24 * 90:
            raise ConfigError("AIDOOR_SESSION_TTL_H must be between 1 and 2160 hours")
        settings.check_auth_bind(settings.host)
        if settings.mqtt_url:  # a bad AIDOOR_MQTT_URL fails here, at start
            parse_mqtt_url(settings.mqtt_url, settings.mqtt_topic_prefix)
        if settings.live_broker_url:
            parse_mqtt_url(settings.live_broker_url, "", variable="AIDOOR_LIVE_BROKER_URL")
        if not 0.1 <= settings.live_timeout_s <= 300:
            raise ConfigError("AIDOOR_LIVE_TIMEOUT_S must be between 0.1 and 300 seconds")
        return settings

    @property
    def auth_enabled(self) -> bool:
        return self.auth != "off"

    def check_auth_bind(self, host: str) -> None:
        """AIDOOR_AUTH=off is for local development: refuse it on anything but a loopback address."""
        if not self.auth_enabled and host not in LOOPBACK_HOSTS:
            raise ConfigError(
                f"AIDOOR_AUTH=off is allowed only while bound to 127.0.0.1 (the bind address is {host!r}); "
                "turn authentication on or bind to 127.0.0.1"
            )

    @property
    def signing_key_file(self) -> Path:
        """Where the local store's URL-signing key is kept when AIDOOR_URL_SIGNING_KEY is unset."""
        return self.data_dir / "url-signing.key"

    def signing_key(self) -> bytes:
        """The HMAC key for local signed URLs; created once and kept in the data dir."""
        if self.url_signing_key:
            return self.url_signing_key.encode()
        return load_signing_key(self.signing_key_file)


class MqttBroker(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    topic_prefix: str

    def __repr__(self) -> str:
        return (
            f"MqttBroker({self.host}:{self.port}, tls={self.tls}, user={self.username!r}, prefix={self.topic_prefix!r})"
        )


def parse_mqtt_url(url: str, topic_prefix: str = "", variable: str = "AIDOOR_MQTT_URL") -> MqttBroker:
    """``mqtt://user:pass@host:1883/prefix`` (``mqtts://`` for TLS, default port 8883)."""
    parts = urlsplit(url)
    # A raw '?' or '#' (percent-encode them in a password) would silently cut the URL short.
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or "?" in url or "#" in url:
        raise ConfigError(f"{variable} must look like mqtt://user:password@host:1883/aidoor (or mqtts://)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"{variable} has an invalid port") from None
    prefix = (topic_prefix or parts.path).strip().strip("/") or "aidoor"
    if any(c in prefix for c in "#+") or "//" in prefix:
        raise ConfigError("the MQTT topic prefix must not contain '#', '+' or empty levels")
    return MqttBroker(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        topic_prefix=prefix,
    )


def load_signing_key(key_file: Path) -> bytes:
    """The URL-signing key kept in ``key_file``, created (random, mode 0600) when missing. The
    service and the Dagster code location may both create it: the first link wins, atomically."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        draft = key_file.with_name(f".{key_file.name}.{secrets.token_hex(4)}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(draft, key_file)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem: a plain rename
            if not key_file.exists():
                os.replace(draft, key_file)
        finally:
            draft.unlink(missing_ok=True)
    return key_file.read_text().strip().encode()


# Fields that no AIDOOR_* variable sets: derived from others (public_url_set) or read under
# another name (DAGSTER_HOME).
_NOT_FROM_ENV = frozenset({"dagster_home", "public_url_set"})
# List-valued variables and their separators.
_SEPARATORS = {"bootstrap_dataset": ":", "dataset_import_dirs": os.pathsep}
# Spellings of true/false accepted beyond msgspec's own (true/false/1/0).
_BOOL_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}
_BOOL_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Settings) if f.type is bool) - _NOT_FROM_ENV
_SECRETS = frozenset(
    {
        "s3_secret_key",
        "url_signing_key",
        "telegram_key",
        "roboflow_api_key",
        "camera_token",
        "mqtt_url",
        "live_broker_url",
    }
)
_DISABLED = ("off", "none", "0")  # AIDOOR_TEACHER_MODEL values that turn the teacher off
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """The AIDOOR_* variables that are set, by field name, as strings (lists split)."""
    raw: dict[str, Any] = {}
    for field in Settings.__struct_fields__:
        value = (env.get(ENV_PREFIX + field.upper()) or "").strip()
        if field in _NOT_FROM_ENV or not value:
            continue
        if field in _SEPARATORS:
            raw[field] = [p.strip() for p in value.split(_SEPARATORS[field]) if p.strip()]
        elif field in _BOOL_FIELDS:
            raw[field] = _BOOL_WORDS.get(value.lower(), value)
        elif field == "teacher_model" and value.lower() in _DISABLED:
            raw[field] = None
        else:
            raw[field] = value
    return raw


def _decode(type_: type, value: Any) -> Any:
    if type_ is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError


def _config_error(exc: msgspec.ValidationError, raw: Mapping[str, Any]) -> ConfigError:
    """``Expected `int`, got `str` - at `$.port``` -> ``AIDOOR_PORT must be an integer, got 'x'``."""
    match = re.search(r"Expected `([^`]+)`.* - at `\$\.(\w+)", str(exc))
    if match is None:
        return ConfigError(f"invalid {ENV_PREFIX}* setting: {exc}")
    expected, field = match.groups()
    return ConfigError(
        f"{ENV_PREFIX}{field.upper()} must be {_EXPECTED.get(expected, expected)}, got {raw.get(field)!r}"
    )


def _url_host(host: str) -> str:
    # A wildcard bind address is not something a browser can open.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
