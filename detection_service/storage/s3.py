"""Object store on an S3-compatible server (MinIO, SeaweedFS, AWS) through the ``minio`` client."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from detection_service.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    validate_bucket,
)

_AUTH_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"})
_CHUNK = 1024 * 1024


class S3ObjectStore(ObjectStore):
    kind = "s3"

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool | None = None,
        region: str | None = None,
    ) -> None:
        if not (access_key and secret_key):
            raise ValueError("S3 needs an access key and a secret key")
        host, tls = parse_endpoint(endpoint, secure)
        self.endpoint = f"{'https' if tls else 'http'}://{host}"
        self.bucket = validate_bucket(bucket)

        def client(timeout: Timeout, retries: Retry) -> Minio:
            pool = urllib3.PoolManager(
                timeout=timeout,
                retries=retries,
                maxsize=10,
                cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            )
            return Minio(host, access_key, secret_key, secure=tls, region=region or None, http_client=pool)

        # Data calls: a few retries on 5xx and dropped connections, generous reads (big objects).
        self._client = client(
            Timeout(connect=2.0, read=30.0),
            Retry(total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        )
        # Health probe: no retries, every request bounded to 3 s, so check() answers quickly.
        self._probe = client(Timeout(connect=2.0, read=3.0, total=3.0), Retry(total=0, redirect=0))

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.endpoint!r}, bucket={self.bucket!r})"

    # -- bucket ---------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        with self._errors("create bucket"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # lost a race with another process
                    raise

    def check(self) -> None:
        with self._errors("check bucket"):
            if not self._probe.bucket_exists(self.bucket):
                raise StorageUnavailable(f"bucket {self.bucket!r} does not exist on {self.endpoint}")

    # -- objects --------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with self._errors("put", key):
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def _put_file(self, key: str, path: Path, content_type: str) -> None:
        with path.open("rb") as src:  # opened here: a missing source is the caller's error
            size = os.fstat(src.fileno()).st_size
            with self._errors("put", key):
                self._client.put_object(self.bucket, key, src, size, content_type=content_type)

    def _get_bytes(self, key: str) -> bytes:
        with self._errors("get", key):
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def _download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out, self._errors("get", key):
                response = self._client.get_object(self.bucket, key)
                try:
                    shutil.copyfileobj(response, out, _CHUNK)
                finally:
                    response.close()
                    response.release_conn()
            os.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _stat(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors("stat", key):
                obj = self._client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return None
        modified = obj.last_modified or datetime.now(UTC)  # always sent by S3; typed Optional
        return ObjectInfo(key=key, size=obj.size or 0, last_modified=modified, content_type=obj.content_type)

    def _list(self, prefix: str, recursive: bool) -> Iterator[ObjectInfo]:
        with self._errors("list", prefix):
            for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=recursive):
                if obj.is_dir:  # a common prefix of a non-recursive listing
                    continue
                modified = obj.last_modified or datetime.now(UTC)
                yield ObjectInfo(key=obj.object_name or "", size=obj.size or 0, last_modified=modified)

    def _delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.remove_object(self.bucket, key)

    def _delete_prefix(self, prefix: str) -> int:
        # Collect first: deleting while paging through the same listing can skip keys.
        keys = [info.key for info in self._list(prefix, recursive=True)]
        with self._errors("delete", prefix):
            failed = list(self._client.remove_objects(self.bucket, (DeleteObject(key) for key in keys)))
        if failed:
            raise StorageError(f"{len(failed)} of {len(keys)} under {prefix!r} not deleted, first: {failed[0]}")
        return len(keys)

    def _url_for(self, key: str, expires: timedelta) -> str:
        with self._errors("presign", key):
            # Signing is local; only the first call per bucket may ask the server for its region.
            return self._client.presigned_get_object(self.bucket, key, expires=expires)

    # -- errors ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate minio / urllib3 exceptions into ours."""
        what = f"S3 {action} {self.bucket}/{key}" if key is not None else f"S3 {action} {self.bucket}"
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectNotFound(key or "") from exc
            if exc.code in _AUTH_CODES:
                raise StorageAuthError(f"{what}: credentials refused by {self.endpoint} ({exc.code})") from exc
            if exc.code == "NoSuchBucket":
                raise StorageUnavailable(f"{what}: bucket does not exist on {self.endpoint}") from exc
            raise StorageError(f"{what}: {exc.code}: {exc.message}") from exc
        except (ServerError, InvalidResponseError) as exc:
            raise StorageUnavailable(f"{what}: {self.endpoint} answered badly: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:  # refused, timed out, TLS, dropped connection
            raise StorageUnavailable(f"{what}: {self.endpoint} unreachable: {_reason(exc)}") from exc


def parse_endpoint(endpoint: str, secure: bool | None = None) -> tuple[str, bool]:
    """("host:port", tls) from "http(s)://host:port" or "host:port" (tls then from ``secure``)."""
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        host, tls = endpoint.rstrip("/"), bool(secure)
    else:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or url.path not in ("", "/") or url.query:
            raise ValueError(f"S3 endpoint must be http(s)://host[:port] without a path, got {endpoint!r}")
        host, tls = url.netloc, url.scheme == "https"
    if not host or "/" in host:
        raise ValueError(f"invalid S3 endpoint {endpoint!r}")
    return host, tls


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the real cause
    return str(reason or exc)
