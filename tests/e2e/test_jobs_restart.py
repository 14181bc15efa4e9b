"""Kill -9 a real ``comfygate serve`` in the middle of a job, start it again, and the
job completes (retried once), charged exactly once, with the ledger reconciled.

The job runs on a fake ComfyUI (``tests/comfyui_fake``, the real protocol over a
socket) told to take a minute, so the kill lands mid-job; after the kill the fake is
made fast so the retry finishes quickly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfygate.domain.jobs import JobState
from tests.comfyui_fake.server import FakeComfyUI
from tests.jobs_support import CAPABILITY, build, new_customer, png_bytes

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "comfygate", "serve", "--port", str(port)],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _job(base: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
    return body


@pytest.mark.timeout(240)
def test_kill_9_mid_job_then_restart_finishes_the_job_and_charges_once(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    data_dir = tmp_path / "data"
    setup = build(database_url, data_dir)
    customer = new_customer(setup, tokens=50)
    setup.close()
    log = tmp_path / "serve.log"
    with FakeComfyUI(tmp_path / "comfyui") as fake:
        fake.behaviour.job_s = 60.0
        fake.behaviour.progress_steps = 600
        env = {
            "COMFYGATE_DATABASE_URL": database_url,
            "COMFYGATE_DATA_DIR": str(data_dir),
            "COMFYGATE_COMFYUI_URLS": fake.url,
            "COMFYGATE_COMFYUI_WARM_UP": "false",
        }
        with _serve(env, log) as (proc, base):
            submitted = httpx.post(
                f"{base}/v1/jobs",
                headers=customer.headers,
                files={"image": ("old.png", png_bytes((320, 240)), "image/png")},
                data={"capability": CAPABILITY},
                timeout=10,
            )
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            while not (
                _job(base, customer.headers, job_id)["state"] == "running"
                and fake.running is not None
            ):
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()

        inspect = build(database_url, data_dir)
        try:
            stranded = inspect.jobs.store.get(job_id)
            assert stranded is not None and stranded.state is JobState.RUNNING
            assert inspect.accounts.balance(account_id=customer.account_id).held == 10
        finally:
            inspect.close()

        fake.behaviour.job_s = 0.2
        with _serve(env, log) as (_, base):
            events = httpx.get(
                f"{base}/v1/jobs/{job_id}/events", headers=customer.headers, timeout=120
            )
            assert events.status_code == 200
            job = _job(base, customer.headers, job_id)
            balance = httpx.get(f"{base}/v1/balance", headers=customer.headers, timeout=10).json()
            usage = httpx.get(f"{base}/v1/usage", headers=customer.headers, timeout=10).json()

    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and job["engine"] == "comfyui"
    assert job["tokens_charged"] == 10
    assert "event: succeeded" in events.text and "worker_lost" in events.text
    assert (balance["available"], balance["held"]) == (40, 0)
    assert usage["totals"] == {"jobs": 1, "succeeded": 1, "tokens_charged": 10, "list_tokens": 10}
    after = build(database_url, data_dir)
    try:
        assert after.accounts.reconcile().ok
    finally:
        after.close()
