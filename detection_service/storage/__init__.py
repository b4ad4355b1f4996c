"""Object storage: one interface (``ObjectStore``), a local-directory and an S3 backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from detection_service.storage.base import (
    DEFAULT_CONTENT_TYPE,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    guess_content_type,
    validate_bucket,
    validate_key,
)
from detection_service.storage.local import LocalObjectStore
from detection_service.storage.s3 import S3ObjectStore

if TYPE_CHECKING:
    from detection_service.config import Settings

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "InvalidKey",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailable",
    "guess_content_type",
    "make_object_store",
    "validate_bucket",
    "validate_key",
]


def make_object_store(settings: Settings) -> ObjectStore:
    """S3 when ``s3_endpoint`` is set, else a directory under the data dir. No I/O for S3; the
    local backend may create its signing key file. Call ensure_bucket() before use."""
    if settings.s3_endpoint:
        return S3ObjectStore(
            settings.s3_endpoint,
            settings.s3_access_key or "",
            settings.s3_secret_key or "",
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    return LocalObjectStore(settings.local_store_dir, settings.s3_bucket, settings.public_url, settings.signing_key())
