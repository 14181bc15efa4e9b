"""``comfygate db status|upgrade`` and ``auto_migrate``: a schema behind the code is
reported (exit 3) and upgraded on demand; with ``COMFYGATE_AUTO_MIGRATE=false`` the
other commands migrate nothing and refuse a schema unlike the code's, ahead or behind.

The schema behind the code is built by upgrading each branch to an older revision
with Alembic; one ahead of it, by recording a revision the code does not know."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner, Result

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.entrypoints.cli import main

HEADS = sorted(migrate.scripts().get_heads())
REVISIONS = len(list(migrate.scripts().walk_revisions()))
OLDER = ("ledger_0005", "jobs_0004", *(h for h in HEADS if h.startswith(("identity", "pricing"))))
"""Every branch at a revision of its own: two revisions behind the code."""
JOBS_HEAD = next(h for h in HEADS if h.startswith("jobs"))
PENDING = list(migrate.compare(OLDER).pending)  # jobs_0005 copies tables on MariaDB
JOBS_PENDING = [r for r in PENDING if r.startswith("jobs")]
BEHIND = (
    "error [schema_out_of_date]: the database schema is behind this comfygate:"
    f" {migrate.revisions(len(PENDING))} pending ({', '.join(PENDING)}); run"
    " `comfygate db upgrade`\n"
)
AHEAD = (
    "error [schema_ahead_of_code]: the database schema is ahead of this comfygate: it has"
    " revisions this code does not know (jobs_0099), applied by a newer comfygate; run that"
    " version or a later one\n"
)


def migrate_to(url: str, *revisions: str) -> None:
    engine = create_engine(url)
    try:
        for revision in revisions:
            command.upgrade(migrate.alembic_config(engine), revision)
    finally:
        engine.dispose()


def record_unknown_revision(path: Path) -> None:
    """What a newer comfygate's ``db upgrade`` leaves: a jobs revision this code lacks."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE alembic_version SET version_num = 'jobs_0099' WHERE version_num = ?",
            (JOBS_HEAD,),
        )


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """Run a command in process on ``url``, ``auto_migrate`` as given (None: unset)."""
    runner = CliRunner()

    def run(url: str, *args: str, auto_migrate: str | None = None) -> Result:
        env = {"COMFYGATE_AUTO_MIGRATE": auto_migrate, "COMFYGATE_DATA_DIR": str(tmp_path / "d")}
        return runner.invoke(main, ["--database", url, *args], env=env, catch_exceptions=False)

    return run


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_status_and_upgrade_round_trip(cli: Any, database_url: str) -> None:
    migrate_to(database_url, *OLDER)
    behind = cli(database_url, "db", "status", "--json")
    assert behind.exit_code == 3, behind.output
    report = json.loads(behind.stdout)
    assert (report["state"], report["pending"], report["unknown"]) == ("behind", PENDING, [])
    assert report["heads"] == HEADS
    assert report["branches"]["jobs"] == {
        "current": "jobs_0004", "head": JOBS_HEAD, "pending": JOBS_PENDING
    }  # fmt: skip
    assert report["branches"]["pricing"]["pending"] == []
    refused = cli(database_url, "accounts", "create", "Acme", auto_migrate="false")
    assert (refused.exit_code, refused.stderr) == (1, BEHIND)

    upgraded = cli(database_url, "db", "upgrade", "--json")
    assert upgraded.exit_code == 0, upgraded.output
    assert json.loads(upgraded.stdout) == {
        "applied": PENDING,
        "before": dict(zip(["identity", "jobs", "ledger", "pricing"], sorted(OLDER), strict=True)),
        "after": dict(zip(["identity", "jobs", "ledger", "pricing"], HEADS, strict=True)),
        "heads": HEADS,
    }
    current = cli(database_url, "db", "status", "--json")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout)["state"] == "current"
    assert json.loads(current.stdout)["pending"] == []
    made = cli(database_url, "accounts", "create", "Acme", "--json", auto_migrate="false")
    assert made.exit_code == 0, made.output
    again = cli(database_url, "db", "upgrade", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["applied"] == []


def test_status_and_upgrade_for_a_person(cli: Any, sqlite_url: str) -> None:
    migrate_to(sqlite_url, *OLDER)
    behind = cli(sqlite_url, "db", "status")
    assert behind.exit_code == 3
    assert f"jobs       jobs_0004        {JOBS_HEAD:16} {' '.join(JOBS_PENDING)}\n" in behind.stdout
    assert behind.stdout.endswith(
        f"behind: {migrate.revisions(len(PENDING))} pending; run `comfygate db upgrade`\n"
    )
    upgraded = cli(sqlite_url, "db", "upgrade")
    assert upgraded.exit_code == 0
    assert upgraded.stdout == (
        f"identity   {OLDER[2]} (unchanged)\n"
        f"jobs       jobs_0004 -> {JOBS_HEAD}\n"
        "ledger     ledger_0005 -> ledger_0006\n"
        "pricing    pricing_0002 (unchanged)\n"
        f"applied {migrate.revisions(len(PENDING))}: {', '.join(PENDING)}\n"
    )
    assert cli(sqlite_url, "db", "upgrade").stdout.endswith(
        "nothing to apply: the schema is current\n"
    )
    assert cli(sqlite_url, "db", "status").stdout.endswith("\ncurrent\n")


def test_by_default_a_command_still_upgrades_the_schema_first(cli: Any, sqlite_url: str) -> None:
    migrate_to(sqlite_url, *OLDER)
    assert cli(sqlite_url, "accounts", "create", "Acme").exit_code == 0
    assert cli(sqlite_url, "db", "status").exit_code == 0


def test_with_auto_migrate_off_commands_refuse_a_stale_schema_and_leave_it(
    cli: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("serve started on a stale schema")

    monkeypatch.setattr("uvicorn.run", never)
    migrate_to(sqlite_url, *OLDER)
    for args in (("accounts", "create", "Acme"), ("balance", "acct_x"), ("serve",)):
        refused = cli(sqlite_url, *args, auto_migrate="false")
        assert (refused.exit_code, refused.stdout, refused.stderr) == (1, "", BEHIND), args
    assert json.loads(cli(sqlite_url, "db", "status", "--json").stdout)["pending"] == PENDING
    # init migrates whatever the setting says (and still prints the operator key once)
    init = cli(sqlite_url, "init", "--json", auto_migrate="false")
    assert init.exit_code == 0, init.output
    assert json.loads(init.stdout)["operator_key"]
    assert cli(sqlite_url, "accounts", "create", "Acme", auto_migrate="false").exit_code == 0


def test_with_auto_migrate_off_an_empty_database_waits_for_db_upgrade(
    cli: Any, sqlite_url: str
) -> None:
    refused = cli(sqlite_url, "accounts", "create", "Acme", auto_migrate="0")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "error [schema_out_of_date]: the database schema is behind this comfygate:"
        f" {REVISIONS} revisions pending (identity_0001, identity_0002, identity_0003,"
    )
    upgraded = cli(sqlite_url, "db", "upgrade", "--json", auto_migrate="0")
    assert upgraded.exit_code == 0, upgraded.output
    applied = json.loads(upgraded.stdout)["applied"]
    assert len(applied) == REVISIONS and set(HEADS) <= set(applied)
    assert json.loads(upgraded.stdout)["before"] == dict.fromkeys(
        ["identity", "jobs", "ledger", "pricing"]
    )
    assert cli(sqlite_url, "accounts", "create", "Acme", auto_migrate="0").exit_code == 0


def test_a_schema_ahead_of_the_code_is_refused_whatever_the_setting(
    cli: Any, sqlite_url: str, tmp_path: Path
) -> None:
    assert cli(sqlite_url, "db", "upgrade").exit_code == 0
    record_unknown_revision(tmp_path / "cli.db")
    ahead = cli(sqlite_url, "db", "status", "--json")
    assert ahead.exit_code == 4
    report = json.loads(ahead.stdout)
    assert (report["state"], report["unknown"], report["pending"]) == ("ahead", ["jobs_0099"], [])
    assert report["branches"]["jobs"] == {
        "current": "jobs_0099",
        "head": JOBS_HEAD,
        "pending": [],
    }
    for setting in (None, "false"):
        for args in (("db", "upgrade"), ("accounts", "create", "Acme"), ("init",)):
            refused = cli(sqlite_url, *args, auto_migrate=setting)
            assert (refused.exit_code, refused.stdout, refused.stderr) == (1, "", AHEAD), args


def test_status_of_a_sqlite_file_that_is_not_there_makes_none(cli: Any, tmp_path: Path) -> None:
    """A mistyped path once made the file (and its folder), and said "behind"."""
    missing = tmp_path / "typo" / "comfygate.db"
    done = cli(f"sqlite:///{missing}", "db", "status")
    assert (done.exit_code, done.stderr) == (
        1,
        f"error [invalid_input]: no SQLite database at {missing}\n",
    )
    assert not missing.parent.exists()
