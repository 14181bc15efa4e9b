"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (the database
answers ``SELECT 1`` and every registered readiness check passes), ``/metrics``.

Readiness checks are ``container.readiness_checks``: name -> async callable returning
True when ready (the jobs side registers the engines there). A check that raises or
returns False makes ``/readyz`` answer 503 with the failing names.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from comfygate.bootstrap import Container
from comfygate.entrypoints.api.deps import ContainerDep

router = APIRouter(tags=["health"])


def _database_ready(container: Container) -> bool:
    with container.engine.connect() as conn:
        return bool(conn.execute(sa.text("SELECT 1")).scalar_one() == 1)


async def _run_checks(container: Container) -> dict[str, Any]:
    results: dict[str, Any] = {}
    try:
        results["database"] = await anyio.to_thread.run_sync(_database_ready, container)
    except Exception as exc:  # any failure means "not ready"
        results["database"] = f"error: {type(exc).__name__}"
    for name, check in container.readiness_checks.items():
        try:
            results[name] = bool(await check())
        except Exception as exc:
            results[name] = f"error: {type(exc).__name__}: {exc}"
    return results


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database and engines", response_model=None)
async def readyz(container: ContainerDep) -> JSONResponse:
    checks = await _run_checks(container)
    ready = all(value is True for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(container: ContainerDep) -> Response:
    return Response(container.metrics.render(), media_type=container.metrics.content_type)
