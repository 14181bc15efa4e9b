"""Structured logs: one JSON object per line on stderr.

Our own log calls go through structlog straight to stderr (fast: no stdlib logging on
the request path); records from libraries that use stdlib ``logging`` (uvicorn,
alembic) are rendered as the same JSON by structlog's ``ProcessorFormatter``.
Configured once by ``comfygate serve`` (not at import, not by ``create_app``, so tests
and embedding applications keep their own logging).
"""

from __future__ import annotations

import logging
import sys

import structlog
from starlette.types import Scope
from structlog.typing import Processor


def configure_logging(level: str = "info") -> None:
    """JSON lines at ``level`` and above, ISO UTC timestamps, for structlog and stdlib."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/jobs/{job_id}``), or ``unmatched``."""
    path: object = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


_SECRET_PARAMS = ("{token}",)
"""Path parameters that are credentials (a share link): logged as the template."""


def loggable_path(scope: Scope) -> str:
    """The request's path for a log line: the route's template where the path carries
    a credential (anyone reading the logs could fetch a shared result), else as sent."""
    route = route_template(scope)
    if any(secret in route for secret in _SECRET_PARAMS):
        return route
    path: str = scope["path"]
    return path
