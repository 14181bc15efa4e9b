"""The ledger's command line, run as a real process: JSON shapes and exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from comfygate.entrypoints.cli import main


@pytest.fixture
def process_cli(tmp_path: Path) -> Any:
    """The real ``python -m comfygate`` in a subprocess."""
    env = {**os.environ, "COMFYGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def run(*args: str, ok: bool = True) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "comfygate", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """The same commands in process (fast): exit code, stdout and stderr kept apart."""
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    def run(*args: str, ok: bool = True) -> Any:
        done = runner.invoke(main, ["--database", url, *args], catch_exceptions=False)
        if ok:
            assert done.exit_code == 0, done.stderr
        done.returncode = done.exit_code
        return done

    return run


def as_json(done: Any) -> Any:
    return json.loads(done.stdout)


def test_grant_subscribe_balance_statement_reconcile(process_cli: Any) -> None:
    cli = process_cli
    assert as_json(cli("init", "--json"))["ok"] is True
    account = as_json(cli("accounts", "create", "Acme Photo", "--json"))["id"]
    grant = as_json(cli("grant", account, "50", "--idempotency-key", "promo-1", "--json"))
    again = as_json(cli("grant", account, "50", "--idempotency-key", "promo-1", "--json"))
    assert again["replayed"] is True and again["lot_id"] == grant["lot_id"]
    sub = as_json(cli("subscribe", account, "monthly", "--json"))
    assert sub["tokens_granted"] == 1000
    balance = as_json(cli("balance", account, "--json"))
    assert (balance["available"], balance["held"], balance["unlimited"]) == (1050, 0, False)
    assert sorted(lot["remaining"] for lot in balance["lots"]) == [50, 1000]
    statement = as_json(cli("statement", account, "--json"))
    assert [line["kind"] for line in statement] == ["grant", "grant"]
    report = as_json(cli("reconcile", "--json"))
    assert report["ok"] is True and report["drifts"] == []
    expired = as_json(cli("expire", "--json"))
    assert expired["lots_expired"] == 0
    vip = as_json(cli("subscribe", account, "vip", "--json"))
    assert vip["unlimited"] is True
    assert as_json(cli("balance", account, "--json"))["unlimited"] is True


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("grant", "acct_nobody", "5"), "account_not_found"),
        (("grant", "{account}", "0"), "invalid_input"),
        (("grant", "{account}", "5", "--expires-at", "2026-01-01T00:00:00"), None),
        (("subscribe", "{account}", "platinum"), "unknown_plan"),
        (("balance", "acct_nobody"), "account_not_found"),
    ],
)
def test_bad_input_exits_non_zero_with_a_clear_message(
    cli: Any, args: tuple[str, ...], code: str | None
) -> None:
    account = as_json(cli("accounts", "create", "x", "--json"))["id"]
    done = cli(*(a.format(account=account) for a in args), ok=False)
    assert done.returncode != 0
    if code is not None:
        assert f"error [{code}]" in done.stderr
    else:
        assert "UTC offset" in done.stderr
    assert as_json(cli("balance", account, "--json"))["available"] == 0


def test_a_bad_setting_is_named_with_every_other_and_nothing_is_created(tmp_path: Path) -> None:
    """Bad configuration: one clear message listing each bad variable, no traceback,
    and no database touched (so no token can move)."""
    db = tmp_path / "never.db"
    env = {**os.environ, "COMFYGATE_DATABASE_URL": f"sqlite:///{db}",
           "COMFYGATE_LEDGER_BATCH_MAX": "0", "COMFYGATE_HOLD_TTL_S": "-1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "comfygate", "grant", "acct_x", "5"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "error [validation_failed]: the configuration is invalid" in done.stderr
    assert "COMFYGATE_LEDGER_BATCH_MAX: Input should be greater than or equal to 1" in done.stderr
    assert "COMFYGATE_HOLD_TTL_S: Input should be greater than 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()


def test_an_empty_idempotency_key_is_refused(cli: Any) -> None:
    cli("init")
    account = as_json(cli("accounts", "create", "Acme", "--json"))["id"]
    for _ in range(2):  # once each run granted anew under a key of its own
        refused = cli("grant", account, "10", "--idempotency-key", "", ok=False)
        assert refused.returncode == 1 and "[invalid_input]" in refused.stderr
    assert as_json(cli("balance", account, "--json"))["available"] == 0


def test_the_database_url_is_shown_without_its_password(tmp_path: Path) -> None:
    from comfygate.entrypoints.cli_ledger import shown_url

    assert shown_url("postgresql://operator:s3cret@db/comfygate") == (
        "postgresql://operator:***@db/comfygate"
    )
    assert shown_url(f"sqlite:///{tmp_path}/x.db") == f"sqlite:///{tmp_path}/x.db"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/comfygate", "database_error"),
        ("notaurl", "invalid_database_url"),
        ("http://example.com/db", "invalid_database_url"),
        ("oracle+oracledb://scott@db/orcl", "invalid_database_url"),  # no driver here
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_and_exit_1(url: str, code: str) -> None:
    done = CliRunner().invoke(main, ["--database", url, "balance", "acct_x"])
    assert done.exit_code == 1, done.output
    assert done.stderr.startswith(f"error [{code}]: ") and "Traceback" not in done.output
    assert len(done.stderr.splitlines()) == 1


def test_an_unreadable_price_book_is_one_line_and_exit_1(cli: Any, tmp_path: Path) -> None:
    binary = tmp_path / "book.toml"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    done = cli("price-books", "validate", str(binary), ok=False)
    assert done.returncode == 1 and done.stderr.startswith("error [unreadable_input]: ")


def test_human_output_reads_as_sentences(cli: Any, tmp_path: Path) -> None:
    cli("init")
    account = as_json(cli("accounts", "create", "Acme", "--json"))["id"]
    # A month is the catalog's (Asia/Shanghai): it once printed the UTC dates.
    month = cli("subscribe", account, "monthly").stdout
    assert month.startswith("monthly: 1000 tokens from ") and "-01 00:00 to " in month
    assert month.rstrip().endswith("(Asia/Shanghai)")
    assert cli("statement", account, "--limit", "0", ok=False).returncode == 2
    with sqlite3.connect(tmp_path / "cli.db") as conn:  # a cached balance gone wrong
        conn.execute(
            "UPDATE balances SET available = available + 7 WHERE account_id = ?", [account]
        )
    drifted = cli("reconcile", ok=False)
    assert drifted.returncode == 1
    assert drifted.stdout.splitlines() == [
        "1 drift(s):",
        f"  {account}: available is 1007, the postings say 1000",
    ]


def test_expire_goes_on_past_an_account_that_fails_and_exits_1(cli: Any, tmp_path: Path) -> None:
    cli("init")
    broken, fine = (as_json(cli("accounts", "create", n, "--json"))["id"] for n in "ab")
    for account in (broken, fine):
        cli("grant", account, "5", "--expires-at", "2099-01-01T00:00:00+00:00")
    with sqlite3.connect(tmp_path / "cli.db") as conn:  # both due; one unreadable
        conn.execute("UPDATE lots SET expires_at = '2000-01-01 00:00:00.000000'")
        conn.execute("UPDATE lots SET created_at = 'garbage' WHERE account_id = ?", [broken])
    done = cli("expire", ok=False)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "released 0 hold(s) (0 tokens), wrote off 1 lot(s) (5 tokens)",
        f"failed: {broken} (see the log)",
    ]
    assert as_json(cli("balance", fine, "--json"))["lots"] == []  # written off


def test_a_bad_time_is_named_before_any_database_is_opened() -> None:
    """Once parsed in the command body: behind an unreachable database, its traceback."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/comfygate"
    done = CliRunner().invoke(
        main, ["--database", url, "grant", "acct_x", "10", "--expires-at", "notadate"]
    )
    assert done.exit_code == 2
    assert "Invalid value for '--expires-at': 'notadate' is not an ISO-8601 time" in done.stderr
