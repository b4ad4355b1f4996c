"""Settings API (seed): the four product categories; unknown categories 404, invalid changes 400
(``SettingsService`` raises ``UnknownCategory`` / ``InvalidSettings``, domain errors)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, put

from detection_service.api.responses import ok
from detection_service.services.settings import SettingsService
from schemas.envelope import Envelope


class SettingsController(Controller):
    path = "/api/settings"
    tags = ["Settings"]

    @get("/", sync_to_thread=True, summary="All settings, by category")
    def get_all(self, settings_service: SettingsService) -> Response[Envelope[dict[str, Any]]]:
        return ok(settings_service.get_all())

    @put(
        "/",
        sync_to_thread=True,
        summary="Change any subset of categories at once: all of it or nothing",
        description='Body: {category: {setting: value}}, e.g. {"camera": {"fps": 20}, "storage": '
        '{"max_days": 7}}. Every category is validated first; one invalid value (or unknown category or key) '
        "answers 400 INVALID_SETTINGS listing every problem and changes nothing. Returns the changed categories.",
    )
    def put_all(self, settings_service: SettingsService, data: dict[str, Any]) -> Response[Envelope[dict[str, Any]]]:
        updated = settings_service.update_many(data)
        return ok(updated, message=f"settings updated: {', '.join(updated)}")

    @get("/{category:str}", sync_to_thread=True, summary="One category: camera, storage, detection or notification")
    def get_category(self, settings_service: SettingsService, category: str) -> Response[Envelope[Any]]:
        return ok(settings_service.get(category))

    @put("/{category:str}", sync_to_thread=True, summary="Change some settings of one category (validated as a whole)")
    def put_category(
        self, settings_service: SettingsService, category: str, data: dict[str, Any]
    ) -> Response[Envelope[Any]]:
        return ok(settings_service.update(category, data), message=f"{category} settings updated")
