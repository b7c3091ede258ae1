"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with every script, style and icon served by the service
itself, for sites without internet where FastAPI's CDN-loaded pages stay blank.

The files come from the ``fastapi-offline`` package (MIT; Swagger UI is Apache-2.0, ReDoc MIT), which
ships them as package data; its own app wrapper is not used because the pages also need a
``Content-Security-Policy`` that keeps the browser on this host, and ReDoc's bundle names one image
on its vendor's CDN (the side menu's logo), which is served here rewritten to the local icon.
"""

from __future__ import annotations

import functools
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
REDOC_CDN_IMAGE = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
# Same-origin everything; FastAPI's pages carry one inline script and ReDoc renders with inline styles
# and a blob: worker.
SAME_ORIGIN_ONLY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


@functools.cache
def _redoc_bundle(icon: str) -> bytes:
    """ReDoc's 1 MB bundle with its CDN logo pointed at ``icon``: read and patched once per process, not
    once per app (every service, and every app a test builds, installs these pages)."""
    return (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_CDN_IMAGE, icon.encode())


def install_offline_docs(app: FastAPI, assets_url: str) -> None:
    """Serve the assets under ``assets_url`` and the two pages; the app must be made with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not there too."""
    headers = {"content-security-policy": SAME_ORIGIN_ONLY}
    icon = f"{assets_url}/favicon.png"
    redoc_js = _redoc_bundle(icon)

    @app.get(f"{assets_url}/redoc.standalone.js", include_in_schema=False)
    async def redoc_bundle() -> Response:  # before the mount, so this one answers
        return Response(redoc_js, media_type="text/javascript")

    app.mount(assets_url, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{assets_url}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets_url}/swagger-ui.css", swagger_favicon_url=icon)
        page.headers.update(headers)
        return page

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{assets_url}/redoc.standalone.js", redoc_favicon_url=icon,
                              with_google_fonts=False)
        page.headers.update(headers)
        return page
