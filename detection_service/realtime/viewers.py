"""The live view's MJPEG viewers: one broadcaster thread per app, a one-slot queue per client.

``GET /api/stream/mjpeg`` subscribes a ``Viewer``; the ``FrameBroadcaster`` waits for the
pipeline's next annotated frame (``DetectionPipeline.wait_jpeg``) and hands the same JPEG to
every viewer, so a frame is encoded once however many watch and a slow client skips frames.
"""

from __future__ import annotations

import asyncio
import threading

from detection_service.pipeline.runner import DetectionPipeline


class Viewer:
    """One MJPEG client: a one-slot queue on its event loop (a slow client skips frames)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self.sent = 0

    def offer(self, jpeg: bytes) -> None:  # runs on self.loop
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(jpeg)


class FrameBroadcaster:
    """One thread waits for new annotated frames (``pipeline.wait_jpeg``) while anyone watches
    and hands each JPEG to every viewer: encoding happens once per frame, and no viewer holds a
    thread of the event loop's executor."""

    def __init__(self, pipeline: DetectionPipeline) -> None:
        self.pipeline = pipeline
        self.frames_sent = 0
        self._viewers: set[Viewer] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def subscribe(self) -> Viewer:
        viewer = Viewer(asyncio.get_running_loop())
        _, jpeg = self.pipeline.latest_jpeg()
        if jpeg:
            viewer.offer(jpeg)  # the last frame at once, even while the pipeline is stopped
        with self._lock:
            self._viewers.add(viewer)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="mjpeg-broadcast", daemon=True)
                self._thread.start()
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        with self._lock:
            self._viewers.discard(viewer)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _run(self) -> None:
        version, _ = self.pipeline.latest_jpeg()
        while True:
            with self._lock:
                if not self._viewers or self._closed:
                    self._thread = None
                    return
                viewers = list(self._viewers)
            new_version, jpeg = self.pipeline.wait_jpeg(version, timeout=1.0)
            if jpeg is None or new_version == version:
                continue
            version = new_version
            for viewer in viewers:
                try:
                    viewer.loop.call_soon_threadsafe(viewer.offer, jpeg)
                except RuntimeError:  # its event loop is gone
                    self.unsubscribe(viewer)
