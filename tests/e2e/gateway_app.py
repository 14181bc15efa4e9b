"""A gateway app in process for HTTP tests: container, TestClient, operator, accounts;
or the app served on a real socket (``serving``), for clients that need one."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from comfygate import bootstrap
from comfygate.config import Settings
from comfygate.entrypoints.api.app import create_app


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass
class Tenant:
    account_id: str
    admin_key: str
    admin_user_id: str
    user_key: str
    user_id: str

    @property
    def admin(self) -> dict[str, str]:
        return bearer(self.admin_key)

    @property
    def user(self) -> dict[str, str]:
        return bearer(self.user_key)


@dataclass
class Gateway:
    client: TestClient
    container: bootstrap.Container
    operator_key: str

    @property
    def operator(self) -> dict[str, str]:
        return bearer(self.operator_key)

    def tenant(self, name: str, *, tokens: int = 0) -> Tenant:
        """An account with an admin and a user key (and ``tokens`` granted), over HTTP."""
        made = self.client.post("/v1/admin/accounts", json={"name": name}, headers=self.operator)
        assert made.status_code == 201, made.text
        body = made.json()
        key = self.client.post(
            f"/v1/admin/accounts/{body['account_id']}/keys",
            json={"role": "user", "label": "app"},
            headers=bearer(body["api_key"]),
        )
        assert key.status_code == 201, key.text
        if tokens:
            granted = self.client.post(
                f"/v1/admin/accounts/{body['account_id']}/grants",
                json={"tokens": tokens, "idempotency_key": f"seed-{name}"},
                headers=self.operator,
            )
            assert granted.status_code == 201, granted.text
        return Tenant(
            body["account_id"], body["api_key"], body["user"]["id"],
            key.json()["api_key"], key.json()["user_id"],
        )  # fmt: skip


@contextmanager
def running_gateway(tmp_path: Path, **settings: Any) -> Iterator[Gateway]:
    """A migrated SQLite gateway (high rate limit unless given) with its operator key."""
    options: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'gateway.db'}",
        "data_dir": tmp_path / "data",
        "rate_limit_per_minute": 100_000,
        **settings,
    }
    container = bootstrap.build(Settings(**options))
    container.upgrade_database()
    issued = container.identity.bootstrap_operator()
    assert issued is not None
    try:
        with TestClient(create_app(container), raise_server_exceptions=False) as client:
            yield Gateway(client, container, issued.api_key)
    finally:
        container.close()


@contextmanager
def serving(container: bootstrap.Container) -> Iterator[str]:
    """``container``'s app served by uvicorn on a free port of 127.0.0.1 (in a thread,
    lifespan and all); its URL. Stopped after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(container), log_level="error"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
