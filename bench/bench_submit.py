"""Submit benchmark: ``POST /v1/jobs`` per second and latency, beside a bare endpoint.

Both servers run the same way: uvicorn in a subprocess, one worker, our logging setup,
no uvicorn access log. The ceiling is a bare FastAPI app whose ``POST /v1/jobs``
takes the same multipart upload (FastAPI's ``UploadFile`` and ``Form``), reads the
file and returns a small JSON object. The gateway serves the real thing on SQLite:
bearer key check, rate limit (set very high), the upload streamed to disk with SHA-256
and MD5, the header inspected, the price, the duplicate check, the hold placed in the
ledger, the job and its first event stored, the job queued, audit entry, metrics, the
access log line. Its in-process dispatcher runs the jobs on the ``preview`` engine at
the same time, as it would in production.

Every request uploads a different small PNG (64x48, about 200 bytes), so none is a
duplicate. Load comes from this process: ``--concurrency`` clients on keep-alive
connections (httpx, asyncio) sending ``--requests`` requests after ``--warmup``
discarded ones. Each server is measured ``--rounds`` times, alternating; the best
round of each and the median of the per-round ratios are shown.

    .venv/bin/python bench/bench_submit.py --requests 2000 --concurrency 16 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
from typing import Annotated

import httpx
from fastapi import File, Form, UploadFile
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from _harness import Result, Send, gateway_env, measure, new_customer, report, serve_bare, server

CAPABILITY = "colorize.person"


def bare_server(port: int) -> None:
    """The ceiling: a bare FastAPI multipart endpoint under uvicorn, like ``serve``."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit(
        image: Annotated[UploadFile, File()], capability: Annotated[str, Form()]
    ) -> dict[str, object]:
        data = await image.read()
        return {"id": "job_x", "state": "queued", "capability": capability, "bytes": len(data)}

    serve_bare(app, port)


_counter = itertools.count()


def photo() -> bytes:
    """A small grey PNG, different every call (a text chunk carries a counter)."""
    info = PngInfo()
    info.add_text("n", str(next(_counter)))
    buf = io.BytesIO()
    Image.new("L", (64, 48), 120).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


async def _send_photo(body: bytes, client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        "/v1/jobs",
        files={"image": ("photo.png", body, "image/png")},
        data={"capability": CAPABILITY},
    )


def submissions(count: int) -> list[Send]:
    return [functools.partial(_send_photo, photo()) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.bare_server:
        bare_server(a.bare_server)
        return
    tmp, env = gateway_env("bench-submit-")
    run = {"requests": a.requests, "warmup": a.warmup, "concurrency": a.concurrency}
    bare: list[Result] = []
    gateway: list[Result] = []
    gateway_args = ["-m", "comfygate", "serve", "--port"]
    with server(gateway_args, env, tmp / "gateway.log") as (gw_base, proc):
        assert proc.stdout is not None
        tokens = 10 * (a.requests + a.warmup) * a.rounds + 100
        gw_headers = new_customer(gw_base, proc.stdout.readline(), tokens=tokens)
        with server([__file__, "--bare-server"], env, tmp / "bare.log") as (bare_base, bare_proc):
            for _ in range(a.rounds):
                bare.append(measure(bare_base, {}, bare_proc.pid, submissions, expect=202, **run))
                gateway.append(
                    measure(gw_base, gw_headers, proc.pid, submissions, expect=202, **run)
                )
    report("POST /v1/jobs", bare, gateway, a.concurrency)


if __name__ == "__main__":
    main()
