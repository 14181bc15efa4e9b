"""``comfygate db status|upgrade``: a schema behind the code is reported (exit 3) and
upgraded on demand; one ahead of it is reported (exit 4) and refused.

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

OLDER = ("ledger_0005", "jobs_0004", "identity_0003", "pricing_0002")
"""Every branch at a revision of its own: two revisions behind the code."""
PENDING = ["jobs_0005", "ledger_0006"]  # jobs_0005 copies tables on MariaDB
HEADS = ["identity_0003", "jobs_0005", "ledger_0006", "pricing_0002"]
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
            "UPDATE alembic_version SET version_num = 'jobs_0099' WHERE version_num = 'jobs_0005'"
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
        "current": "jobs_0004", "head": "jobs_0005", "pending": ["jobs_0005"]
    }  # fmt: skip
    assert report["branches"]["pricing"]["pending"] == []

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
    again = cli(database_url, "db", "upgrade", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["applied"] == []


def test_status_and_upgrade_for_a_person(cli: Any, sqlite_url: str) -> None:
    migrate_to(sqlite_url, *OLDER)
    behind = cli(sqlite_url, "db", "status")
    assert behind.exit_code == 3
    assert "jobs       jobs_0004        jobs_0005        jobs_0005\n" in behind.stdout
    assert behind.stdout.endswith("behind: 2 revisions pending; run `comfygate db upgrade`\n")
    upgraded = cli(sqlite_url, "db", "upgrade")
    assert upgraded.exit_code == 0
    assert upgraded.stdout == (
        "identity   identity_0003 (unchanged)\n"
        "jobs       jobs_0004 -> jobs_0005\n"
        "ledger     ledger_0005 -> ledger_0006\n"
        "pricing    pricing_0002 (unchanged)\n"
        "applied 2 revisions: jobs_0005, ledger_0006\n"
    )
    assert cli(sqlite_url, "db", "upgrade").stdout.endswith(
        "nothing to apply: the schema is current\n"
    )
    assert cli(sqlite_url, "db", "status").stdout.endswith("\ncurrent\n")


def test_a_schema_ahead_of_the_code_is_refused(cli: Any, sqlite_url: str, tmp_path: Path) -> None:
    assert cli(sqlite_url, "db", "upgrade").exit_code == 0
    record_unknown_revision(tmp_path / "cli.db")
    ahead = cli(sqlite_url, "db", "status", "--json")
    assert ahead.exit_code == 4
    report = json.loads(ahead.stdout)
    assert (report["state"], report["unknown"], report["pending"]) == ("ahead", ["jobs_0099"], [])
    assert report["branches"]["jobs"] == {
        "current": "jobs_0099",
        "head": "jobs_0005",
        "pending": [],
    }
    for args in (("db", "upgrade"), ("accounts", "create", "Acme"), ("init",)):
        refused = cli(sqlite_url, *args)
        assert (refused.exit_code, refused.stdout, refused.stderr) == (1, "", AHEAD), args
