"""What the gateway benchmarks share: servers in subprocesses, the load, the figures.

``bench_api.py`` and ``bench_submit.py`` run a real ``comfygate serve`` and a bare
FastAPI app the same way (uvicorn in a subprocess, one worker, our logging setup, no
uvicorn access log), drive both with keep-alive httpx clients from this process, and
read each server's CPU time from ``/proc``. After the warm-up and after each
measured run, they wait until the server is idle again: the gateway keeps running
the jobs it accepted after the last response, and that work must neither spill into
the next measurement nor go uncounted (``drain_s``, ``drain_cpu_s``).
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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
"""One request of the load: given the client, send it and return the response."""


def serve_bare(app: Any, port: int) -> None:
    """Serve a bare FastAPI ``app`` under uvicorn, configured like ``comfygate serve``."""
    import uvicorn

    from comfygate.entrypoints.api.logs import configure_logging

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
    """``python <args> <port>`` in a subprocess; yields its base URL and the process."""
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


def gateway_env(prefix: str) -> tuple[Path, dict[str, str]]:
    """A scratch folder and the environment of a SQLite gateway with a very high rate
    limit (the bucket is checked on every request but never refuses)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "COMFYGATE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
           "COMFYGATE_DATA_DIR": str(tmp / "data"),
           "COMFYGATE_RATE_LIMIT_PER_MINUTE": str(10**9)}  # fmt: skip
    return tmp, env


def operator_headers(banner: str) -> dict[str, str]:
    """The operator key ``comfygate serve`` prints once on an empty database."""
    key = re.search(r"(cg_\S+)", banner)
    assert key, "no operator key printed"
    return {"Authorization": f"Bearer {key.group(1)}"}


def new_customer(base: str, banner: str, *, tokens: int = 0) -> dict[str, str]:
    """A new account (with ``tokens`` granted): the headers of its admin key."""
    operator = operator_headers(banner)
    made = httpx.post(f"{base}/v1/admin/accounts", json={"name": "bench"}, headers=operator)
    account = made.json()
    if tokens:
        granted = httpx.post(
            f"{base}/v1/admin/accounts/{account['account_id']}/grants",
            json={"tokens": tokens, "source": "promotion"},
            headers={**operator, "Idempotency-Key": f"bench-grant-{account['account_id']}"},
        )
        assert granted.status_code in (200, 201), granted.text
    return {"Authorization": f"Bearer {account['api_key']}"}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, poll_s: float = 0.25, busy_cpu_s: float = 0.02) -> tuple[float, float]:
    """Wait until the server uses (almost) no CPU for a poll interval; return the wall
    seconds and CPU seconds it was still busy (0 if it was idle at once)."""
    started, first = time.perf_counter(), cpu_s(pid)
    previous, busy_until = first, started
    while True:
        time.sleep(poll_s)
        now, current = time.perf_counter(), cpu_s(pid)
        if current - previous < busy_cpu_s:
            return busy_until - started, previous - first
        previous, busy_until = current, now


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_s: list[float]
    server_cpu_s: float = 0.0
    drain_s: float = 0.0
    """How long the server stayed busy after the last response (accepted jobs)."""
    drain_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Requests answered per second (the headline figure)."""
        return self.requests / self.seconds

    @property
    def sustained_rate(self) -> float:
        """Requests per second counting the time to finish the work they started."""
        return self.requests / (self.seconds + self.drain_s)

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request while answering (jobs run meanwhile included)."""
        return self.server_cpu_s / self.requests * 1000

    @property
    def total_cpu_ms(self) -> float:
        """Server CPU per request, the jobs finished after the last answer included."""
        return (self.server_cpu_s + self.drain_cpu_s) / self.requests * 1000

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(
    base: str,
    headers: dict[str, str],
    sends: list[Send],
    concurrency: int,
    *,
    expect: int,
) -> Result:
    """Send every request of ``sends`` over ``concurrency`` keep-alive connections."""
    latencies: list[float] = []
    pending = list(reversed(sends))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=60
    ) as client:

        async def worker() -> None:
            while pending:
                send = pending.pop()
                started = time.perf_counter()
                response = await send(client)
                latencies.append(time.perf_counter() - started)
                if response.status_code != expect:
                    raise SystemExit(f"{response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(len(sends), time.perf_counter() - started, latencies)


def measure(
    base: str,
    headers: dict[str, str],
    pid: int,
    make_sends: Callable[[int], list[Send]],
    *,
    requests: int,
    warmup: int,
    concurrency: int,
    expect: int,
) -> Result:
    """A warm-up run, then the measured run with the server's CPU time, each followed
    by waiting for the server to finish what it was asked to do."""
    asyncio.run(load(base, headers, make_sends(warmup), concurrency, expect=expect))
    wait_idle(pid)
    sends = make_sends(requests)  # built before the clock starts
    before = cpu_s(pid)
    result = asyncio.run(load(base, headers, sends, concurrency, expect=expect))
    result.server_cpu_s = cpu_s(pid) - before
    result.drain_s, result.drain_cpu_s = wait_idle(pid)
    return result


def report(name: str, bare: list[Result], gateway: list[Result], concurrency: int) -> None:
    """The table: best round of each, the ratios, every round, CPU per request."""
    best_bare = max(bare, key=lambda r: r.rate)
    best = max(gateway, key=lambda r: r.rate)
    print(f"requests={bare[0].requests} concurrency={concurrency} rounds={len(bare)} "
          f"cpus={os.cpu_count()}")  # fmt: skip
    print(f"{'endpoint':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>11}")
    for label, r in (("bare FastAPI", best_bare), (name, best)):
        print(
            f"{label:24} {r.rate:8.0f} {r.percentile(0.5):8.2f} {r.percentile(0.99):8.2f}"
            f" {r.cpu_ms:11.2f}"
        )
    paired = [g.rate / b.rate for b, g in zip(bare, gateway, strict=True)]
    print(f"ratio {name}/bare: median of rounds {statistics.median(paired):.2f}, "
          f"best vs best {best.rate / best_bare.rate:.2f}, "
          f"rounds {[round(p, 2) for p in paired]}")  # fmt: skip
    print(f"all rounds (req/s): bare {[round(r.rate) for r in bare]}, "
          f"gateway {[round(r.rate) for r in gateway]}")  # fmt: skip
    b_cpu = statistics.median(r.cpu_ms for r in bare)
    g_cpu = statistics.median(r.cpu_ms for r in gateway)
    print(f"server CPU ms per request (median): bare {b_cpu:.2f}, gateway {g_cpu:.2f}; "
          f"capacity ratio (bare/gateway CPU) {b_cpu / g_cpu:.2f}")  # fmt: skip
    if any(r.drain_s > 0 for r in gateway):
        sustained = statistics.median(
            g.sustained_rate / b.rate for b, g in zip(bare, gateway, strict=True)
        )
        print(f"after the last answer the gateway stayed busy (s): "
              f"{[round(r.drain_s, 1) for r in gateway]}; counting that: "
              f"req/s {[round(r.sustained_rate) for r in gateway]}, "
              f"CPU ms per request {statistics.median(r.total_cpu_ms for r in gateway):.2f}, "
              f"ratio to bare (median of rounds) {sustained:.2f}")  # fmt: skip


def compare(
    *,
    name: str,
    script: str,
    make_sends: Callable[[int], list[Send]],
    expect: int,
    defaults: tuple[int, int],
    tokens_per_request: int = 0,
) -> None:
    """The whole benchmark of one endpoint: arguments, the gateway and the bare server
    (``script --bare-server PORT``), rounds alternating the two, then the report.
    ``defaults`` are the requests and warm-up requests per round."""
    parser = argparse.ArgumentParser(description=name)
    parser.add_argument("--requests", type=int, default=defaults[0])
    parser.add_argument("--warmup", type=int, default=defaults[1])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    a = parser.parse_args()
    tmp, env = gateway_env("bench-")
    run = {"requests": a.requests, "warmup": a.warmup, "concurrency": a.concurrency}
    bare: list[Result] = []
    gateway: list[Result] = []
    with server(["-m", "comfygate", "serve", "--port"], env, tmp / "gateway.log") as (
        gw_base,
        proc,
    ):
        assert proc.stdout is not None
        tokens = tokens_per_request * (a.requests + a.warmup) * a.rounds + 100
        gw_headers = new_customer(gw_base, proc.stdout.readline(), tokens=tokens)
        with server([script, "--bare-server"], env, tmp / "bare.log") as (bare_base, bare_proc):
            for _ in range(a.rounds):
                bare.append(measure(bare_base, {}, bare_proc.pid, make_sends, expect=expect, **run))
                gateway.append(
                    measure(gw_base, gw_headers, proc.pid, make_sends, expect=expect, **run)
                )
    report(name, bare, gateway, a.concurrency)
