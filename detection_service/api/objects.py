"""Serves the local object store's signed URLs (``LocalObjectStore.url_for``). With an S3 store
browsers get presigned S3 URLs instead and this endpoint answers 404."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from litestar import Controller, get
from litestar.response import Stream

from detection_service.api.dependencies import STANDALONE_OBJECT_STORE
from detection_service.errors import Forbidden, NotFound
from detection_service.storage import LocalObjectStore, ObjectStore

_CHUNK = 256 * 1024


class ObjectController(Controller):
    path = "/api/storage/objects"
    tags = ["storage"]
    # The app's provider of the store, repeated here: the controller is also served on its own.
    dependencies = {"object_store": STANDALONE_OBJECT_STORE}

    @get("/{key:path}", sync_to_thread=True, summary="Download an object through a signed link (local store only)")
    def get_object(self, object_store: ObjectStore | None, key: str, expires: int, signature: str) -> Stream:
        store = object_store
        if not isinstance(store, LocalObjectStore):
            raise NotFound("Signed object links are served only by the local object store")
        key = key.removeprefix("/")  # Litestar hands path parameters over with their leading "/"
        # Signature before existence: an unsigned request learns nothing about which keys exist.
        if not store.verify_url(key, expires, signature):
            raise Forbidden("The link is invalid or has expired", code="INVALID_SIGNATURE")
        info = store.stat(key)
        try:
            # Opened now, so a delete between here and the last byte cannot break the response.
            handle = store.path_for(key).open("rb") if info else None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            handle = None
        if info is None or handle is None:
            raise NotFound("Object not found", {"key": key})
        filename = key.rpartition("/")[2]
        return Stream(
            _chunks(handle),  # a sync iterator: Litestar reads it in a worker thread
            media_type=info.content_type,
            headers={
                "Content-Length": str(os.fstat(handle.fileno()).st_size),
                "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}",
                "Cache-Control": f"private, max-age={max(0, expires - int(time.time()))}",
                # Objects are data, never active content on our origin.
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox",
            },
        )


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
