"""Gateway benchmark: quote requests per second and latency, beside a bare endpoint.

Both servers run the same way: uvicorn in a subprocess, one worker, our logging setup,
no uvicorn access log. The ceiling is a bare FastAPI app with one ``POST`` route that
validates a body of the same shape and returns a small JSON object. The gateway serves
``POST /v1/quotes`` for real: bearer key check, rate limit (set very high, so the
bucket is checked but never refuses), pricing with the active price book, the locked
quote written to SQLite, the JSON access log line, request metrics.

Load comes from this process: ``--concurrency`` clients on keep-alive connections
(httpx, asyncio) sending ``--requests`` requests after ``--warmup`` discarded ones.
Each server is measured ``--rounds`` times, alternating (bare, then quotes), and its
best round is shown. The headline ratio is the median over rounds of quotes/bare within
a round: the two halves of a round run back to back, under the same background load.
The server's CPU time per request is read from ``/proc`` as well.

    .venv/bin/python bench/bench_api.py --requests 3000 --concurrency 8 --rounds 4
"""

from __future__ import annotations

import sys

import httpx
from pydantic import BaseModel

from _harness import Send, compare, serve_bare

QUOTE = {"capability": "colorize.person", "width": 800, "height": 600, "options": {}}


class Body(BaseModel):
    """The bare endpoint's body: the same shape as a quote request."""

    capability: str
    width: int
    height: int
    options: dict[str, object] = {}


def bare_server(port: int) -> None:
    """The ceiling: a bare FastAPI endpoint under uvicorn, configured like ``serve``."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/quotes", status_code=201)
    async def quote(body: Body) -> dict[str, object]:
        return {"tokens": 11, "capability": body.capability, "width": body.width}

    serve_bare(app, port)


async def _send_quote(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v1/quotes", json=QUOTE)


def quotes(count: int) -> list[Send]:
    return [_send_quote] * count


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--bare-server":
        bare_server(int(sys.argv[2]))
        return
    compare(name="POST /v1/quotes", script=__file__, make_sends=quotes, expect=201,
            defaults=(3000, 300))  # fmt: skip


if __name__ == "__main__":
    main()
