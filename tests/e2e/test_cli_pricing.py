"""The pricing CLI commands on their own click group, over a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.adapters.db.sql_identity import SqlAuditStore
from comfygate.adapters.db.sql_ledger import SqlLedgerStore
from comfygate.adapters.db.sql_pricing import build_pricing_services
from comfygate.config import Settings
from comfygate.entrypoints.cli_pricing import register
from comfygate.services.audit import AuditLog
from comfygate.services.clock import SystemClock
from comfygate.services.quoting import PricingServices

BOOK_V2 = """
version = "v2"
time_windows = [{ start = "00:00", end = "08:00", multiplier = "0.8" }]
[capabilities."colorize.building"]
base = 15
minimum = 10
coefficients = { megapixels = 2 }
"""

BROKEN = """
version = "v 3"
rounding = "up"
[capabilities."colorize.person"]
base = -1
"""


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[click.Group]:
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    migrate.upgrade(engine)
    built: list[PricingServices] = []

    def services(ctx: click.Context) -> PricingServices:
        if not built:  # lazily, like the real CLI's container
            cap = Settings.model_fields["max_image_pixels"].default
            made = build_pricing_services(
                engine,
                clock=SystemClock(),
                lock_s=600,
                max_pixels=cap,
                account_exists=SqlLedgerStore(engine).account_exists,  # as bootstrap wires it
            )
            built.append(made)
        return built[0]

    @click.group()
    def main() -> None:
        """Test CLI."""

    register(
        main, services, lambda _ctx: AuditLog(store=SqlAuditStore(engine), clock=SystemClock())
    )
    yield main
    engine.dispose()


def run(cli: click.Group, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_quote_prints_the_seed_price_as_json(cli: click.Group) -> None:
    result = run(
        cli,
        "quote",
        "--capability",
        "colorize.person",
        "--width",
        "800",
        "--height",
        "600",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokens"] == 11
    assert data["price_book_version"] == "default-1"
    assert data["quote_id"].startswith("quote_")
    assert [line["step"] for line in data["breakdown"]][:2] == ["base", "pixels"]
    upscaled = run(
        cli,
        "quote",
        "--capability",
        "colorize.person",
        "--width",
        "800",
        "--height",
        "600",
        "--upscale",
        "2",
    )
    assert upscaled.exit_code == 0 and upscaled.stdout.startswith("16 tokens")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--capability", "colorize.cat", "--width", "8", "--height", "6"], "unknown_capability"),
        (
            ["--capability", "colorize.person", "--width", "-8", "--height", "6"],
            "invalid_image_size",
        ),
        (
            ["--capability", "colorize.person", "--width", "8", "--height", "6", "--upscale", "9"],
            "invalid_option",
        ),
        (  # once a SQLite overflow with a traceback
            ["--capability", "colorize.person", "--width", "10" * 8, "--height", "10" * 8],
            "too_many_pixels",
        ),
    ],
)
def test_bad_quotes_exit_1_with_the_error_code(
    cli: click.Group, args: list[str], code: str
) -> None:
    result = run(cli, "quote", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error [{code}]: ")


@pytest.mark.parametrize(
    "args",
    [
        ["quote", "--capability", "colorize.person", "--width", "8", "--height", "6",
         "--at", "9999-12-31T23:00Z"],
        ["price-books", "show", "--account", "acct_nosuch"],
        ["price-books", "show", "--history", "--account", "acct_nosuch"],
    ],
)  # fmt: skip
def test_bad_input_to_other_commands_exits_1_with_the_error_code(
    cli: click.Group, args: list[str]
) -> None:
    """Each once exited 0 with the default book, or crashed (a year past 9999)."""
    result = run(cli, *args)
    assert result.exit_code == 1, result.output
    code = "invalid_input" if args[0] == "quote" else "account_not_found"
    assert result.stderr.startswith(f"error [{code}]: ")


@pytest.mark.parametrize(
    "options",
    [
        ["--upscale", "2", "--option", "upscale=3"],
        ["--option", "upscale=2", "--option", "upscale=3"],
    ],
)
def test_an_option_given_twice_is_a_usage_error(cli: click.Group, options: list[str]) -> None:
    """It once priced whichever came last, without a word."""
    args = ["--capability", "colorize.person", "--width", "800", "--height", "600"]
    result = run(cli, "quote", *args, *options)
    assert result.exit_code == 2, result.output
    assert "given twice" in result.stderr or "give upscale once" in result.stderr


def test_validate_lists_every_problem(cli: click.Group, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN)
    result = run(cli, "price-books", "validate", str(broken))
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, result.stderr
    good = tmp_path / "v2.toml"
    good.write_text(BOOK_V2)
    assert run(cli, "price-books", "validate", str(good)).exit_code == 0


def test_activate_then_quote_and_show(cli: click.Group, tmp_path: Path) -> None:
    book = tmp_path / "v2.toml"
    book.write_text(BOOK_V2)
    activated = run(cli, "price-books", "activate", str(book))
    assert activated.exit_code == 0, activated.output
    assert run(cli, "price-books", "activate", str(book)).exit_code == 1  # never reused
    # Audited as the API audits it (the command line once left no trace).
    audit = SqlAuditStore(create_engine(f"sqlite:///{tmp_path / 'cli.db'}"))
    entries = audit.entries(account_id=None, limit=10, before=None)
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("cli", "price_books.activate", "v2")
    ]
    shown = json.loads(run(cli, "price-books", "show", "--json").stdout)
    assert (shown["version"], shown["source"]) == ("v2", "database")
    # 03:00 in Shanghai: the night window of v2 applies; --at prices without a lock
    night = run(
        cli,
        "quote",
        "--capability",
        "colorize.building",
        "--width",
        "1920",
        "--height",
        "1080",
        "--at",
        "2030-01-01T03:00:00+08:00",
        "--json",
    )
    data = json.loads(night.stdout)
    assert (data["tokens"], data["price_book_version"], data["quote_id"]) == (15, "v2", None)
    gone = run(cli, "quote", "--capability", "colorize.person", "--width", "8", "--height", "6")
    assert gone.exit_code == 1 and "unknown_capability" in gone.stderr


def test_enterprise_book_and_simulate(cli: click.Group, tmp_path: Path) -> None:
    book = tmp_path / "ent.toml"
    book.write_text(BOOK_V2.replace('"v2"', '"ent-1"').replace("base = 15", "base = 5"))
    args = ["--capability", "colorize.building", "--width", "1920", "--height", "1080", "--json"]
    # A typo'd account once got the book (and quotes) without a word.
    for refused in (
        run(cli, "price-books", "activate", str(book), "--account", "acct_e"),
        run(cli, "quote", *args, "--account", "acct_e"),
    ):
        assert refused.exit_code == 1 and "[account_not_found]" in refused.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    SqlLedgerStore(engine).create_account(
        account_id="acct_e", name="E", created_at=datetime.now(UTC)
    )
    engine.dispose()
    activated = run(cli, "price-books", "activate", str(book), "--account", "acct_e")
    assert activated.exit_code == 0
    # The operator is told what the account loses against the default book.
    notes = [line for line in activated.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: account acct_e has no {gap} in this book (the default has)"
        for gap in ("option colorize.building.upscale", "capability colorize.person")
    ]
    own = json.loads(run(cli, "quote", *args, "--account", "acct_e").stdout)
    assert (own["price_book_version"], own["tokens"]) == ("ent-1", 10)  # 9.15, minimum 10
    assert json.loads(run(cli, "quote", *args).stdout)["tokens"] == 19
    sim = run(cli, "price-books", "simulate", str(book), *args, "--at", "2030-01-01T12:00Z")
    assert json.loads(sim.stdout)["tokens"] == 10
    history = json.loads(
        run(cli, "price-books", "show", "--history", "--account", "acct_e", "--json").stdout
    )
    assert [h["version"] for h in history] == ["ent-1"]
    naive = run(cli, "price-books", "activate", str(book), "--effective-at", "2030-01-01T00:00")
    assert naive.exit_code == 2 and "UTC offset" in naive.stderr
