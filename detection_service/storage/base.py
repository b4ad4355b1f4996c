"""The object-store interface shared by the local-directory and the S3 backend.

Public methods validate keys here, before a backend sees them, so both backends accept exactly
the same keys and a bad key never causes any I/O. Backends implement the ``_``-prefixed methods.
"""

from __future__ import annotations

import mimetypes
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from detection_service.errors import Unavailable

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024  # the S3 limit
# S3's presigned URLs accept 1 s .. 7 days; the local backend keeps the same range.
MIN_URL_EXPIRY = timedelta(seconds=1)
MAX_URL_EXPIRY = timedelta(days=7)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class StorageError(Exception):
    """An object-store operation failed."""


class StorageUnavailable(StorageError, Unavailable):
    """The store cannot be used: unreachable, bucket missing, or credentials refused."""

    code = "STORAGE_UNAVAILABLE"


class StorageAuthError(StorageUnavailable):
    """The store refused our credentials (wrong key or secret, or access denied)."""


class ObjectNotFound(StorageError):
    """No object under that key."""


class InvalidKey(StorageError, ValueError):
    """The key (or prefix) is not acceptable; raised before any I/O."""


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    last_modified: datetime
    # None from list(): neither backend fetches content types while listing; use stat().
    content_type: str | None = None


# C0 and C1 control characters and DEL (one regex: keys are checked on every URL handed out).
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a safe object key, else raise InvalidKey.

    Rules: non-empty, at most 1024 bytes of UTF-8, no leading "/", no backslash, no control
    characters, no empty, "." or ".." segments. A prefix may be empty and may end with "/".
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, got {type(key).__name__}")
    if prefix and key == "":
        return key
    if not key:
        raise InvalidKey("key must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey("key is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"key is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    if _CONTROL_RE.search(key):
        raise InvalidKey(f"key contains a control character: {key!r}")
    if "\\" in key:
        raise InvalidKey(f"key contains a backslash: {key!r}")
    if key.startswith("/"):
        raise InvalidKey(f"key must not start with '/': {key!r}")
    segments = key.split("/")
    if prefix and key.endswith("/"):
        segments.pop()
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidKey(f"key has an empty, '.' or '..' segment: {key!r}")
    return key


def validate_bucket(bucket: str) -> str:
    # The common subset of S3 bucket rules; the local backend uses the name as a directory.
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"invalid bucket name {bucket!r}: 3-63 of a-z 0-9 . -, alphanumeric at both ends")
    return bucket


def guess_content_type(key: str) -> str:
    return mimetypes.guess_type(key, strict=False)[0] or DEFAULT_CONTENT_TYPE


def _check_content_type(content_type: str) -> str:
    # It ends up in an HTTP header (and the local sidecar file): no line breaks, no controls.
    if not content_type or any(ord(c) < 0x20 or ord(c) == 0x7F for c in content_type):
        raise ValueError(f"invalid content type {content_type!r}")
    return content_type


def _check_expiry(expires: timedelta) -> timedelta:
    if not MIN_URL_EXPIRY <= expires <= MAX_URL_EXPIRY:
        raise ValueError(f"URL expiry must be between {MIN_URL_EXPIRY} and {MAX_URL_EXPIRY}, got {expires}")
    return expires


class ObjectStore(ABC):
    """One bucket of objects. Every method may raise StorageUnavailable when the store is down."""

    kind: str
    bucket: str

    @abstractmethod
    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailable unless the bucket is reachable and usable. Fast (~3 s bound)."""

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        self._put_bytes(validate_key(key), bytes(data), _check_content_type(content_type))

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        """Upload a local file; the content type defaults to a guess from the key's extension."""
        validate_key(key)
        self._put_file(key, Path(path), _check_content_type(content_type or guess_content_type(key)))

    def get_bytes(self, key: str) -> bytes:
        """The object's content; ObjectNotFound if there is none."""
        return self._get_bytes(validate_key(key))

    def download_file(self, key: str, path: str | Path) -> None:
        """Write the object to ``path`` (atomically, parent directories created)."""
        self._download_file(validate_key(key), Path(path))

    def stat(self, key: str) -> ObjectInfo | None:
        return self._stat(validate_key(key))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def list(self, prefix: str = "", recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects whose keys start with ``prefix`` (a plain string prefix, as in S3), sorted by
        key. Non-recursive listing yields only the objects directly under the prefix's "folder";
        sub-"folders" are skipped."""
        # Validated now, not on first next(): list() is not itself a generator.
        return self._list(validate_key(prefix, prefix=True), recursive)

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        self._delete(validate_key(key))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a non-empty prefix; returns how many were deleted."""
        if not prefix:
            raise InvalidKey("delete_prefix needs a non-empty prefix (refusing to empty the bucket)")
        return self._delete_prefix(validate_key(prefix, prefix=True))

    def usage(self, prefix: str = "") -> tuple[int, int]:
        """(object count, total bytes) under the prefix."""
        count = size = 0
        for info in self.list(prefix):
            count += 1
            size += info.size
        return count, size

    def url_for(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """An absolute, time-limited URL a browser can open to GET the object."""
        return self._url_for(validate_key(key), _check_expiry(expires))

    @abstractmethod
    def _put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def _put_file(self, key: str, path: Path, content_type: str) -> None: ...

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def _download_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def _stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def _list(self, prefix: str, recursive: bool) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    def _url_for(self, key: str, expires: timedelta) -> str: ...
