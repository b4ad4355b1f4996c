"""Frame sources: anything ``cv2.VideoCapture`` opens, and frames pushed over a WebSocket.

A source is driven by exactly one capture thread (``capture.Capture``), which calls ``grab()``
for every frame and ``retrieve()`` only for the frames the pipeline will use: for FFmpeg-backed
captures ``grab`` demuxes/decodes and ``retrieve`` does the colour conversion and copy, and for
pushed JPEGs ``grab`` is free and ``retrieve`` is the whole decode.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

# ``camera.source`` values that mean "frames arrive over the WebSocket ingest".
PUSH_SOURCE_NAMES = frozenset({"push", "ws", "websocket"})
_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(Exception):
    """The source cannot be opened or read."""


class FrameSource(ABC):
    """A video source for one capture thread. ``grab``/``retrieve``/``open``/``close`` are only
    ever called from that thread."""

    name: str
    #: Files must be paced by the reader to real time; live sources pace themselves.
    is_file: bool = False
    #: A pushed source is never re-opened: "disconnected" just means nothing arrived lately.
    reconnectable: bool = True

    @abstractmethod
    def open(self) -> None:
        """Open (or re-open) the source; raise SourceError if it cannot be opened."""

    @abstractmethod
    def grab(self, timeout: float) -> bool:
        """Advance to the next frame without decoding it. False: no frame (failure or EOF)."""

    @abstractmethod
    def retrieve(self) -> np.ndarray | None:
        """Decode the frame of the last successful ``grab`` (BGR), or None if that failed."""

    def nominal_fps(self) -> float | None:
        """The source's advertised frame rate, if it has a usable one."""
        return None

    def dropped_at_source(self) -> int:
        """Frames lost before ``grab`` could see them (pushed frames overwritten)."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook; sources without resources keep it
        """Release the source; safe to call twice."""


class VideoCaptureSource(FrameSource):
    """RTSP/HTTP URL, video file or device index, via ``cv2.VideoCapture``.

    A file with ``loop=True`` is re-opened at its end, so a file that has disappeared shows up as
    a failed open (and the capture reports "disconnected" until it is back).
    """

    def __init__(
        self,
        target: str | int | Path,
        *,
        loop: bool = True,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 4.0,
        resolution: tuple[int, int] | None = None,
        fps: float | None = None,
    ) -> None:
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target.strip())
        self.target: str | int = str(target) if isinstance(target, Path) else target
        self.is_device = isinstance(self.target, int)
        self.is_url = isinstance(self.target, str) and self.target.lower().startswith(_URL_SCHEMES)
        self.is_file = not self.is_device and not self.is_url
        self.name = _redact(str(self.target))
        self.loop = loop
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.resolution = resolution
        self.requested_fps = fps
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None

    def open(self) -> None:
        self.close()
        if self.is_file and not Path(str(self.target)).is_file():
            raise SourceError(f"file not found: {self.target}")
        # Without these FFmpeg waits ~30 s on a dead RTSP server, far past our 5 s "disconnected".
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout_s * 1000),
        ]
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}")
        if self.is_device:
            # Best effort: a camera picks the nearest mode it supports.
            if self.resolution:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.resolution[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.resolution[1])
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2: do not queue stale frames in the driver
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and 1.0 <= fps <= 240.0 else None
        self._cap = cap

    def grab(self, timeout: float) -> bool:
        if self._cap is None:
            return False
        if self._cap.grab():
            return True
        if self.is_file and self.loop:
            # End of file: start over. A failed re-open (file gone) raises and counts as lost.
            self.open()
            return self._cap is not None and self._cap.grab()
        return False

    def retrieve(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, frame = self._cap.retrieve()
        return frame if ok else None

    def nominal_fps(self) -> float | None:
        return self._fps or self.requested_fps

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class PushSource(FrameSource):
    """Frames pushed as JPEG bytes (the WebSocket ingest calls ``push_jpeg``).

    Only the newest pushed frame is kept; one that is replaced before the capture thread took it
    counts as dropped. Decoding happens in ``retrieve``, i.e. only for frames the pipeline uses.
    """

    is_file = False
    reconnectable = False

    def __init__(self, name: str = "push") -> None:
        self.name = name
        self.pushed = 0
        self._dropped = 0
        self._pending: bytes | None = None
        self._current: bytes | None = None
        self._cond = threading.Condition()

    def push_jpeg(self, data: bytes) -> None:
        """Hand over one encoded frame (JPEG or PNG). Never blocks; thread-safe."""
        with self._cond:
            if self._pending is not None:
                self._dropped += 1
            self._pending = bytes(data)
            self.pushed += 1
            self._cond.notify()

    def open(self) -> None:
        pass

    def grab(self, timeout: float) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending is not None, timeout):
                return False
            self._current, self._pending = self._pending, None
            return True

    def retrieve(self) -> np.ndarray | None:
        data = self._current
        if data is None:
            return None
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            log.warning("pushed frame of %d bytes is not a decodable image", len(data))
        return frame

    def dropped_at_source(self) -> int:
        return self._dropped


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        return None
    return (width, height)


def open_source(spec: str, *, resolution: str | None = None, fps: float | None = None) -> FrameSource | None:
    """The source for a ``camera.source`` setting: "" -> None (no camera), "push" -> a PushSource,
    digits -> device index, anything else -> URL or file (files loop)."""
    spec = spec.strip()
    if not spec:
        return None
    if spec.lower() in PUSH_SOURCE_NAMES:
        return PushSource()
    return VideoCaptureSource(spec, loop=True, resolution=parse_resolution(resolution), fps=fps or None)


def _redact(target: str) -> str:
    # rtsp://user:secret@host/...: never put the password in logs or the status API.
    if "://" in target and "@" in target.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = target.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return target
