"""How the code location configures the resources (the classes are assets/resources.py).

``resources_from_settings`` builds them from the same ``Settings`` the service reads. With
``secrets_from_env=True`` (the code location, orchestration/definitions.py; `aidoor bootstrap-model`)
every secret is a ``dg.EnvVar`` naming its ``AIDOOR_*`` variable, so the Dagster UI shows the name,
never the value; tests and benches pass explicit values (the default). This module is the one place
that names those variables for Dagster.
"""

from typing import Any

import dagster as dg

from assets.resources import DatabaseResource, LocalPathsResource, ObjectStoreResource
from detection_service.config import Settings

# The resource classes, re-exported for callers of their old home (detection_service/bench/retrain.py).
__all__ = ["SECRET_ENV", "DatabaseResource", "LocalPathsResource", "ObjectStoreResource", "resources_from_settings"]

# The Settings fields resources get as dg.EnvVar in the code location, and their variables. The
# other secrets (telegram_key, roboflow_api_key) reach assets only inside the plain ``settings``
# resource, which has no config: nothing of it is shown in the UI.
SECRET_ENV = {
    "s3_access_key": "AIDOOR_S3_ACCESS_KEY",
    "s3_secret_key": "AIDOOR_S3_SECRET_KEY",
    "url_signing_key": "AIDOOR_URL_SIGNING_KEY",
}


def _secret(settings: Settings, field: str, from_env: bool) -> str | dg.EnvVar | None:
    value = getattr(settings, field)
    return dg.EnvVar(SECRET_ENV[field]) if from_env and value else value


def resources_from_settings(settings: Settings, *, secrets_from_env: bool = False) -> dict[str, Any]:
    """Resources configured from ``settings``. ``secrets_from_env``: secrets as ``dg.EnvVar`` (the
    variables must then be set in the process's environment, as they are where ``settings`` came
    from ``Settings.from_env()``). The local store's key is the key file under the data dir unless
    AIDOOR_URL_SIGNING_KEY is set. ``settings`` is the ``Settings`` itself (a plain resource, no
    config in the UI) for the assets that need other deployment facts (the teacher model, Roboflow
    credentials): ``settings: dg.ResourceParam[Settings]``."""
    if settings.s3_endpoint:
        store = ObjectStoreResource(
            bucket=settings.s3_bucket,
            endpoint=settings.s3_endpoint,
            access_key=_secret(settings, "s3_access_key", secrets_from_env),
            secret_key=_secret(settings, "s3_secret_key", secrets_from_env),
            region=settings.s3_region,
            secure=settings.s3_secure,
            public_url=settings.public_url,
        )
    else:
        store = ObjectStoreResource(
            bucket=settings.s3_bucket,
            local_dir=str(settings.local_store_dir),
            public_url=settings.public_url,
            signing_key=_secret(settings, "url_signing_key", secrets_from_env),
            signing_key_file=str(settings.signing_key_file),
        )
    return {
        "database": DatabaseResource(url=settings.database_url),
        "object_store": store,
        "paths": LocalPathsResource(data_dir=str(settings.data_dir)),
        "settings": settings,
    }
