from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, put

from detection_service.api.responses import ApiError, ok
from detection_service.services.settings import InvalidSettings, SettingsService, UnknownCategory
from schemas.envelope import Envelope
from schemas.settings import SETTINGS_CATEGORIES


def _service(request: Request[Any, Any, Any]) -> SettingsService:
    return request.app.state.settings_service


class SettingsController(Controller):
    path = "/api/settings"
    tags = ["Settings"]

    @get("/", summary="All settings, by category")
    async def get_all(self, request: Request[Any, Any, Any]) -> Response[Envelope[dict[str, Any]]]:
        return ok(_service(request).get_all())

    @get("/{category:str}", summary="One category: camera, storage, detection or notification")
    async def get_category(self, request: Request[Any, Any, Any], category: str) -> Response[Envelope[Any]]:
        try:
            return ok(_service(request).get(category))
        except UnknownCategory:
            raise _unknown(category) from None

    @put("/{category:str}", summary="Change some settings of one category (validated as a whole)")
    async def put_category(
        self, request: Request[Any, Any, Any], category: str, data: dict[str, Any]
    ) -> Response[Envelope[Any]]:
        try:
            return ok(_service(request).update(category, data), message=f"{category} settings updated")
        except UnknownCategory:
            raise _unknown(category) from None
        except InvalidSettings as exc:
            raise ApiError(400, "INVALID_SETTINGS", str(exc), exc.details) from None


def _unknown(category: str) -> ApiError:
    return ApiError(
        404, "NOT_FOUND", f"unknown settings category {category!r}", {"categories": sorted(SETTINGS_CATEGORIES)}
    )
