"""``/docs`` (Swagger UI) served from the app, so it works offline and behind firewalls.

FastAPI's default page loads Swagger UI from a CDN. The same files ship in the
``swagger-ui-bundle-v2`` package (Apache-2.0, Swagger UI 5, which renders OpenAPI 3.1);
they are mounted under ``/docs-assets``. ``/openapi.json`` needs the admin token (it maps
the admin surface), so the page asks for it, keeps it in the tab (``sessionStorage``)
and sends it with every request Swagger UI makes. ReDoc has no such package: it stays off.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "install_docs"]

ASSETS_PATH = "/docs-assets"
_PAGE = Path(__file__).with_name("web") / "docs.html"
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Swagger UI sets inline styles (React); everything else is the app's own.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}


def install_docs(app: FastAPI) -> None:
    """Call on an app created with ``docs_url=None, redoc_url=None``."""
    assets = Path(str(swagger_ui_bundle.swagger_ui_path))
    app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(_PAGE, headers=_HEADERS)

    @app.get(_OAUTH2_REDIRECT, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
