"""The pipeline settings, changed live.

Two ways in, one way to apply: ``PUT /api/detection/config`` (``configure``: pipeline_settings and detection
settings in one body, every key validated before anything changes) and ``PUT
/api/settings/pipeline`` (the settings service stores them and calls ``on_stored``). Both swap the
detector when ``backend``/``imgsz`` change (``ModelLoader.reload``) and hand the pipeline_settings to the
pipeline (``DetectionPipeline.apply_pipeline_settings``).
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
from schemas.detection import DETECTION_SETTING_KEYS, DETECTOR_KEYS, PIPELINE_SETTINGS_CATEGORY, PipelineSettings
from schemas.settings import DetectionSettings

log = logging.getLogger(__name__)


def load_pipeline_settings(settings_service: SettingsService) -> PipelineSettings:
    """The stored pipeline settings; the defaults while the database does not answer (start-up)."""
    try:
        return settings_service.get(PIPELINE_SETTINGS_CATEGORY)  # type: ignore[return-value]
    except Exception as exc:
        log.error("could not read the pipeline pipeline_settings (%s); using defaults", exc)
        return PipelineSettings()


class LiveConfig:
    def __init__(
        self,
        pipeline_settings: PipelineSettings,
        settings_service: SettingsService,
        pipeline: DetectionPipeline,
        models: ModelLoader,
        lock: threading.RLock,
    ) -> None:
        self.pipeline_settings = pipeline_settings
        self.settings_service = settings_service
        self.pipeline = pipeline
        self.models = models
        self._lock = lock  # the pipeline service's control lock
        self._in_flight: PipelineSettings | None = None

    def on_stored(self, value: msgspec.Struct) -> None:
        """Pipeline settings changed through ``PUT /api/settings/pipeline`` apply live too."""
        if value == self._in_flight:
            return  # configure() below applies its own change
        assert isinstance(value, PipelineSettings)
        with self._lock:
            old, self.pipeline_settings = self.pipeline_settings, value
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
            self.pipeline.apply_pipeline_settings(value)

    def configure(self, changes: Any) -> None:
        """``PUT /api/detection/config``: validate every key first (all problems listed, nothing
        applied on any), then swap the detector if backend/imgsz changed, then store and apply."""
        if not isinstance(changes, dict) or not changes:
            raise Invalid("the body must be a non-empty JSON object", [], code="INVALID_CONFIG")
        setting_fields = set(PipelineSettings.__struct_fields__)
        problems: list[dict[str, Any]] = [
            {"key": key, "message": "unknown key"}
            for key in sorted(set(changes) - setting_fields - set(DETECTION_SETTING_KEYS), key=str)
        ]
        detection_changes = {k: v for k, v in changes.items() if k in DETECTION_SETTING_KEYS}
        setting_changes = {k: v for k, v in changes.items() if k in setting_fields}
        current_detection = msgspec.to_builtins(self.settings_service.get("detection"))
        current_pipeline_settings = msgspec.to_builtins(self.pipeline_settings)
        for key, value in detection_changes.items():
            problems += _problem(key, {**current_detection, key: value}, DetectionSettings)
        for key, value in setting_changes.items():
            problems += _problem(key, {**current_pipeline_settings, key: value}, PipelineSettings)
        if problems:
            keys = ", ".join(str(p["key"]) for p in problems)
            raise Invalid(f"invalid detection config ({keys}); nothing was changed", problems, code="INVALID_CONFIG")
        new_pipeline_settings = msgspec.convert({**current_pipeline_settings, **setting_changes}, PipelineSettings)
        with self._lock:
            if _detector_changed(self.pipeline_settings, new_pipeline_settings):
                try:
                    self.models.reload(new_pipeline_settings.backend, new_pipeline_settings.imgsz)
                except Exception as exc:
                    raise Unprocessable(
                        f"{self.models.loaded_model_id} cannot run with backend={new_pipeline_settings.backend} "
                        f"imgsz={new_pipeline_settings.imgsz}: {exc}; nothing was changed",
                        {"backend": new_pipeline_settings.backend, "imgsz": new_pipeline_settings.imgsz},
                        code="BACKEND_UNAVAILABLE",
                    ) from None
            if detection_changes:
                try:
                    self.settings_service.update("detection", detection_changes)  # stores + notifies the pipeline
                except InvalidSettings as exc:  # raced with another change
                    raise Invalid(str(exc), exc.details, code="INVALID_CONFIG") from None
            if setting_changes:
                self._in_flight = new_pipeline_settings
                try:
                    self.settings_service.update(PIPELINE_SETTINGS_CATEGORY, setting_changes)
                except InvalidSettings as exc:  # raced with another change
                    raise Invalid(str(exc), exc.details, code="INVALID_CONFIG") from None
                finally:
                    self._in_flight = None
            self.pipeline_settings = new_pipeline_settings
            self.pipeline.apply_pipeline_settings(new_pipeline_settings)


def _detector_changed(old: PipelineSettings, new: PipelineSettings) -> bool:
    return any(getattr(new, k) != getattr(old, k) for k in DETECTOR_KEYS)


def _problem(key: str, candidate: dict[str, Any], struct_type: type[msgspec.Struct]) -> list[dict[str, Any]]:
    try:
        msgspec.convert(candidate, struct_type)
    except msgspec.ValidationError as exc:
        return [{"key": key, "message": str(exc).split(" - at ")[0], "value": candidate[key]}]
    return []
