"""The dashboard (docs/dashboard.md): ``/`` serves the single page, ``/web/...`` its script, stylesheet
and the vendored Alpine.js. The page is static; everything it shows comes from the public REST API
(``/api/...``) and the live stream ``/api/live/events``, so the API stays complete."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

WEB_DIR = Path(__file__).resolve().parents[1] / "web"


@lru_cache(maxsize=1)
def _index_page() -> bytes:
    return (WEB_DIR / "index.html").read_bytes()


class DashboardController(Controller):
    path = "/"
    tags = ["Dashboard"]
    include_in_schema = False  # a page, not an API

    @get("/", media_type=MediaType.HTML)
    async def index(self) -> Response[bytes]:
        # A login page goes in front of this once authentication (#14) exists.
        return Response(_index_page(), media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})


# The page's assets. no-cache: the browser revalidates (ETag), so an upgrade is seen at once.
dashboard_assets = create_static_files_router(
    path="/web", directories=[WEB_DIR], name="dashboard-assets", cache_control=CacheControlHeader(no_cache=True)
)
