"""``comfygate report usage``: the API's document with ``--json``, a table without,
and a clean error for an unknown account or timezone."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.domain import analytics as da
from comfygate.entrypoints.cli import main
from tests.reports_support import T0, Use, new_account, store_usage


def test_report_usage_json_and_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    acme, globex = new_account(engine, "acme"), new_account(engine, "globex")
    store_usage(engine, [
        Use(acme, "colorize.person", da.SUCCEEDED, 11, 11, 1.2, None, T0 + timedelta(hours=3)),
        Use(acme, "colorize.person", da.FAILED, 0, 11, None, "timeout", T0 + timedelta(hours=4)),
        Use(globex, "colorize.building", da.SUCCEEDED, 0, 17, 3.0, None, T0 + timedelta(hours=5)),
    ])  # fmt: skip
    engine.dispose()
    runner = CliRunner()
    window = ["--since", "2026-11-27T00:00:00Z", "--until", "2026-11-28T00:00:00Z"]

    def run(*args: str) -> tuple[int, str, str]:
        done = runner.invoke(main, ["--database", url, "report", "usage", *args])
        return done.exit_code, done.stdout, done.stderr

    code, out, _ = run(*window, "--json", "--tz", "UTC")
    assert code == 0
    report = json.loads(out)
    assert (report["bucket"], report["timezone"], len(report["buckets"])) == ("hour", "UTC", 24)
    assert (report["totals"]["calls"], report["totals"]["tokens_charged"]) == (3, 11)
    assert report["totals"]["list_tokens"] == 28  # the VIP's building job at list price
    assert [a["name"] for a in report["top_accounts"]] == ["acme", "globex"]

    code, out, _ = run(*window, "--account", acme, "--bucket", "day")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("per day in Asia/Shanghai")
    person = next(line for line in lines if line.startswith("colorize.person"))
    assert person.split()[1:6] == ["2", "1", "1", "0", "11"]
    assert "failures: timeout 1" in out and "globex" not in out

    code, _, err = run("--account", "acct_nope")
    assert code != 0 and "account_not_found" in err
    code, _, err = run("--tz", "Mars/Olympus")
    assert code != 0 and "unknown timezone" in err
    code, _, err = run("--since", "2026-11-27T00:00:00")
    assert code == 2 and "no UTC offset" in err
