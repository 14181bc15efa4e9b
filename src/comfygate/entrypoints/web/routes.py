"""The web pages of SPEC §6: the operator dashboard (``GET /dashboard``) and the end
user's page (``GET /app``), with their scripts and styles.

The pages are static and need no key; their scripts call ``/v1`` with the key the
person types in (the dashboard reads ``/v1/reports/usage``; the user page quotes,
submits, follows and buys). The files ship in this package and are read on first use
(never at import). ``/web/{name}`` serves only the files named in ``ASSETS``: any
other name is a 404, so nothing else in the package can be read. Everything is
same-origin (the gateway works offline), and each page's Content-Security-Policy says
so to the browser.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from comfygate.domain.errors import NotFoundError

router = APIRouter()

ASSETS: dict[str, str] = {
    "base.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
"""The files ``/web/{name}`` serves, with their content types."""

_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _page_policy(img_src: str) -> str:
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {img_src}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


_DASHBOARD_POLICY = _page_policy("'self'")
_APP_POLICY = _page_policy("'self' blob:")
"""The user page shows the photo picked and the result fetched with the key as ``blob:``
URLs made by its own script (an ``<img>`` cannot send the key itself)."""


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("comfygate.entrypoints.web").joinpath(name).read_bytes()


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    headers = {**_HEADERS, "Content-Security-Policy": _DASHBOARD_POLICY}
    return HTMLResponse(_read("dashboard.html"), headers=headers)


@router.get("/app", response_class=HTMLResponse)
async def user_page() -> HTMLResponse:
    headers = {**_HEADERS, "Content-Security-Policy": _APP_POLICY}
    return HTMLResponse(_read("app.html"), headers=headers)


@router.get("/web/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"no web asset named {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)
