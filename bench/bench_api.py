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

    .venv/bin/python bench/bench_api.py --requests 3000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import BaseModel

QUOTE = {"capability": "colorize.person", "width": 800, "height": 600, "options": {}}


class Body(BaseModel):
    """The bare endpoint's body: the same shape as a quote request."""

    capability: str
    width: int
    height: int
    options: dict[str, object] = {}


def bare_server(port: int) -> None:
    """The ceiling: a bare FastAPI endpoint under uvicorn, configured like ``serve``."""
    import uvicorn
    from fastapi import FastAPI

    from comfygate.entrypoints.api.logs import configure_logging

    app = FastAPI()

    @app.post("/v1/quotes", status_code=201)
    async def quote(body: Body) -> dict[str, object]:
        return {"tokens": 11, "capability": body.capability, "width": body.width}

    configure_logging("info")
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


@contextmanager
def server(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *args, str(port)],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(base, proc)
            yield base, proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            if proc.stdout:
                proc.stdout.close()


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(base: str, headers: dict[str, str], count: int, concurrency: int) -> Result:
    latencies: list[float] = []
    remaining = count
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post("/v1/quotes", json=QUOTE)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 201:
                    raise SystemExit(f"{response.status_code}: {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(count, time.perf_counter() - started, latencies)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    base: str, headers: dict[str, str], a: argparse.Namespace, pid: int
) -> tuple[Result, float]:
    """The run's result and the server's CPU milliseconds per request."""
    asyncio.run(load(base, headers, a.warmup, a.concurrency))
    before = cpu_s(pid)
    result = asyncio.run(load(base, headers, a.requests, a.concurrency))
    return result, (cpu_s(pid) - before) * 1000 / a.requests


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
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "COMFYGATE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
           "COMFYGATE_DATA_DIR": str(tmp / "data"),
           "COMFYGATE_RATE_LIMIT_PER_MINUTE": str(10**9)}  # fmt: skip
    bare: list[Result] = []
    quotes: list[Result] = []
    bare_cpu: list[float] = []
    quote_cpu: list[float] = []
    gateway_args = ["-m", "comfygate", "serve", "--port"]
    with server(gateway_args, env, tmp / "gateway.log") as (gw_base, proc):
        assert proc.stdout is not None
        key = re.search(r"(cg_\S+)", proc.stdout.readline())
        assert key, "no operator key printed"
        made = httpx.post(f"{gw_base}/v1/admin/accounts", json={"name": "bench"},
                          headers={"Authorization": f"Bearer {key.group(1)}"}).json()  # fmt: skip
        gw_headers = {"Authorization": f"Bearer {made['api_key']}"}
        with server([__file__, "--bare-server"], env, tmp / "bare.log") as (bare_base, bare_proc):
            for _ in range(a.rounds):
                result, cpu_ms = measure(bare_base, {}, a, bare_proc.pid)
                bare.append(result)
                bare_cpu.append(cpu_ms)
                result, cpu_ms = measure(gw_base, gw_headers, a, proc.pid)
                quotes.append(result)
                quote_cpu.append(cpu_ms)
    best_bare = max(bare, key=lambda r: r.rate)
    best_quote = max(quotes, key=lambda r: r.rate)
    print(
        f"requests={a.requests} concurrency={a.concurrency} rounds={a.rounds} cpus={os.cpu_count()}"
    )
    print(f"{'endpoint':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in (("bare FastAPI", best_bare), ("POST /v1/quotes", best_quote)):
        print(f"{name:24} {r.rate:8.0f} {r.percentile(0.5):8.2f} {r.percentile(0.99):8.2f}")
    paired = [q.rate / b.rate for b, q in zip(bare, quotes, strict=True)]
    print(f"ratio quotes/bare: median of rounds {statistics.median(paired):.2f}, "
          f"best vs best {best_quote.rate / best_bare.rate:.2f}")  # fmt: skip
    print(f"all rounds (req/s): bare {[round(r.rate) for r in bare]}, "
          f"quotes {[round(r.rate) for r in quotes]}")  # fmt: skip
    b_cpu, q_cpu = statistics.median(bare_cpu), statistics.median(quote_cpu)
    print(f"server CPU ms per request (median): bare {b_cpu:.2f}, quotes {q_cpu:.2f}; "
          f"capacity ratio (bare/quotes CPU) {b_cpu / q_cpu:.2f}")  # fmt: skip
    print(f"mean latency ms: bare {statistics.mean(best_bare.latencies_s) * 1000:.2f}, "
          f"quotes {statistics.mean(best_quote.latencies_s) * 1000:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
