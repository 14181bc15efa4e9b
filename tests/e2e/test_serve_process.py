"""``comfygate serve`` as a real process, driven over a socket."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(tmp_path: Path, port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COMFYGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "COMFYGATE_DATA_DIR": str(tmp_path / "data"),
    }
    stderr = (tmp_path / f"stderr-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfygate", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (
                f"server exited: {(tmp_path / f'stderr-{port}.log').read_text()}"
            )
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        yield proc, base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
            stderr.close()


def test_first_start_prints_the_operator_key_once_and_serves_the_api(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, port) as (proc, base):
        assert proc.stdout is not None
        banner = proc.stdout.readline() + proc.stdout.readline()
        match = re.search(r"operator API key \(shown once, keep it safe\): (cg_\S+)", banner)
        assert match, banner
        operator = {"Authorization": f"Bearer {match.group(1)}"}
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/readyz").json()["checks"]["database"] is True
            made = client.post("/v1/admin/accounts", json={"name": "shop"}, headers=operator).json()
            user = {"Authorization": f"Bearer {made['api_key']}", "X-Request-ID": "over-the-wire-1"}
            quote = client.post(
                "/v1/quotes",
                json={"capability": "colorize.building", "width": 1000, "height": 1000},
                headers=user,
            )
            assert quote.status_code == 201 and quote.json()["tokens"] == 17
            assert quote.headers["x-request-id"] == "over-the-wire-1"
            assert client.get("/v1/balance").status_code == 401
            assert "comfygate_http_requests_total" in client.get("/metrics").text
    # uvicorn shuts down gracefully, then re-raises SIGTERM so supervisors see it
    assert proc.returncode in (0, -signal.SIGTERM)
    stderr = (tmp_path / f"stderr-{port}.log").read_text()
    logs = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    assert any(entry.get("event", "").startswith("Finished server process") for entry in logs)
    access = [entry for entry in logs if entry.get("request_id") == "over-the-wire-1"]
    assert access and access[0]["route"] == "/v1/quotes" and access[0]["status"] == 201
    assert access[0]["account_id"] == made["account_id"]

    second_port = free_port()
    with serve(tmp_path, second_port) as (proc, base):
        assert proc.stdout is not None
        assert "operator API key" not in proc.stdout.readline()
        assert httpx.get(f"{base}/v1/admin/accounts", headers=operator).status_code == 200
