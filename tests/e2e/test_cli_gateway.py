"""The gateway's command line as a real process: init's operator key, accounts with a
first key, ``keys create|revoke|list``, ``users create``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comfygate import bootstrap
from comfygate.config import Settings
from comfygate.domain.errors import AuthenticationError


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def cli(db_url: str) -> Any:
    env = {**os.environ, "COMFYGATE_DATABASE_URL": db_url}

    def run(*args: str, ok: bool = True) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "comfygate", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if not ok:
            return done
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "--json" in args else done.stdout

    return run


def authenticate(db_url: str, api_key: str) -> Any:
    container = bootstrap.build(Settings(database_url=db_url))
    try:
        return container.identity.authenticate(api_key)
    finally:
        container.close()


def test_init_prints_the_operator_key_the_first_time_only(cli: Any, db_url: str) -> None:
    first = cli("init", "--json")
    assert first["ok"] is True and first["operator_key"].startswith("cg_")
    assert cli("init", "--json")["operator_key"] is None
    assert authenticate(db_url, first["operator_key"]).is_operator


def test_accounts_create_returns_a_first_admin_key(cli: Any, db_url: str) -> None:
    made = cli("accounts", "create", "Acme", "--json")
    principal = authenticate(db_url, made["api_key"])
    assert (principal.account_id, principal.role.value) == (made["id"], "admin")


def test_keys_create_list_revoke(cli: Any, db_url: str) -> None:
    account = cli("accounts", "create", "Acme", "--json")["id"]
    key = cli("keys", "create", account, "--role", "user", "--label", "phone app", "--json")
    assert set(key) >= {"api_key", "key_id"} and key["role"] == "user"
    assert authenticate(db_url, key["api_key"]).key_id == key["key_id"]
    listed = cli("keys", "list", account, "--json")
    assert {k["label"] for k in listed} == {"first key", "phone app"}
    assert key["api_key"] not in json.dumps(listed)
    revoked = cli("keys", "revoke", key["key_id"], "--json")
    assert revoked["revoked_at"] is not None
    with pytest.raises(AuthenticationError):
        authenticate(db_url, key["api_key"])
    missing = cli("keys", "revoke", "key_nope", ok=False)
    assert missing.returncode == 1 and "key_not_found" in missing.stderr


def test_users_create_then_a_key_for_that_user(cli: Any, db_url: str) -> None:
    account = cli("accounts", "create", "Acme", "--json")["id"]
    user = cli("users", "create", account, "ann", "--role", "admin", "--json")
    key = cli("keys", "create", account, "--user", user["id"], "--json")
    principal = authenticate(db_url, key["api_key"])
    assert (principal.user_id, principal.role.value) == (user["id"], "admin")
    too_high = cli("keys", "create", account, "--user", user["id"], "--role", "operator", ok=False)
    assert too_high.returncode == 1
    unknown = cli("users", "create", "acct_nope", "bob", ok=False)
    assert unknown.returncode == 1 and "account_not_found" in unknown.stderr


def test_money_moved_from_the_cli_is_audited(cli: Any, db_url: str) -> None:
    account = cli("accounts", "create", "Acme", "--json")["id"]
    cli("grant", account, "40", "--idempotency-key", "g1", "--json")
    cli("grant", account, "40", "--idempotency-key", "g1", "--json")  # a replay: no new entry
    cli("subscribe", account, "monthly", "--json")
    again = cli("subscribe", account, "monthly", "--json")  # the same period: no new entry
    assert (again["replayed"], again["tokens_granted"]) == (True, 0)
    cli("topup", account, "topup-500", "--idempotency-key", "o1", "--json")
    topup = cli("topup", account, "topup-500", "--idempotency-key", "o1", "--json")
    assert topup["replayed"] is True  # it once said so only by the audit entry it made
    container = bootstrap.build(Settings(database_url=db_url))
    try:
        entries = container.audit.entries(account_id=account)
    finally:
        container.close()
    actions = [(e.action, e.actor) for e in entries]
    assert actions.count(("ledger.grant", "cli")) == 1
    assert actions.count(("subscriptions.create", "cli")) == 1
    assert actions.count(("ledger.topup", "cli")) == 1
    assert ("accounts.create", "cli") in actions
