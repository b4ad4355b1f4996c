"""Object storage: the same tests against the local backend and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from detection_service.api.objects import ObjectController
from detection_service.api.responses import EXCEPTION_HANDLERS
from detection_service.config import Settings
from detection_service.storage import (
    InvalidKey,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageAuthError,
    StorageUnavailable,
    make_object_store,
    validate_key,
)
from detection_service.storage.s3 import parse_endpoint

if TYPE_CHECKING:
    from tests.fixtures.seaweedfs import S3Server

PUBLIC_URL = "http://testserver.local"  # litestar's TestClient base URL
SIGNING_KEY = b"test-signing-key-0123456789abcdef"
BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]

BAD_KEYS = ["../x", "a/../b", "/abs", "a//b", "a/./b", "./a", "a\\b"]
BAD_KEYS += ["a\x00b", "a\nb", "a\x7fb", "a\x85b", "\ud800", "x" * 1025]
BAD_ONLY_AS_KEYS = ["", "a/"]  # fine as prefixes


StoreFactory = Callable[[str], ObjectStore]
Fetch = Callable[[ObjectStore, str], httpx.Response]


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_bucket() -> str:
    return f"test-storage-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """bucket name -> a store of the parametrized backend (bucket not created)."""
    if request.param == "local":
        return lambda bucket: LocalObjectStore(tmp_path / "objects", bucket, PUBLIC_URL, SIGNING_KEY)
    server = request.getfixturevalue("s3_server")
    return lambda bucket: S3ObjectStore(server.endpoint, server.access_key, server.secret_key, bucket)


@pytest.fixture
def object_store(store_factory: StoreFactory, s3_bucket: str) -> ObjectStore:
    store = store_factory(s3_bucket)
    store.ensure_bucket()
    return store


@pytest.fixture
def prefix() -> str:
    # S3 tests share one bucket per module; each test works under its own prefix.
    return f"t-{uuid.uuid4().hex[:10]}/"


def make_app(store: object) -> Litestar:
    app = Litestar(route_handlers=[ObjectController], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    app.state.object_store = store
    return app


@pytest.fixture
def fetch() -> Iterator[Fetch]:
    """GET a store URL like a browser would: S3 directly, local through the controller."""
    with ExitStack() as stack:

        def get(store: ObjectStore, url: str) -> httpx.Response:
            if isinstance(store, LocalObjectStore):
                return stack.enter_context(TestClient(make_app(store), base_url=PUBLIC_URL)).get(url)
            return httpx.get(url, timeout=10)

        yield get


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def flip_last(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


# -- both backends -------------------------------------------------------------------------


def test_ensure_bucket_creates_missing_bucket(store_factory: StoreFactory) -> None:
    store = store_factory(f"fresh-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):  # no implicit bucket creation on write
        store.put_bytes("x.bin", b"1")
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.check()


def test_put_get_bytes_and_stat(object_store: ObjectStore, prefix: str) -> None:
    key = prefix + "frame.bin"
    assert object_store.stat(key) is None
    assert not object_store.exists(key)
    with pytest.raises(ObjectNotFound):
        object_store.get_bytes(key)

    object_store.put_bytes(key, b"\x00\x01binary", "application/x-test")
    assert object_store.get_bytes(key) == b"\x00\x01binary"
    info = object_store.stat(key)
    assert info is not None and object_store.exists(key)
    assert (info.key, info.size, info.content_type) == (key, 8, "application/x-test")
    assert abs(info.last_modified - datetime.now(UTC)) < timedelta(minutes=1)

    object_store.put_bytes(key, b"jpeg", "image/jpeg")  # overwrite: content and type replaced
    assert object_store.get_bytes(key) == b"jpeg"
    assert object_store.stat(key).content_type == "image/jpeg"  # type: ignore[union-attr]
    object_store.put_bytes(key, b"default")
    assert object_store.stat(key).content_type == "application/octet-stream"  # type: ignore[union-attr]

    if isinstance(object_store, LocalObjectStore):  # atomic writes leave no temp files behind
        assert not any((object_store.root / ".tmp").iterdir())


def test_put_file_and_download_file(object_store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)  # above minio's 5 MiB part size: multipart on S3
    src = tmp_path / "src.jpg"
    src.write_bytes(data)
    key = prefix + "snap/clip.jpg"
    object_store.put_file(key, src)
    info = object_store.stat(key)
    assert info is not None and info.size == len(data)
    assert info.content_type == "image/jpeg"  # guessed from the key

    dest = tmp_path / "out" / "nested" / "copy.jpg"
    object_store.download_file(key, dest)
    assert dest.read_bytes() == data

    with pytest.raises(ObjectNotFound):
        object_store.download_file(prefix + "missing.jpg", tmp_path / "missing.jpg")
    assert not (tmp_path / "missing.jpg").exists()
    with pytest.raises(FileNotFoundError):  # a missing source file is not a storage error
        object_store.put_file(prefix + "x", tmp_path / "nope")


def test_list_with_prefix(object_store: ObjectStore, prefix: str) -> None:
    keys = ["a/1.jpg", "a/2.jpg", "a/sub/3.jpg", "ab.txt", "b/4.jpg"]
    for i, key in enumerate(keys):
        object_store.put_bytes(prefix + key, b"x" * (i + 1))

    def listed(p: str, recursive: bool = True) -> list[str]:
        return [info.key.removeprefix(prefix) for info in object_store.list(prefix + p, recursive=recursive)]

    assert listed("") == keys  # sorted
    assert listed("a/") == ["a/1.jpg", "a/2.jpg", "a/sub/3.jpg"]
    assert listed("a") == ["a/1.jpg", "a/2.jpg", "a/sub/3.jpg", "ab.txt"]  # a string prefix, as in S3
    assert listed("a/", recursive=False) == ["a/1.jpg", "a/2.jpg"]
    assert listed("a/s") == ["a/sub/3.jpg"]
    assert listed("nothing/") == []
    sizes = {info.key: info.size for info in object_store.list(prefix)}
    assert sizes[prefix + "b/4.jpg"] == 5


def test_delete_and_delete_prefix(object_store: ObjectStore, prefix: str) -> None:
    for key in ["a/1", "a/2", "a/deep/3", "b/4"]:
        object_store.put_bytes(prefix + key, b"data")
    object_store.delete(prefix + "b/4")
    assert not object_store.exists(prefix + "b/4")
    object_store.delete(prefix + "b/4")  # deleting a missing object is fine

    assert object_store.delete_prefix(prefix + "a/") == 3
    assert list(object_store.list(prefix)) == []
    assert object_store.delete_prefix(prefix + "a/") == 0
    with pytest.raises(InvalidKey):
        object_store.delete_prefix("")
    # The former "folder" name is free again (the local backend prunes empty directories).
    object_store.put_bytes(prefix + "a", b"now a file")
    assert object_store.get_bytes(prefix + "a") == b"now a file"


def test_usage(object_store: ObjectStore, prefix: str) -> None:
    assert object_store.usage(prefix) == (0, 0)
    object_store.put_bytes(prefix + "x/1", b"12345")
    object_store.put_bytes(prefix + "x/2", b"123")
    object_store.put_bytes(prefix + "y/3", b"1")
    assert object_store.usage(prefix) == (3, 9)
    assert object_store.usage(prefix + "x/") == (2, 8)


def test_unicode_key(object_store: ObjectStore, prefix: str, fetch: Fetch) -> None:
    key = prefix + "фото/снимок 1 (ü) #?%&+=.jpg"
    object_store.put_bytes(key, b"unicode", "image/jpeg")
    assert object_store.get_bytes(key) == b"unicode"
    assert [info.key for info in object_store.list(prefix + "фото/")] == [key]
    response = fetch(object_store, object_store.url_for(key))
    assert response.status_code == 200, response.text
    assert response.content == b"unicode"


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("bad", BAD_KEYS + BAD_ONLY_AS_KEYS, ids=repr)
def test_rejected_keys_raise_before_any_io(backend: str, bad: str, tmp_path: Path) -> None:
    # Stores that would fail on any I/O: a missing root, a closed port. InvalidKey (and not
    # StorageUnavailable, nor a created directory) proves validation comes first.
    root = tmp_path / "never-created"
    store: ObjectStore = (
        LocalObjectStore(root, "bucket", PUBLIC_URL, SIGNING_KEY)
        if backend == "local"
        else S3ObjectStore(f"http://127.0.0.1:{closed_port()}", "ak", "sk", "bucket")
    )
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(bad, b"x"),
        lambda: store.put_file(bad, __file__),
        lambda: store.get_bytes(bad),
        lambda: store.download_file(bad, tmp_path / "dl"),
        lambda: store.stat(bad),
        lambda: store.exists(bad),
        lambda: store.delete(bad),
        lambda: store.url_for(bad),
    ]
    if bad not in BAD_ONLY_AS_KEYS:
        calls += [lambda: store.list(bad), lambda: store.delete_prefix(bad), lambda: store.usage(bad)]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert not root.exists() and not (tmp_path / "dl").exists()


def test_validate_key_accepts_ordinary_keys() -> None:
    good = ["a", "a/b/c.jpg", ".hidden/x", "a/..b/c", "ü/кот 1.jpg", "x" * 1024, "2026/11/29/cam-1_12:00.jpg"]
    for key in good:
        assert validate_key(key) == key
    for p in ["", "a/", "a/b", "a/b/"]:
        assert validate_key(p, prefix=True) == p
    assert isinstance(InvalidKey("x"), ValueError)


def test_url_for_opens_with_plain_http(object_store: ObjectStore, prefix: str, fetch: Fetch) -> None:
    key = prefix + "alerts/person.jpg"
    object_store.put_bytes(key, b"\xff\xd8jpeg-bytes", "image/jpeg")
    url = object_store.url_for(key, expires=timedelta(minutes=5))
    assert url.startswith("http://")
    response = fetch(object_store, url)
    assert response.status_code == 200, response.text
    assert response.content == b"\xff\xd8jpeg-bytes"
    assert response.headers["content-type"].startswith("image/jpeg")
    with pytest.raises(ValueError):  # S3 presigning allows 1 s .. 7 days; local keeps the same range
        object_store.url_for(key, expires=timedelta(days=8))


def test_expired_url_is_refused(object_store: ObjectStore, prefix: str, fetch: Fetch) -> None:
    key = prefix + "old.jpg"
    object_store.put_bytes(key, b"old", "image/jpeg")
    if isinstance(object_store, LocalObjectStore):
        # Correctly signed, but for a moment in the past.
        past = int(time.time()) - 10
        url = with_query(object_store.url_for(key), expires=str(past), signature=object_store.sign(key, past))
    else:
        url = object_store.url_for(key, expires=timedelta(seconds=1))
        time.sleep(2)
    response = fetch(object_store, url)
    assert response.status_code == 403
    if isinstance(object_store, LocalObjectStore):
        assert response.json()["error"]["code"] == "INVALID_SIGNATURE"


def test_tampered_url_is_refused(object_store: ObjectStore, prefix: str, fetch: Fetch) -> None:
    object_store.put_bytes(prefix + "a.jpg", b"a", "image/jpeg")
    object_store.put_bytes(prefix + "b.jpg", b"b", "image/jpeg")
    url = object_store.url_for(prefix + "a.jpg")
    field = "signature" if isinstance(object_store, LocalObjectStore) else "X-Amz-Signature"
    signature = dict(parse_qsl(urlsplit(url).query))[field]

    assert fetch(object_store, with_query(url, **{field: flip_last(signature)})).status_code == 403
    other_key = url.replace("/a.jpg?", "/b.jpg?")  # a's signature on b's path
    assert fetch(object_store, other_key).status_code == 403
    assert fetch(object_store, url).status_code == 200


# -- S3 only -------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_wrong_credentials_raise_auth_error(s3_server: S3Server, s3_bucket: str) -> None:
    S3ObjectStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, s3_bucket).ensure_bucket()
    wrong = [(s3_server.access_key, "wrong-secret"), ("unknown-key", s3_server.secret_key)]
    for access_key, secret_key in wrong:
        store = S3ObjectStore(s3_server.endpoint, access_key, secret_key, s3_bucket)
        with pytest.raises(StorageAuthError):
            store.check()
        with pytest.raises(StorageAuthError):
            store.ensure_bucket()
        with pytest.raises(StorageAuthError):
            store.put_bytes("x", b"x")
        assert issubclass(StorageAuthError, StorageUnavailable)


def test_s3_closed_port_is_unavailable_quickly() -> None:
    store = S3ObjectStore(f"127.0.0.1:{closed_port()}", "ak", "sk", "bucket")
    calls = (store.check, store.ensure_bucket, lambda: store.put_bytes("x", b"x"), lambda: store.get_bytes("x"))
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            call()
        assert time.monotonic() - started < 5


def test_s3_check_is_bounded_when_server_hangs() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = S3ObjectStore(f"127.0.0.1:{silent.getsockname()[1]}", "ak", "sk", "bucket")
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            store.check()
        assert time.monotonic() - started < 4.5


def test_parse_endpoint() -> None:
    assert parse_endpoint("http://127.0.0.1:8333") == ("127.0.0.1:8333", False)
    assert parse_endpoint("https://s3.example.com/") == ("s3.example.com", True)
    assert parse_endpoint("minio:9000", secure=True) == ("minio:9000", True)
    assert parse_endpoint("minio:9000") == ("minio:9000", False)
    for bad in ["ftp://h", "http://h/path", "http://", ""]:
        with pytest.raises(ValueError):
            parse_endpoint(bad)


# -- local only: paths, the download endpoint, the factory ----------------------------------


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "objects", "bucket", PUBLIC_URL, SIGNING_KEY)
    store.ensure_bucket()
    return store


def test_local_symlink_out_of_root_is_rejected(local_store: LocalObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (local_store.root / "bucket" / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        local_store.get_bytes("link/secret")


def test_local_verify_url(local_store: LocalObjectStore) -> None:
    future = int(time.time()) + 60
    signature = local_store.sign("a/b.jpg", future)
    assert local_store.verify_url("a/b.jpg", future, signature)
    assert not local_store.verify_url("a/b.jpg", future + 1, signature)
    assert not local_store.verify_url("a/c.jpg", future, signature)
    assert not local_store.verify_url("a/b.jpg", future, "ü" + signature[1:])  # non-ASCII: no crash
    assert not local_store.verify_url("../b.jpg", future, local_store.sign("../b.jpg", future))
    past = int(time.time()) - 1
    assert not local_store.verify_url("a/b.jpg", past, local_store.sign("a/b.jpg", past))


def test_object_endpoint_errors(local_store: LocalObjectStore) -> None:
    future = int(time.time()) + 60
    query = {"expires": future, "signature": local_store.sign("missing.jpg", future)}
    with TestClient(make_app(local_store)) as client:
        response = client.get("/api/storage/objects/missing.jpg", params=query)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
        response = client.get("/api/storage/objects/missing.jpg", params={**query, "signature": "0" * 64})
        assert response.status_code == 403
        assert response.json()["success"] is False
        assert client.get("/api/storage/objects/missing.jpg").status_code == 400  # no expires/signature

    local_store.put_bytes("page.html", b"<script>alert(1)</script>", "text/html")
    with TestClient(make_app(local_store)) as client:
        response = client.get(local_store.url_for("page.html"))
        assert response.status_code == 200
        assert response.headers["content-length"] == "25"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"] == "sandbox"

    s3_store = S3ObjectStore(f"http://127.0.0.1:{closed_port()}", "ak", "sk", "bucket")
    for store in (s3_store, None):
        with TestClient(make_app(store)) as client:
            response = client.get("/api/storage/objects/missing.jpg", params=query)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "NOT_FOUND"


def test_make_object_store(tmp_path: Path) -> None:
    local = make_object_store(Settings.from_env(environ={}, data_dir=tmp_path))
    assert isinstance(local, LocalObjectStore)
    assert local.root == (tmp_path / "objects").resolve() and local.bucket == "ai-door-system"
    s3 = make_object_store(
        Settings.from_env(
            environ={
                "AIDOOR_S3_ENDPOINT": "http://127.0.0.1:9000",
                "AIDOOR_S3_ACCESS_KEY": "ak",
                "AIDOOR_S3_SECRET_KEY": "sk",
                "AIDOOR_S3_BUCKET": "frames",
            },
            data_dir=tmp_path,
        )
    )
    assert isinstance(s3, S3ObjectStore)
    assert (s3.kind, s3.bucket, s3.endpoint) == ("s3", "frames", "http://127.0.0.1:9000")
