"""Process settings, read once from ``AIDOOR_*`` environment variables.

These are deployment facts (where the database and the object store live, which ports to bind).
User-tunable product settings (camera, detection, storage retention, notifications) live in the
``system_settings`` table and are validated by the structs in ``schemas.settings``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

ENV_PREFIX = "AIDOOR_"


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str
    # Object store: S3-compatible (MinIO, SeaweedFS, AWS) when s3_endpoint is set, else a
    # directory under data_dir.
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "ai-door-system"
    s3_region: str | None = None
    s3_secure: bool = False
    # Absolute URL under which this service is reachable from a browser; used for links in
    # alerts and for signed image URLs of the local store.
    public_url: str
    # HMAC key for signed URLs of the local store. Generated and kept in data_dir when unset.
    url_signing_key: str | None = None
    dagster_host: str = "127.0.0.1"
    dagster_port: int = 3000
    dagster_home: Path
    max_upload_mb: int = 20
    # How long an image link handed out by the Event/Detection APIs stays valid.
    image_url_ttl_s: int = 3600
    log_level: str = "INFO"
    # Telegram alerts (docs/notifications.md). Bot tokens are Fernet-encrypted with this key
    # (AIDOOR_TELEGRAM_KEY), else with the key in telegram_key_file (default <data dir>/telegram.key).
    telegram_key: str | None = None
    telegram_key_file: Path | None = None
    telegram_api_url: str = "https://api.telegram.org"  # tests point it at a fake Bot API
    telegram_updates: str = "auto"  # auto | polling | webhook | off (button presses)
    public_url_set: bool = False  # AIDOOR_PUBLIC_URL given explicitly: alerts link to events
    alert_timezone: str = "Asia/Seoul"

    @property
    def telegram_key_path(self) -> Path:
        return self.telegram_key_file or self.data_dir / "telegram.key"

    @property
    def object_store_kind(self) -> str:
        return "s3" if self.s3_endpoint else "local"

    @property
    def local_store_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def dagster_url(self) -> str:
        return f"http://{self.dagster_host}:{self.dagster_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else default

        data_dir = Path(str(overrides.pop("data_dir", None) or get("DATA_DIR", "./data"))).resolve()
        host = get("HOST", "127.0.0.1")
        port = _int(get("PORT", "8000"), "PORT")
        values: dict[str, object] = {
            "data_dir": data_dir,
            "host": host,
            "port": port,
            "database_url": get("DATABASE_URL") or f"sqlite:///{data_dir / 'aidoor.db'}",
            "s3_endpoint": get("S3_ENDPOINT"),
            "s3_access_key": get("S3_ACCESS_KEY"),
            "s3_secret_key": get("S3_SECRET_KEY"),
            "s3_bucket": get("S3_BUCKET", "ai-door-system"),
            "s3_region": get("S3_REGION"),
            "s3_secure": _bool(get("S3_SECURE", "false"), "S3_SECURE"),
            "public_url": (get("PUBLIC_URL") or f"http://{_url_host(host)}:{port}").rstrip("/"),
            "url_signing_key": get("URL_SIGNING_KEY"),
            "dagster_host": get("DAGSTER_HOST", "127.0.0.1"),
            "dagster_port": _int(get("DAGSTER_PORT", "3000"), "DAGSTER_PORT"),
            "dagster_home": Path(env.get("DAGSTER_HOME") or data_dir / "dagster").resolve(),
            "max_upload_mb": _int(get("MAX_UPLOAD_MB", "20"), "MAX_UPLOAD_MB"),
            "image_url_ttl_s": _int(get("IMAGE_URL_TTL_S", "3600"), "IMAGE_URL_TTL_S"),
            "log_level": str(get("LOG_LEVEL", "INFO")).upper(),
            "telegram_key": get("TELEGRAM_KEY"),
            "telegram_key_file": Path(str(get("TELEGRAM_KEY_FILE"))).resolve() if get("TELEGRAM_KEY_FILE") else None,
            "telegram_api_url": str(get("TELEGRAM_API_URL", "https://api.telegram.org")).rstrip("/"),
            "telegram_updates": str(get("TELEGRAM_UPDATES", "auto")).lower(),
            "public_url_set": get("PUBLIC_URL") is not None,
            "alert_timezone": str(get("ALERT_TIMEZONE", "Asia/Seoul")),
        }
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.telegram_updates not in ("auto", "polling", "webhook", "off"):
            raise ConfigError("AIDOOR_TELEGRAM_UPDATES must be auto, polling, webhook or off")
        if settings.s3_endpoint and not (settings.s3_access_key and settings.s3_secret_key):
            raise ConfigError("AIDOOR_S3_ENDPOINT is set but AIDOOR_S3_ACCESS_KEY / AIDOOR_S3_SECRET_KEY are not")
        if not 1 <= settings.image_url_ttl_s <= 7 * 86400:
            raise ConfigError("AIDOOR_IMAGE_URL_TTL_S must be between 1 and 604800 (7 days, S3's limit)")
        return settings

    def signing_key(self) -> bytes:
        """The HMAC key for local signed URLs; created once and kept in the data dir."""
        if self.url_signing_key:
            return self.url_signing_key.encode()
        key_file = self.data_dir / "url-signing.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        return key_file.read_text().strip().encode()


def _int(value: str | None, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be an integer, got {value!r}") from None


def _bool(value: str | None, name: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name} must be true or false, got {value!r}")


def _url_host(host: str) -> str:
    # A wildcard bind address is not something a browser can open.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
