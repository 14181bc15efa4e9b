"""``comfygate pricing fit``: the report with ``--json`` and as a table, the proposal
written with ``--output`` and activated with ``price-books activate`` (then quotes use
it), and clean errors when there is nothing to fit or the rate is not a number."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.domain import analytics as da
from comfygate.entrypoints.cli import main
from tests.reports_support import T0, Use, new_account, store_usage

WINDOW = ["--since", "2026-11-27T00:00:00Z", "--until", "2026-11-28T00:00:00Z"]
SIZES = [(800, 600), (1920, 1080), (3000, 2000), (640, 480)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A database with 40 timed jobs of each capability on 2026-11-27: person takes
    1 s + 0.5 s per megapixel (+1.5 s upscaled), building 2.5 s + the same."""
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    acct = new_account(engine, "acme")
    uses = []
    for i in range(40):
        width, height = SIZES[i % 4]
        upscale = 1 + i % 2
        for capability, base in (("colorize.person", 1.0), ("colorize.building", 2.5)):
            seconds = base + 0.5 * width * height / 1e6 + 1.5 * (upscale > 1)
            uses.append(
                Use(acct, capability, da.SUCCEEDED, 11, 11, round(seconds, 6), None,
                    T0 + timedelta(minutes=30 * i), width=width, height=height,
                    options=json.dumps({"upscale": upscale}), engine="comfyui",
                    gpu_peak_mb=round(1000 + 200 * width * height / 1e6))
            )  # fmt: skip
    store_usage(engine, uses)
    engine.dispose()
    return url


def run(url: str, *args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(main, ["--database", url, *args])
    return done.exit_code, done.stdout, done.stderr


def test_fit_reports_each_term_and_a_revenue_neutral_proposal(url: str) -> None:
    code, out, err = run(url, "pricing", "fit", *WINDOW, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["jobs"], report["based_on"], report["revenue_neutral"]) == (
        80,
        "default-1",
        True,
    )
    assert report["revenue_change"] == pytest.approx(0, abs=1e-3)
    person, building = report["capabilities"]
    assert (person["capability"], person["samples"], person["outliers"]) == (
        "colorize.person", 40, 0,
    )  # fmt: skip
    seconds = {t["key"]: t["seconds"] for t in building["terms"]}
    assert seconds["base"] == pytest.approx(2.5) and seconds["megapixels"] == pytest.approx(0.5)
    assert building["memory"]["mb_per_megapixel"] == pytest.approx(200, abs=1)
    assert person["proposed_tokens_per_s"] == pytest.approx(
        building["proposed_tokens_per_s"], rel=0.01
    )
    assert [e["width"] for e in report["examples"]] == [800, 1920, 4000] * 2
    assert report["price_book"]["version"].startswith("fit-")


def test_a_written_proposal_is_activated_and_prices_quotes(url: str, tmp_path: Path) -> None:
    book_file = tmp_path / "fitted.toml"
    code, out, err = run(
        url, "pricing", "fit", *WINDOW, "--tokens-per-second", "4", "--version", "fit-cli",
        "--output", str(book_file),
    )  # fmt: skip
    assert code == 0, err
    assert "proposed rate: 4 tokens per GPU second" in out
    assert f"written to {book_file}" in out
    assert "colorize.building: 40 jobs (0 outliers left out), R^2 1.000" in out
    book = tomllib.loads(book_file.read_text("utf-8"))
    assert book["capabilities"]["colorize.building"]["base"] == "10"
    assert run(url, "price-books", "validate", str(book_file))[0] == 0
    code, _, err = run(url, "price-books", "activate", str(book_file))
    assert code == 0, err
    code, out, err = run(url, "quote", "--capability", "colorize.building", "--width", "1920",
                         "--height", "1080", "--json")  # fmt: skip
    assert code == 0, err
    quote = json.loads(out)
    # 4 tokens x (2.5 s + 2.0736 MP x 0.5 s) = 14.15 -> 14
    assert (quote["tokens"], quote["price_book_version"]) == (14, "fit-cli")


def test_nothing_to_fit_and_a_bad_rate_are_clean_errors(url: str) -> None:
    code, _, err = run(url, "pricing", "fit", "--since", "2026-10-01T00:00:00Z",
                       "--until", "2026-10-02T00:00:00Z")  # fmt: skip
    assert code == 1
    assert err.strip() == "error [invalid_input]: no capability has enough jobs to fit a cost model"
    code, _, err = run(url, "pricing", "fit", *WINDOW, "--tokens-per-second", "-1")
    assert code == 2 and "must be a positive number" in err
    code, _, err = run(url, "pricing", "fit", *WINDOW, "--engine", "preview")
    assert code == 1 and "no capability has enough jobs" in err


def test_an_accounts_own_costs_give_it_its_own_book(url: str, tmp_path: Path) -> None:
    """``--account``: its jobs alone, and a book to activate as its own; other
    accounts keep the default."""
    engine = create_engine(url)
    with engine.connect() as conn:
        acme = conn.exec_driver_sql("SELECT id FROM accounts WHERE name = 'acme'").scalar_one()
    other = new_account(engine, "other")
    engine.dispose()
    book_file = tmp_path / "acme.toml"
    code, out, err = run(
        url, "pricing", "fit", *WINDOW, "--account", acme, "--tokens-per-second", "4",
        "--version", "acme-fit-1", "--output", str(book_file),
    )  # fmt: skip
    assert code == 0, err
    assert f"cost models from 80 jobs of account {acme}" in out
    assert f"comfygate price-books activate {book_file} --account {acme}" in out
    assert run(url, "price-books", "activate", str(book_file), "--account", acme)[0] == 0
    request = ["quote", "--capability", "colorize.building", "--width", "1920", "--height", "1080"]
    code, out, _ = run(url, *request, "--account", acme, "--json")
    assert (json.loads(out)["tokens"], json.loads(out)["price_book_version"]) == (14, "acme-fit-1")
    code, out, _ = run(url, *request, "--account", other, "--json")
    assert json.loads(out)["price_book_version"] == "default-1"
    code, _, err = run(url, "pricing", "fit", *WINDOW, "--account", other)  # no jobs of its own
    assert code == 1 and "no capability has enough jobs" in err
    code, _, err = run(url, "pricing", "fit", *WINDOW, "--account", "acct_nope")
    assert code == 1 and err.startswith("error [account_not_found]")
