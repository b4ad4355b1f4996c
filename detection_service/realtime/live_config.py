"""The pipeline's knobs, changed live.

Two ways in, one way to apply: ``PUT /api/detection/config`` (``configure``: knobs and detection
settings in one body, every key validated before anything changes) and ``PUT
/api/settings/pipeline`` (the settings service stores them and calls ``on_stored``). Both swap the
detector when ``backend``/``imgsz`` change (``ModelLoader.reload``) and hand the knobs to the
pipeline (``DetectionPipeline.apply_knobs``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import msgspec

from detection_service.errors import Invalid, Unprocessable
from detection_service.pipeline.runner import DetectionPipeline
from detection_service.realtime.model_loader import ModelLoader
from detection_service.services.settings import InvalidSettings, SettingsService
from schemas.detection import DETECTION_SETTING_KEYS, DETECTOR_KEYS, PIPELINE_SETTINGS_CATEGORY, PipelineKnobs
from schemas.settings import DetectionSettings

log = logging.getLogger(__name__)


def load_knobs(settings_service: SettingsService) -> PipelineKnobs:
    """The stored knobs; the defaults while the database does not answer (start-up)."""
    try:
        return settings_service.get(PIPELINE_SETTINGS_CATEGORY)  # type: ignore[return-value]
    except Exception as exc:
        log.error("could not read the pipeline knobs (%s); using defaults", exc)
        return PipelineKnobs()


class LiveConfig:
    def __init__(
        self,
        knobs: PipelineKnobs,
        settings_service: SettingsService,
        pipeline: DetectionPipeline,
        models: ModelLoader,
        lock: threading.RLock,
    ) -> None:
        self.knobs = knobs
        self.settings_service = settings_service
        self.pipeline = pipeline
        self.models = models
        self._lock = lock  # the pipeline service's control lock
        self._in_flight: PipelineKnobs | None = None

    def on_stored(self, value: msgspec.Struct) -> None:
        """Knobs changed through ``PUT /api/settings/pipeline`` apply live too."""
        if value == self._in_flight:
            return  # configure() below applies its own change
        assert isinstance(value, PipelineKnobs)
        with self._lock:
            old, self.knobs = self.knobs, value
            if _detector_changed(old, value):
                try:
                    self.models.reload(value.backend, value.imgsz)
                except Exception as exc:
                    log.error(
                        "pipeline settings: %s cannot run with backend=%s imgsz=%s: %s",
                        self.models.loaded_model_id,
                        value.backend,
                        value.imgsz,
                        exc,
                    )
            self.pipeline.apply_knobs(value)

    def configure(self, changes: Any) -> None:
        """``PUT /api/detection/config``: validate every key first (all problems listed, nothing
        applied on any), then swap the detector if backend/imgsz changed, then store and apply."""
        if not isinstance(changes, dict) or not changes:
            raise Invalid("the body must be a non-empty JSON object", [], code="INVALID_CONFIG")
        knob_fields = set(PipelineKnobs.__struct_fields__)
        problems: list[dict[str, Any]] = [
            {"key": key, "message": "unknown key"}
            for key in sorted(set(changes) - knob_fields - set(DETECTION_SETTING_KEYS), key=str)
        ]
        detection_changes = {k: v for k, v in changes.items() if k in DETECTION_SETTING_KEYS}
        knob_changes = {k: v for k, v in changes.items() if k in knob_fields}
        current_detection = msgspec.to_builtins(self.settings_service.get("detection"))
        current_knobs = msgspec.to_builtins(self.knobs)
        for key, value in detection_changes.items():
            problems += _problem(key, {**current_detection, key: value}, DetectionSettings)
        for key, value in knob_changes.items():
            problems += _problem(key, {**current_knobs, key: value}, PipelineKnobs)
        if problems:
            keys = ", ".join(str(p["key"]) for p in problems)
            raise Invalid(f"invalid detection config ({keys}); nothing was changed", problems, code="INVALID_CONFIG")
        new_knobs = msgspec.convert({**current_knobs, **knob_changes}, PipelineKnobs)
        with self._lock:
            if _detector_changed(self.knobs, new_knobs):
                try:
                    self.models.reload(new_knobs.backend, new_knobs.imgsz)
                except Exception as exc:
                    raise Unprocessable(
                        f"{self.models.loaded_model_id} cannot run with backend={new_knobs.backend} "
                        f"imgsz={new_knobs.imgsz}: {exc}; nothing was changed",
                        {"backend": new_knobs.backend, "imgsz": new_knobs.imgsz},
                        code="BACKEND_UNAVAILABLE",
                    ) from None
            if detection_changes:
                try:
                    self.settings_service.update("detection", detection_changes)  # stores + notifies the pipeline
                except InvalidSettings as exc:  # raced with another change
                    raise Invalid(str(exc), exc.details, code="INVALID_CONFIG") from None
            if knob_changes:
                self._in_flight = new_knobs
                try:
                    self.settings_service.update(PIPELINE_SETTINGS_CATEGORY, knob_changes)
                except InvalidSettings as exc:  # raced with another change
                    raise Invalid(str(exc), exc.details, code="INVALID_CONFIG") from None
                finally:
                    self._in_flight = None
            self.knobs = new_knobs
            self.pipeline.apply_knobs(new_knobs)


def _detector_changed(old: PipelineKnobs, new: PipelineKnobs) -> bool:
    return any(getattr(new, k) != getattr(old, k) for k in DETECTOR_KEYS)


def _problem(key: str, candidate: dict[str, Any], struct_type: type[msgspec.Struct]) -> list[dict[str, Any]]:
    try:
        msgspec.convert(candidate, struct_type)
    except msgspec.ValidationError as exc:
        return [{"key": key, "message": str(exc).split(" - at ")[0], "value": candidate[key]}]
    return []
