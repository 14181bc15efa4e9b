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
discarded ones. Each server is measured ``--rounds`` times, alternating; its best
round is kept.

    .venv/bin/python bench/bench_submit.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import File, Form, UploadFile
from PIL import Image
from PIL.PngImagePlugin import PngInfo

CAPABILITY = "colorize.person"


def bare_server(port: int) -> None:
    """The ceiling: a bare FastAPI multipart endpoint under uvicorn, like ``serve``."""
    import uvicorn
    from fastapi import FastAPI

    from comfygate.entrypoints.api.logs import configure_logging

    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit(
        image: Annotated[UploadFile, File()], capability: Annotated[str, Form()]
    ) -> dict[str, object]:
        data = await image.read()
        return {"id": "job_x", "state": "queued", "capability": capability, "bytes": len(data)}

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
            proc.wait(timeout=60)
            if proc.stdout:
                proc.stdout.close()


_counter = itertools.count()


def photo() -> bytes:
    """A small grey PNG, different every call (a text chunk carries a counter)."""
    info = PngInfo()
    info.add_text("n", str(next(_counter)))
    buf = io.BytesIO()
    Image.new("L", (64, 48), 120).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_s: list[float]
    server_cpu_s: float = 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request (background job processing included)."""
        return self.server_cpu_s / self.requests * 1000

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(base: str, headers: dict[str, str], count: int, concurrency: int) -> Result:
    bodies = [photo() for _ in range(count)]
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=60
    ) as client:

        async def worker() -> None:
            while bodies:
                body = bodies.pop()
                started = time.perf_counter()
                response = await client.post(
                    "/v1/jobs",
                    files={"image": ("photo.png", body, "image/png")},
                    data={"capability": CAPABILITY},
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise SystemExit(f"{response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(count, time.perf_counter() - started, latencies)


def measure(base: str, headers: dict[str, str], pid: int, a: argparse.Namespace) -> Result:
    asyncio.run(load(base, headers, a.warmup, a.concurrency))
    before = cpu_s(pid)
    result = asyncio.run(load(base, headers, a.requests, a.concurrency))
    result.server_cpu_s = cpu_s(pid) - before
    return result


def gateway_customer(base: str, banner: str, tokens: int) -> dict[str, str]:
    key = re.search(r"(cg_\S+)", banner)
    assert key, "no operator key printed"
    operator = {"Authorization": f"Bearer {key.group(1)}"}
    made = httpx.post(f"{base}/v1/admin/accounts", json={"name": "bench"}, headers=operator)
    account = made.json()
    granted = httpx.post(
        f"{base}/v1/admin/accounts/{account['account_id']}/grants",
        json={"tokens": tokens, "source": "promotion"},
        headers=operator,
    )
    assert granted.status_code in (200, 201), granted.text
    return {"Authorization": f"Bearer {account['api_key']}"}


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
    tmp = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "COMFYGATE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
           "COMFYGATE_DATA_DIR": str(tmp / "data"),
           "COMFYGATE_RATE_LIMIT_PER_MINUTE": str(10**9)}  # fmt: skip
    bare: list[Result] = []
    submits: list[Result] = []
    with server(["-m", "comfygate", "serve", "--port"], env, tmp / "gateway.log") as (
        gw_base,
        proc,
    ):
        assert proc.stdout is not None
        total = (a.requests + a.warmup) * a.rounds
        gw_headers = gateway_customer(gw_base, proc.stdout.readline(), tokens=10 * total + 100)
        with server([__file__, "--bare-server"], env, tmp / "bare.log") as (bare_base, bare_proc):
            for _ in range(a.rounds):
                bare.append(measure(bare_base, {}, bare_proc.pid, a))
                submits.append(measure(gw_base, gw_headers, proc.pid, a))
    best_bare = max(bare, key=lambda r: r.rate)
    best = max(submits, key=lambda r: r.rate)
    print(
        f"requests={a.requests} concurrency={a.concurrency} rounds={a.rounds} cpus={os.cpu_count()}"
    )
    print(f"{'endpoint':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>11}")
    for name, r in (("bare FastAPI upload", best_bare), ("POST /v1/jobs", best)):
        print(
            f"{name:24} {r.rate:8.0f} {r.percentile(0.5):8.2f} {r.percentile(0.99):8.2f}"
            f" {r.cpu_ms:11.2f}"
        )
    print(f"ratio submit/bare: {best.rate / best_bare.rate:.2f}")
    print(f"all rounds (req/s): bare {[round(r.rate) for r in bare]}, "
          f"submit {[round(r.rate) for r in submits]}")  # fmt: skip


if __name__ == "__main__":
    main()
