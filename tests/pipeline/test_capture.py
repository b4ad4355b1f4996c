"""Capture: newest frame wins, drops counted, real-time pacing, disconnect/reconnect, fast stop."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from detection_service.pipeline.capture import Capture
from detection_service.pipeline.sources import PushSource, VideoCaptureSource, open_source
from tests.pipeline.conftest import frame_index, wait_until, write_video


def test_keeps_newest_frame_counts_drops_and_paces_files(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=60, fps=30)
    capture = Capture(VideoCaptureSource(video, loop=True))
    capture.start()
    try:
        started = time.monotonic()
        first = capture.read(timeout=2.0)
        assert first is not None
        delivered = [first]
        for _ in range(4):
            time.sleep(0.25)  # a slow consumer
            frame = capture.read(delivered[-1].seq, timeout=1.0)
            assert frame is not None
            # The frame we get is the newest one grabbed, decoded just now, not a queued old one.
            assert frame.seq >= capture.frames_read - 1
            assert time.monotonic() - frame.captured_at < 0.2
            assert frame_index(frame.image) == (frame.seq - 1) % 60
            delivered.append(frame)
        elapsed = time.monotonic() - started
        seqs = [f.seq for f in delivered]
        assert all(b - a >= 4 for a, b in zip(seqs, seqs[1:]))  # ~7 frames skipped per 0.25 s
        stats = capture.stats()
        # Paced at the file's 30 fps, not as fast as the decoder goes (that would be thousands).
        assert 0.6 * 30 * elapsed <= stats["frames_read"] <= 30 * elapsed + 5
        assert stats["frames_delivered"] == len(delivered)
        assert stats["frames_dropped"] == stats["frames_read"] - len(delivered)
        assert 20 <= stats["source_fps"] <= 40
        assert capture.status == "connected"
    finally:
        t = time.monotonic()
        assert capture.stop()
        assert time.monotonic() - t < 2.0
    assert capture.status == "stopped"


def test_file_that_disappears_is_disconnected_then_reconnects(tmp_path: Path) -> None:
    video = write_video(tmp_path / "short.avi", frames=6, fps=30)
    backup = video.read_bytes()
    capture = Capture(VideoCaptureSource(video, loop=True), backoff_initial_s=0.1, backoff_max_s=0.5)
    capture.start()
    try:
        assert wait_until(lambda: capture.status == "connected", 3)
        video.unlink()
        gone = time.monotonic()
        assert wait_until(lambda: capture.status == "disconnected", 5)
        assert time.monotonic() - gone <= 5.0
        assert "not found" in (capture.last_error or "")
        video.write_bytes(backup)
        assert wait_until(lambda: capture.status == "connected", 5)
        assert capture.read(capture.frames_read, timeout=2.0) is not None
        assert capture.reconnects >= 1
    finally:
        assert capture.stop()


def test_file_without_loop_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "once.avi", frames=5, fps=50)
    capture = Capture(VideoCaptureSource(video, loop=False))
    capture.start()
    assert wait_until(lambda: capture.status == "ended", 3)
    assert capture.frames_read == 5
    capture.stop()


def test_unopenable_source_reports_disconnected_and_stops_fast(tmp_path: Path) -> None:
    capture = Capture(VideoCaptureSource(tmp_path / "missing.avi"), backoff_initial_s=0.05, backoff_max_s=10)
    capture.start()
    assert wait_until(lambda: capture.last_error is not None, 2)
    assert capture.status == "disconnected"
    time.sleep(0.6)  # let the backoff grow past the stop budget's share
    t = time.monotonic()
    assert capture.stop()
    assert time.monotonic() - t < 2.0


def _jpeg(value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((32, 48, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def test_push_source_decodes_only_newest_and_goes_stale() -> None:
    source = PushSource()
    capture = Capture(source, stall_timeout_s=0.4)
    capture.start()
    try:
        assert capture.status == "disconnected"  # nothing pushed yet
        for value in (10, 20, 30):
            source.push_jpeg(_jpeg(value))  # nobody consumes: older pushes are overwritten/dropped
        frame = capture.read(timeout=1.0)
        assert frame is None or frame.image.shape == (32, 48, 3)
        source.push_jpeg(_jpeg(200))
        frame = capture.read(0 if frame is None else frame.seq, timeout=1.0)
        assert frame is not None and abs(float(frame.image.mean()) - 200) < 3
        assert capture.status == "connected"
        assert capture.frames_dropped >= 2
        assert wait_until(lambda: capture.status == "disconnected", 2)
        source.push_jpeg(_jpeg(50))
        assert wait_until(lambda: capture.status == "connected", 1)
    finally:
        t = time.monotonic()
        assert capture.stop()
        assert time.monotonic() - t < 2.0


def test_open_source_parses_specs(tmp_path: Path) -> None:
    assert open_source("") is None
    assert isinstance(open_source("push"), PushSource)
    device = open_source("0")
    assert isinstance(device, VideoCaptureSource) and device.is_device and device.target == 0
    url = open_source("rtsp://user:secret@cam.local/stream", resolution="640x480")
    assert isinstance(url, VideoCaptureSource) and url.is_url and "secret" not in url.name
    file = open_source(str(tmp_path / "a.mp4"))
    assert isinstance(file, VideoCaptureSource) and file.is_file and file.loop
