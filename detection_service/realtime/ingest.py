"""Bookkeeping of the WebSocket camera ingest (``/api/stream/ingest``): one client at a time."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from schemas.detection import IngestStatus


@dataclass
class IngestState:
    """The one WebSocket camera client allowed at a time (two would interleave frames)."""

    client: str | None = None
    connected: bool = False
    frames_received: int = 0
    frames_invalid: int = 0
    bytes_received: int = 0
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def claim(self, client: str) -> bool:
        with self._lock:
            if self.connected:
                return False
            self.connected, self.client = True, client
            self.connections += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.connected = False

    def snapshot(self) -> IngestStatus:
        return IngestStatus(
            connected=self.connected,
            client=self.client,
            frames_received=self.frames_received,
            frames_invalid=self.frames_invalid,
            bytes_received=self.bytes_received,
            connections=self.connections,
        )


def looks_like_image(data: bytes) -> bool:
    """Cheap check before a pushed frame is queued (decoding happens later, only if used)."""
    return data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"
