"""The pipeline's configuration, defined once.

``PipelineSettings`` (schemas/detection.py) are the pipeline_settings a user changes live (``PUT
/api/detection/config``, ``PUT /api/settings/pipeline``; stored in ``system_settings``).
``PipelineConfig`` is those pipeline_settings plus the limits that are not pipeline_settings (motion downscale width,
reconnect and write-retry backoff, re-adoption, the capture memory budget). The pipeline, its
motion gate, its capture and its event recorder all read the one ``PipelineConfig`` the pipeline
holds; ``DetectionPipeline.apply_pipeline_settings`` swaps in new values.
"""

from __future__ import annotations

import msgspec

from detection_service.ml.training import SENSITIVITY_FLOOR_FACTOR
from schemas.detection import PipelineSettings


class PipelineConfig(PipelineSettings, kw_only=True):
    # Motion gate
    motion_width: int = 160  # frames are scaled to this width before differencing
    # Capture
    backoff_max_s: float = 10.0  # re-open a lost source at most this far apart
    # Events (the confirmation and end settings are PipelineSettings fields)
    readopt_iou: float = 0.3  # a new track this close to an orphaned open event continues it
    orphan_after_s: float = 0.3  # an event whose track was not seen for this long can be re-adopted
    max_absence_step_s: float = 2.0  # absence only accrues while the detector runs (gaps capped)
    max_pending_image_bytes: int = 256 * 1024 * 1024
    retry_initial_s: float = 0.5  # a failed database/store write is retried after this, doubling ...
    retry_max_s: float = 30.0  # ... up to this
    # The writer's local journal (pipeline/journal.py): a directory, or None for none (tests of
    # the recorder alone); the service sets <data dir>/journal. Bounded to journal_max_bytes.
    journal_dir: str | None = None
    journal_max_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        # A direct construction is not validated by msgspec's constraints: check what would break.
        if self.motion_mode not in ("on", "off"):
            raise ValueError("motion_mode must be 'on' or 'off'")
        if self.sensitivity not in SENSITIVITY_FLOOR_FACTOR:
            raise ValueError(f"sensitivity must be one of {sorted(SENSITIVITY_FLOOR_FACTOR)}")
        if self.journal_max_bytes <= 0:
            raise ValueError("journal_max_bytes must be positive")
        if self.full_check_interval_s <= 0 or self.refresh_interval_s <= 0 or self.stall_timeout_s <= 0:
            raise ValueError("intervals must be positive")

    @property
    def pipeline_settings(self) -> PipelineSettings:
        return PipelineSettings(**{name: getattr(self, name) for name in PipelineSettings.__struct_fields__})

    def with_changes(self, **changes: object) -> PipelineConfig:
        """A validated copy with ``changes`` (pipeline settings or limits); ValueError if one is invalid."""
        try:
            return msgspec.convert({**msgspec.to_builtins(self), **changes}, PipelineConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None

    def with_pipeline_settings(self, pipeline_settings: PipelineSettings) -> PipelineConfig:
        return self.with_changes(**msgspec.structs.asdict(pipeline_settings))
