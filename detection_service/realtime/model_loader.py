"""The detector in the holder: deployed models are loaded here, and nowhere else.

``ModelService.deploy_hook`` is ``ModelLoader.load`` (a deploy through the API swaps the model at
once); ``sync`` follows the model marked current in the database (Dagster deploys from another
process), and ``reload`` runs the loaded model with another backend or input size (a setting
change). Exports are cached; a model that failed to load is not retried for ``LOAD_RETRY_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from detection_service.errors import Unprocessable
from detection_service.pipeline.detector import DetectorHolder
from detection_service.services.models import ModelService
from schemas.detection import PipelineSettings

log = logging.getLogger(__name__)

LOAD_RETRY_S = 60.0  # a model that failed to load is not retried sooner (exports are expensive)
ModelState = Literal["none", "loading", "loaded", "error"]


class ModelLoader:
    def __init__(
        self, holder: DetectorHolder, model_service: ModelService, pipeline_settings: Callable[[], PipelineSettings]
    ) -> None:
        self.holder = holder
        self.model_service = model_service
        self.pipeline_settings = pipeline_settings  # backend and imgsz of the next load
        self._state: ModelState = "none"
        self.error: str | None = None
        self._loaded: tuple[str, Path] | None = None  # (model_id, weights) in the holder
        self._failed: dict[str, float] = {}  # model id -> monotonic time it may be tried again
        model_service.deploy_hook = self.load

    @property
    def state(self) -> ModelState:
        if self.holder.get() is not None:
            return "loaded"
        return "none" if self._state == "loaded" else self._state

    @property
    def loading(self) -> bool:
        return self._state == "loading"

    @property
    def last_error(self) -> str | None:
        return self.error or self.holder.load_error

    @property
    def loaded_model_id(self) -> str | None:
        return self._loaded[0] if self._loaded else None

    def load(self, model_id: str, weights: Path) -> None:
        """Build the detector (export cached) and swap it in; Unprocessable if it cannot load."""
        pipeline_settings = self.pipeline_settings()
        self._state = "loading" if self.holder.get() is None else self._state
        try:
            self.holder.load(Path(weights), pipeline_settings.backend, pipeline_settings.imgsz, model_id=model_id)
        except Exception as exc:
            self.error = f"{model_id}: {exc}"
            self._state = "loaded" if self.holder.get() is not None else "error"
            raise Unprocessable(f"model {model_id} could not be loaded: {exc}", code="MODEL_LOAD_FAILED") from exc
        self._loaded = (model_id, Path(weights))
        self._state, self.error = "loaded", None

    def reload(self, backend: str, imgsz: int | None) -> None:
        """The loaded model again with another backend/input size; raises if it cannot run so
        (the old detector stays). Nothing loaded: nothing to do."""
        if self._loaded is not None:
            model_id, weights = self._loaded
            self.holder.load(weights, backend, imgsz, model_id=model_id)

    def sync(self) -> None:
        """Load the model marked current in the database if another one is loaded (raises when
        the database is unreachable; a model that fails to load waits ``LOAD_RETRY_S``)."""
        current = self.model_service.current()
        if current is None or current.model_id == self.model_service.loaded_model_id:
            return
        if time.monotonic() < self._failed.get(current.model_id, 0.0):
            return
        try:
            self.model_service.sync_with_database()
        except Exception as exc:
            self._failed[current.model_id] = time.monotonic() + LOAD_RETRY_S
            log.warning("could not load model %s (retry in %.0f s): %s", current.model_id, LOAD_RETRY_S, exc)
