"""The demo video: what the pipeline plays while no camera source is configured.

``Settings.demo_video`` (``AIDOOR_DEMO_VIDEO``) is the policy: ``auto``/``on`` (the default file
under the data folder, built on a background thread when missing), ``off``, or a path to play.
docs/pipeline.md, "Service wiring".
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from detection_service import demo_video
from schemas.settings import CameraSettings

log = logging.getLogger(__name__)

_OFF = ("off", "0", "false", "no", "none")
_ON = ("auto", "on", "1", "true", "yes")


class DemoSource:
    def __init__(self, data_dir: Path, policy: str) -> None:
        self.data_dir = data_dir
        self.policy = policy
        self.path: Path | None = self._existing()  # the file to play; None: none (yet)

    def _existing(self) -> Path | None:
        policy = self.policy.lower()
        if policy in _OFF:
            return None
        path = demo_video.default_path(self.data_dir) if policy in ("", *_ON) else Path(self.policy).expanduser()
        return path if path.is_file() else None

    def wants_build(self, camera: CameraSettings) -> bool:
        """No file yet, no camera source, and a policy that asks for the built-in video."""
        return self.path is None and not camera.source.strip() and self.policy.lower() in _ON

    def build(self) -> Path | None:
        """Build the default demo video (slow: call on a background thread); None on failure."""
        try:
            return demo_video.ensure(self.data_dir)
        except Exception:
            log.exception("building the demo video failed")
            return None

    def effective(self, camera: CameraSettings) -> CameraSettings:
        """The camera settings the pipeline gets: the demo file as source when none is set."""
        if not camera.source.strip() and self.path is not None:
            return msgspec.structs.replace(camera, source=str(self.path))
        return camera

    def active(self, camera: CameraSettings) -> bool:
        return self.path is not None and not camera.source.strip()
