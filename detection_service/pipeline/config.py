"""The pipeline's configuration, defined once.

``PipelineKnobs`` (schemas/detection.py) are the knobs a user changes live (``PUT
/api/detection/config``, ``PUT /api/settings/pipeline``; stored in ``system_settings``).
``PipelineConfig`` is those knobs plus the limits that are not knobs (motion downscale width,
reconnect and write-retry backoff, re-adoption, the capture memory budget). The pipeline, its
motion gate, its capture and its event recorder all read the one ``PipelineConfig`` the pipeline
holds; ``DetectionPipeline.apply_knobs`` swaps in new knob values.
"""

from __future__ import annotations

import msgspec

from detection_service.ml.training import SENSITIVITY_FLOOR_FACTOR
from schemas.detection import PipelineKnobs


class PipelineConfig(PipelineKnobs, kw_only=True):
    # Motion gate
    motion_width: int = 160  # frames are scaled to this width before differencing
    # Capture
    backoff_max_s: float = 10.0  # re-open a lost source at most this far apart
    # Events (the confirmation and end knobs are PipelineKnobs fields)
    readopt_iou: float = 0.3  # a new track this close to an orphaned open event continues it
    orphan_after_s: float = 0.3  # an event whose track was not seen for this long can be re-adopted
    max_absence_step_s: float = 2.0  # absence only accrues while the detector runs (gaps capped)
    max_pending_image_bytes: int = 256 * 1024 * 1024
    retry_initial_s: float = 0.5  # a failed database/store write is retried after this, doubling ...
    retry_max_s: float = 30.0  # ... up to this

    def __post_init__(self) -> None:
        # A direct construction is not validated by msgspec's constraints: check what would break.
        if self.motion_mode not in ("on", "off"):
            raise ValueError("motion_mode must be 'on' or 'off'")
        if self.sensitivity not in SENSITIVITY_FLOOR_FACTOR:
            raise ValueError(f"sensitivity must be one of {sorted(SENSITIVITY_FLOOR_FACTOR)}")
        if self.full_check_interval_s <= 0 or self.refresh_interval_s <= 0 or self.stall_timeout_s <= 0:
            raise ValueError("intervals must be positive")

    @property
    def knobs(self) -> PipelineKnobs:
        return PipelineKnobs(**{name: getattr(self, name) for name in PipelineKnobs.__struct_fields__})

    def with_changes(self, **changes: object) -> PipelineConfig:
        """A validated copy with ``changes`` (knobs or limits); ValueError if one is invalid."""
        try:
            return msgspec.convert({**msgspec.to_builtins(self), **changes}, PipelineConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None

    def with_knobs(self, knobs: PipelineKnobs) -> PipelineConfig:
        return self.with_changes(**msgspec.structs.asdict(knobs))
