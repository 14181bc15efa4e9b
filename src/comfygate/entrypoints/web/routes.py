"""The operator dashboard (SPEC §6): ``GET /dashboard`` and its script and style.

The page is static and needs no key; its script asks ``/v1/reports/usage`` with the key
the operator types in, and draws everything itself. The files ship in this package and
are read on first use (never at import). ``/web/{name}`` serves only the files named in
``ASSETS``: any other name is a 404, so nothing else in the package can be read.
Everything is same-origin (the gateway works offline), and the page's
Content-Security-Policy says so to the browser.
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
}
"""The files ``/web/{name}`` serves, with their content types."""

_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("comfygate.entrypoints.web").joinpath(name).read_bytes()


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    headers = {**_HEADERS, "Content-Security-Policy": _PAGE_POLICY}
    return HTMLResponse(_read("dashboard.html"), headers=headers)


@router.get("/web/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"no web asset named {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)
