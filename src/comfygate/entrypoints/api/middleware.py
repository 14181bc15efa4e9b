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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfygate.adapters.metrics import GatewayMetrics

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


def _route_template(scope: Scope) -> str:
    path: object = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


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
        method = scope["method"]
        route = _route_template(scope)
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.request_seconds.labels(method, route).observe(elapsed_s)
        principal: Any = scope.get("state", {}).get("principal")
        self.log.info(
            "request",
            request_id=request_id,
            method=method,
            path=scope["path"],
            route=route,
            status=status,
            duration_ms=round(elapsed_s * 1000, 3),
            key_id=getattr(principal, "key_id", None),
            account_id=getattr(principal, "account_id", None),
        )
