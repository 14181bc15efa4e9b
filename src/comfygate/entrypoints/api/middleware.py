"""Request id, JSON access log and request metrics, as one plain ASGI middleware.

Plain ASGI (not ``BaseHTTPMiddleware``) because it sits on every request and must not
cost a task or a body copy. The request id comes from ``X-Request-ID`` when the client
sends a sane one, else it is made here; it is returned in ``X-Request-ID``, bound into
every log line of the request and put in problem+json bodies.

Metrics and logs are labelled by the route *template* (``/v1/jobs/{job_id}``), never
by the raw path, so ids do not explode label cardinality.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfygate.adapters.metrics import GatewayMetrics
from comfygate.domain.errors import RequestTooLargeError
from comfygate.entrypoints.api.errors import problem
from comfygate.entrypoints.api.logs import loggable_path, route_template

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
REQUEST_ID_HEADER = b"x-request-id"


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            candidate: str = value.decode("latin-1")
            if _SANE_ID.match(candidate):
                return candidate
            break
    # Not uuid4: its os.urandom is a system call, and every system call on the event
    # loop hands the GIL to whichever worker thread wants it. An id need not be secret.
    return f"{random.getrandbits(128):032x}"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods a metric's label names; any other is ``OTHER``: the server takes any
token as a method, and each new one would be a new series, unauthenticated."""


class RequestContextMiddleware:
    """Adds the request id, records ``comfygate_http_*`` metrics, logs one JSON line."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = structlog.get_logger("comfygate.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._observe(scope, request_id, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, request_id: str, status: int, elapsed_s: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = route_template(scope)
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.request_seconds.labels(method, route).observe(elapsed_s)
        principal: Any = scope.get("state", {}).get("principal")
        self.log.info(
            "request",
            request_id=request_id,
            method=method,
            path=loggable_path(scope),
            route=route,
            status=status,
            duration_ms=round(elapsed_s * 1000, 3),
            key_id=getattr(principal, "key_id", None),
            account_id=getattr(principal, "account_id", None),
        )


MAX_BODY_BYTES = 4 * 1024 * 1024
"""A JSON body's limit: a price book travels in one (its TOML may be 500,000
characters, which JSON may spell in six bytes each); uploads have their own."""
UPLOADS = frozenset({("POST", "/v1/jobs"), ("POST", "/v1/quotes")})
"""The routes that stream a multipart body through ``uploads.read_upload``."""


class BodyLimitMiddleware:
    """Stops reading a request body past ``max_bytes`` with ``RequestTooLargeError``
    (413). A multipart body sent to an upload route (``UPLOADS``) is left to
    ``uploads.read_upload``, which caps the file and the fields as it streams them;
    anywhere else a body is read whole (parsed, even before the key is checked), so
    without this one request could hold any amount of memory.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_upload(scope):
            await self.app(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes
        if _declared_length(scope) > limit:  # refused before a byte of it is read
            message = f"the request body exceeds {limit} bytes"
            response = problem(
                Request(scope), status=413, code="request_too_large", message=message
            )
            await response(scope, receive, send)
            return

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLargeError(f"the request body exceeds {limit} bytes")
            return message

        await self.app(scope, limited, send)


def _declared_length(scope: Scope) -> int:
    """The body's ``Content-Length`` (0 if it gives none, or none that is a number)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) <= 18 else 0
    return 0


def _is_upload(scope: Scope) -> bool:
    if (scope.get("method"), scope.get("path")) not in UPLOADS:
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bool(value.lower().startswith(b"multipart/form-data"))
    return False
