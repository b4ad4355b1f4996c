"""A fake Roboflow REST API: exactly the calls ``roboflow`` 1.7.3 makes to download a version.

Sequence (see roboflow/__init__.py, core/{workspace,project,version}.py, adapters/rfapi.py):

1. ``POST /?api_key=K``                    -> ``{"workspace": ws}`` (401 for a wrong key)
2. ``GET /{ws}?api_key=K``                 -> ``{"workspace": {name, url, projects, members}}``
3. ``GET /{ws}/{proj}?api_key=K`` (twice)  -> ``{"project": {...}, "versions": [{id: "ws/proj/6", ...}]}``
4. ``GET /{ws}/{proj}/{v}?api_key=K&nocache=true`` -> ``{"version": {"images": n, "generating": false}}``
   (images must be > 0 or the SDK polls every 5 s forever)
5. ``GET /{ws}/{proj}/{v}/yolov8?api_key=K&nocache=true``: 202 ``{"progress": 0.5}`` the first
   time (the export is "being prepared"), then 200 ``{"export": {"link": ...}}``. The version
   lists no ready exports, so the SDK takes its export() path that polls on 202.
6. ``GET /download/<token>.zip``           -> the zip, with Content-Length (the SDK needs it)

Served by a stdlib ThreadingHTTPServer on 127.0.0.1 with a free port, in a daemon thread.
Every request is recorded (path with the api_key masked) for assertions.
"""

from __future__ import annotations

import json
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

UNAUTHORIZED = {
    "error": {
        "message": "This API key does not exist (or has been revoked).",
        "status": 401,
        "type": "OAuthException",
        "hint": "You may retrieve your API key via the Roboflow Dashboard.",
    }
}


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip an export folder the way Roboflow serves it: data.yaml and the splits at the root."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return zip_path


@dataclass
class FakeRoboflow:
    workspace: str
    project: str
    version: int
    api_key: str
    zip_path: Path
    images: int
    classes: dict[str, int]
    preparing_polls: int = 1  # 202 answers before the export is ready
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    _export_polls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path in self.requests]

    # -- answers --------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any] | Path]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and len(parts) == 2 and parts[0] == "download" and parts[1] == "export.zip":
            return 200, self.zip_path
        if query.get("api_key", [""])[0] != self.api_key:
            return 401, UNAUTHORIZED
        ws, proj, ver = self.workspace, self.project, str(self.version)
        now = int(time.time())
        if method == "POST" and not parts:
            return 200, {"welcome": "Welcome to the Roboflow API.", "instructions": "", "docs": "", "workspace": ws}
        if method != "GET" or not parts or parts[0] != ws:
            return 404, {"error": {"message": f"Unsupported request: {method} /{'/'.join(parts)}"}}
        project_info = {
            "id": f"{ws}/{proj}",
            "name": proj,
            "type": "object-detection",
            "annotation": "packages",
            "classes": self.classes,
            "colors": {},
            "created": now - 86400,
            "updated": now,
            "images": self.images,
            "unannotated": 0,
            "public": True,
            "splits": {"train": 0, "valid": 0, "test": 0},
            "versions": 1,
        }
        version_info = {
            "id": f"{ws}/{proj}/{ver}",
            "name": proj,
            "version": ver,
            "created": now - 3600,
            "images": self.images,
            "splits": {},
            "augmentation": {},
            "preprocessing": {},
            "exports": [],  # nothing ready yet: the SDK asks for the export and polls
            "generating": False,
            "progress": 1.0,
        }
        if len(parts) == 1:
            return 200, {"workspace": {"name": ws, "url": ws, "projects": [project_info], "members": []}}
        if parts[1] != proj:
            return 404, {"error": {"message": f"project {parts[1]} not found"}}
        if len(parts) == 2:
            return 200, {"workspace": {"name": ws, "url": ws}, "project": project_info, "versions": [version_info]}
        if parts[2] != ver:
            return 404, {"error": {"message": f"version {parts[2]} not found"}}
        if len(parts) == 3:
            return 200, {"workspace": {"name": ws, "url": ws}, "project": project_info, "version": version_info}
        if len(parts) == 4 and parts[3] == "yolov8":
            with self._lock:
                self._export_polls += 1
                preparing = self._export_polls <= self.preparing_polls
            if preparing:
                return 202, {"progress": 0.5}
            return 200, {"export": {"link": f"{self.url}/download/export.zip", "format": "yolov8"}}
        return 404, {"error": {"message": f"Unsupported request: GET /{'/'.join(parts)}"}}


def _handler(fake: FakeRoboflow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _serve(self, method: str) -> None:
            split = urlsplit(self.path)
            query = parse_qs(split.query)
            masked = split.path + ("?" + split.query.replace(fake.api_key, "***") if split.query else "")
            with fake._lock:
                fake.requests.append((method, masked))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
            status, body = fake.answer(method, split.path, query)
            if isinstance(body, Path):
                data = body.read_bytes()
                content_type = "application/zip"
            else:
                data = json.dumps(body).encode()
                content_type = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


@contextmanager
def serve_fake_roboflow(
    export_dir: Path,
    tmp_dir: Path,
    *,
    workspace: str = "joseph-nelson",
    project: str = "packages-g0ton",
    version: int = 6,
    api_key: str = "fake-key-0123abc",
    preparing_polls: int = 1,
) -> Iterator[FakeRoboflow]:
    """Serve ``export_dir`` (zipped into ``tmp_dir``) as ``workspace/project/version``."""
    zip_path = zip_folder(export_dir, tmp_dir / "roboflow-export.zip")
    images = sum(1 for p in export_dir.glob("*/images/*") if p.is_file())
    fake = FakeRoboflow(
        workspace=workspace,
        project=project,
        version=version,
        api_key=api_key,
        zip_path=zip_path,
        images=images,
        classes={"package": images},
        preparing_polls=preparing_polls,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
