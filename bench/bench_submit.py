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

import functools
import io
import itertools
import sys
from typing import Annotated

import httpx
from fastapi import File, Form, UploadFile
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from _harness import Send, compare, serve_bare

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
    if len(sys.argv) == 3 and sys.argv[1] == "--bare-server":
        bare_server(int(sys.argv[2]))
        return
    compare(name="POST /v1/jobs", script=__file__, make_sends=submissions, expect=202,
            defaults=(2000, 200), tokens_per_request=10)  # fmt: skip


if __name__ == "__main__":
    main()
