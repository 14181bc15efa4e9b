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

import argparse

import httpx
from pydantic import BaseModel

from _harness import Result, Send, gateway_env, measure, new_customer, report, serve_bare, server

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.bare_server:
        bare_server(a.bare_server)
        return
    tmp, env = gateway_env("bench-api-")
    run = {"requests": a.requests, "warmup": a.warmup, "concurrency": a.concurrency}
    bare: list[Result] = []
    gateway: list[Result] = []
    gateway_args = ["-m", "comfygate", "serve", "--port"]
    with server(gateway_args, env, tmp / "gateway.log") as (gw_base, proc):
        assert proc.stdout is not None
        gw_headers = new_customer(gw_base, proc.stdout.readline())
        with server([__file__, "--bare-server"], env, tmp / "bare.log") as (bare_base, bare_proc):
            for _ in range(a.rounds):
                bare.append(measure(bare_base, {}, bare_proc.pid, quotes, expect=201, **run))
                gateway.append(measure(gw_base, gw_headers, proc.pid, quotes, expect=201, **run))
    report("POST /v1/quotes", bare, gateway, a.concurrency)


if __name__ == "__main__":
    main()
