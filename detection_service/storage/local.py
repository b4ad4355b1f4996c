"""Object store in a local directory: ``root/<bucket>/<key>``.

Writes go to ``root/.tmp`` and are moved into place with os.replace, so readers never see a
partial object. A content type that differs from the guess from the key's extension is kept in a
sidecar under ``root/.meta/<bucket>/<key>``. Browser URLs are HMAC-signed links served by
``detection_service.api.objects.ObjectController``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from detection_service.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    guess_content_type,
    validate_bucket,
    validate_key,
)

URL_PATH = "/api/storage/objects"
_COPY_CHUNK = 1024 * 1024


class LocalObjectStore(ObjectStore):
    kind = "local"

    def __init__(self, root_dir: str | Path, bucket: str, public_url: str, signing_key: bytes) -> None:
        if not signing_key:
            raise ValueError("signing_key must not be empty")
        self.bucket = validate_bucket(bucket)
        self.root = Path(root_dir).resolve()
        self.public_url = public_url.rstrip("/")
        self._signing_key = signing_key
        self._dir = self.root / bucket
        self._meta_dir = self.root / ".meta" / bucket  # bucket names cannot start with "."
        self._tmp_dir = self.root / ".tmp"

    # -- bucket ---------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        try:
            for directory in (self._dir, self._meta_dir, self._tmp_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create bucket directory {self._dir}: {exc}") from exc

    def check(self) -> None:
        self._require_bucket()
        if not os.access(self._dir, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"bucket directory {self._dir} is not writable")

    def _require_bucket(self) -> None:
        # Same contract as S3: operations on a missing bucket fail instead of creating it.
        if not self._dir.is_dir():
            raise StorageUnavailable(f"bucket directory {self._dir} does not exist")

    # -- paths ----------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """The file that holds ``key`` (which may not exist)."""
        return self._under(self._dir, validate_key(key))

    def _under(self, base: Path, key: str) -> Path:
        # validate_key already rules out "..", this also catches symlinks pointing outside.
        path = (base / key).resolve()
        if not path.is_relative_to(base.resolve()):
            raise InvalidKey(f"key {key!r} resolves outside the store")
        return path

    # -- objects --------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._store(key, lambda out: out.write(data), content_type)

    def _put_file(self, key: str, path: Path, content_type: str) -> None:
        with path.open("rb") as src:  # opened first: a missing source is the caller's error
            self._store(key, lambda out: shutil.copyfileobj(src, out, _COPY_CHUNK), content_type)

    def _store(self, key: str, write: Callable[[BinaryIO], object], content_type: str) -> None:
        self._require_bucket()
        dest = self._under(self._dir, key)
        try:
            _write_atomic(dest, write, self._tmp_dir)
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            # "a" and "a/b" can both exist in S3, not as files and directories.
            raise StorageError(f"key {key!r} clashes with an existing object or prefix: {exc}") from exc
        meta = self._under(self._meta_dir, key)
        if content_type == guess_content_type(key):
            meta.unlink(missing_ok=True)
        else:
            _write_atomic(meta, lambda out: out.write(content_type.encode()), self._tmp_dir)

    def _get_bytes(self, key: str) -> bytes:
        self._require_bucket()
        try:
            return self._under(self._dir, key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def _download_file(self, key: str, path: Path) -> None:
        self._require_bucket()
        try:
            src = self._under(self._dir, key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with src:
            # A temp file beside the destination: the caller's directory may be on another disk.
            _write_atomic(path, partial(shutil.copyfileobj, src, length=_COPY_CHUNK), path.parent, fsync=False)

    def _stat(self, key: str) -> ObjectInfo | None:
        path = self._under(self._dir, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            content_type=self._content_type(key),
        )

    def _content_type(self, key: str) -> str:
        try:
            return self._under(self._meta_dir, key).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return guess_content_type(key)

    def _list(self, prefix: str, recursive: bool) -> Iterator[ObjectInfo]:
        self._require_bucket()
        base = prefix.rpartition("/")[0]  # the deepest directory every match lives in
        top = self._under(self._dir, base) if base else self._dir
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top):
            rel = Path(dirpath).relative_to(self._dir).as_posix()
            rel = "" if rel == "." else rel + "/"
            if recursive:
                # Only descend where keys can still match the prefix.
                dirnames[:] = [d for d in dirnames if _may_match(rel + d + "/", prefix)]
            else:
                dirnames[:] = []
            for name in filenames:
                key = rel + name
                if key.startswith(prefix):
                    with suppress(FileNotFoundError):  # deleted while we walk
                        st = os.stat(os.path.join(dirpath, name))
                        modified = datetime.fromtimestamp(st.st_mtime, UTC)
                        found.append(ObjectInfo(key=key, size=st.st_size, last_modified=modified))
        found.sort(key=lambda info: info.key.encode())  # S3 order: by UTF-8 bytes
        return iter(found)

    def _delete(self, key: str) -> None:
        self._require_bucket()
        for base in (self._dir, self._meta_dir):
            path = self._under(base, key)
            with suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                path.unlink()
                _prune_empty_dirs(path.parent, base)

    def _delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self._list(prefix, recursive=True)]
        for key in keys:
            self._delete(key)
        return len(keys)

    # -- signed URLs ----------------------------------------------------------------------

    def sign(self, key: str, expires: int) -> str:
        """Hex HMAC-SHA256 of ``"{key}\\n{expires}"`` (expires: unix seconds)."""
        return hmac.new(self._signing_key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify_url(self, key: str, expires: int, signature: str) -> bool:
        """True when the signature matches and the link has not expired."""
        try:
            validate_key(key)
        except InvalidKey:
            return False
        if expires < time.time():
            return False
        return hmac.compare_digest(self.sign(key, expires).encode(), signature.encode())

    def _url_for(self, key: str, expires: timedelta) -> str:
        # Hot path (a list page signs 50 links): both query values are digits / hex, and most
        # keys need no quoting at all.
        expires_at = int(time.time()) + math.ceil(expires.total_seconds())
        path = key if _URL_SAFE_KEY.fullmatch(key) else quote(key, safe="/")
        return f"{self.public_url}{URL_PATH}/{path}?expires={expires_at}&signature={self.sign(key, expires_at)}"


_URL_SAFE_KEY = re.compile(r"[A-Za-z0-9/._~-]+")


def _may_match(dir_prefix: str, prefix: str) -> bool:
    return dir_prefix.startswith(prefix) or prefix.startswith(dir_prefix)


def _write_atomic(dest: Path, write: Callable[[BinaryIO], object], tmp_dir: Path, *, fsync: bool = True) -> None:
    # tmp_dir must be on dest's file system for os.replace to be atomic.
    tmp_dir.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".put-")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            if fsync:  # so a crash cannot leave a renamed but empty file
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give objects normal file modes
        os.replace(tmp, dest)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _prune_empty_dirs(directory: Path, stop: Path) -> None:
    # Empty "folders" would otherwise block a later object of the same name.
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
