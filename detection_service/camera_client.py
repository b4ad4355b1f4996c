"""`aidoor camera`: a camera client that pushes JPEG frames to the service's WebSocket ingest.

    aidoor camera --source 0 --to ws://door-box:8000/api/stream/ingest --fps 10 --quality 80

``--source`` is anything ``cv2.VideoCapture`` opens (device index, RTSP/HTTP URL, video file).
Frames are JPEG-encoded here and sent as binary WebSocket messages (protocol in docs/pipeline.md);
the service only decodes the frames it uses. At most ``--fps`` frames per second are sent (a file
plays in real time at its own rate, never faster). A lost connection or source is retried with
backoff (0.5 s doubling to 10 s), at most ``--reconnects`` times in a row; a connection that
delivered frames resets the count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detection_service.retry import Backoff

log = logging.getLogger("aidoor.camera")

BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 10.0


class FatalServerError(Exception):
    """The server refused the stream for a reason a retry does not fix by itself."""


@dataclass
class ClientStats:
    frames_sent: int = 0
    bytes_sent: int = 0
    connections: int = 0
    source_opens: int = 0
    server_errors: int = 0


class _Source:
    def __init__(self, spec: str, loop: bool) -> None:
        self.spec = spec.strip()
        self.target: str | int = int(self.spec) if self.spec.isdigit() else self.spec
        self.is_file = isinstance(self.target, str) and Path(self.target).is_file()
        self.loop = loop
        self.cap: cv2.VideoCapture | None = None
        self.fps: float | None = None
        self._t0 = 0.0
        self._n = 0

    def open(self) -> None:
        self.close()
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"cannot open source {self.spec}")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 240 else None
        self.cap, self._t0, self._n = cap, time.monotonic(), 0

    def read(self) -> np.ndarray | None:
        """The next frame; files are paced to real time. None: end of file (not looping) or failure."""
        if self.cap is None:
            self.open()
        assert self.cap is not None
        ok, frame = self.cap.read()
        if not ok and self.is_file and self.loop:
            self.open()
            ok, frame = self.cap.read()
        if not ok:
            return None
        if self.is_file:
            self._n += 1
            delay = self._t0 + self._n / (self.fps or 15.0) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return frame

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def encode(frame: np.ndarray, quality: int, width: int = 0) -> bytes:
    if width and frame.shape[1] > width:
        height = round(frame.shape[0] * width / frame.shape[1])
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _server_messages(ws: object) -> list[dict]:
    """Messages the server sent since the last call (non-blocking)."""
    out = []
    while True:
        try:
            raw = ws.recv(timeout=0)  # type: ignore[attr-defined]
        except TimeoutError:
            return out
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                out.append(json.loads(raw))


def run(
    source: str,
    url: str,
    *,
    fps: float = 15.0,
    quality: int = 80,
    width: int = 0,
    loop: bool = False,
    reconnects: int = 10,
    max_frames: int | None = None,
    camera_name: str | None = None,
    token: str | None = None,
    stop: threading.Event | None = None,
    on_status: Callable[[str], None] | None = None,
) -> tuple[int, ClientStats]:
    """Stream until the source ends (files without ``loop``), ``max_frames`` were sent, ``stop``
    is set, or ``reconnects`` consecutive attempts failed. ``token`` is an API token with the
    ``camera`` role (docs/security.md), sent as ``Authorization: Bearer``. Returns (exit code, stats)."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    if not 0 < fps <= 60:
        raise ValueError("fps must be within (0, 60]")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be 1-100")
    say = on_status or (lambda text: log.info("%s", text))
    stop = stop or threading.Event()
    stats = ClientStats()
    src = _Source(source, loop)
    interval = 1.0 / fps
    backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)

    def give_up(reason: str) -> bool:
        if backoff.failures >= reconnects:
            say(f"giving up after {reconnects} reconnect attempt(s): {reason}")
            return True
        say(f"{reason}; retrying in {backoff.delay:.1f} s ({backoff.failures + 1}/{reconnects})")
        backoff.wait(stop)
        return False

    try:
        while not stop.is_set():
            try:
                # JPEG does not deflate; a LAN camera must not go through an HTTP proxy from the environment.
                ws = connect(
                    url,
                    open_timeout=5,
                    close_timeout=2,
                    max_size=2**20,
                    compression=None,
                    proxy=None,
                    additional_headers={"Authorization": f"Bearer {token}"} if token else None,
                )
            except InvalidURI:
                say(f"not a WebSocket URL: {url}")
                return 2, stats
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                if give_up(f"cannot connect to {url}: {exc}"):
                    return 1, stats
                continue
            stats.connections += 1
            sent_here = 0
            try:
                with ws:
                    ready = json.loads(ws.recv(timeout=5))
                    if ready.get("type") != "ready":
                        stats.server_errors += 1
                        raise FatalServerError(ready.get("message") or str(ready))
                    if camera_name:
                        ws.send(json.dumps({"type": "hello", "camera": camera_name, "fps": fps}))
                    say(f"connected to {url}; streaming {source} at up to {fps:g} fps")
                    last_sent = 0.0
                    while not stop.is_set():
                        try:
                            frame = src.read()
                        except OSError as exc:
                            frame = None
                            say(str(exc))
                        if frame is None:
                            if src.is_file and not loop:
                                say(f"end of {source}: {stats.frames_sent} frame(s) sent")
                                return 0, stats
                            src.close()
                            if give_up(f"source {source} delivered no frame"):
                                return 1, stats
                            continue
                        now = time.monotonic()
                        if now - last_sent < interval * 0.95:
                            continue  # over the fps limit: drop this frame
                        data = encode(frame, quality, width)
                        ws.send(data)
                        last_sent = now
                        sent_here += 1
                        stats.frames_sent += 1
                        stats.bytes_sent += len(data)
                        if sent_here == 1:
                            backoff.reset()  # this connection works
                        for message in _server_messages(ws):
                            if message.get("type") == "error":
                                stats.server_errors += 1
                                say(f"server: {message.get('code')}: {message.get('message')}")
                                if message.get("fatal"):
                                    raise FatalServerError(message.get("message", ""))
                        if max_frames is not None and stats.frames_sent >= max_frames:
                            say(f"{stats.frames_sent} frame(s) sent")
                            return 0, stats
                    return 0, stats
            except (ConnectionClosed, OSError, TimeoutError, FatalServerError, ValueError) as exc:
                reason = (
                    f"server refused the stream: {exc}"
                    if isinstance(exc, FatalServerError)
                    else f"connection lost: {exc}"
                )
                if give_up(reason):
                    return 1, stats
        return 0, stats
    finally:
        src.close()
