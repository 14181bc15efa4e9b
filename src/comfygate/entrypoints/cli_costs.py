"""``comfygate pricing fit``: fit a cost model per capability from the jobs that ran,
and propose a price book whose tokens track those costs (SPEC section 3).

It only reads: the proposal is printed, or written with ``--output`` as TOML (JSON for
a ``.json`` name), for the operator to read and then activate with
``comfygate price-books activate FILE``.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
import tomli_w

from comfygate.entrypoints.api.schemas_costs import CostFitOut
from comfygate.entrypoints.cli import app, emit
from comfygate.entrypoints.cli_options import iso_time


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a number") from None
    if not rate.is_finite() or rate <= 0:
        raise click.BadParameter("must be a positive number")
    return rate


@click.group("pricing")
def pricing_group() -> None:
    """Prices learnt from costs."""


@pricing_group.command("fit")
@click.option("--since", callback=iso_time, help="ISO-8601 with offset; default: 30 days ago.")
@click.option("--until", callback=iso_time, help="ISO-8601 with offset; default: now.")
@click.option(
    "--engine", "engines", multiple=True, help="Only jobs of this engine (repeatable); "
    "default: every engine but preview."
)  # fmt: skip
@click.option(
    "--tokens-per-second",
    callback=_rate,
    help="Tokens per GPU second; default: the rate at which the fitted jobs cost what "
    "they cost now.",
)
@click.option("--version", "version", help="The proposed book's version; default: fit-DATE-TIME.")
@click.option(
    "--account",
    help="Fit this account's jobs alone, and propose the next version of the book pricing"
    " it, to activate as its own (--account on activate).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the proposed price book here (TOML, or JSON for a .json name).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's document).")
@click.pass_context
def fit_cmd(
    ctx: click.Context,
    since: datetime | None,
    until: datetime | None,
    engines: tuple[str, ...],
    tokens_per_second: Decimal | None,
    version: str | None,
    account: str | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Fit seconds = base + per-megapixel + option terms for each capability from the
    succeeded jobs' inference times, report the fit, and propose the next version of
    the default price book at one rate of tokens per GPU second."""
    report = app(ctx).cost_fit.fit(
        since=since,
        until=until,
        engines=engines or None,
        tokens_per_second=tokens_per_second,
        version=version,
        account_id=account,
    )
    document = CostFitOut.of(report).model_dump(mode="json")
    if output is not None:
        book = report.proposed_document()
        text = (
            json.dumps(book, indent=2) + "\n" if output.suffix.lower() == ".json" else _toml(book)
        )
        output.write_text(text, encoding="utf-8")
    emit(document, as_json=as_json, human=lambda d: _describe(d, output))


def _toml(book: dict[str, Any]) -> str:
    header = (
        f"# Proposed by `comfygate pricing fit`: {book.get('description', '')}\n"
        "# Read it, then: comfygate price-books activate THIS_FILE\n\n"
    )
    return header + tomli_w.dumps(book)


def _seconds(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _describe(report: dict[str, Any], output: Path | None) -> str:
    engines = ", ".join(report["engines"]) if report["engines"] else "every engine but preview"
    account = report["account_id"]
    whose = f" of account {account}" if account else ""
    lines = [
        f"cost models from {report['jobs']} jobs{whose}, {report['since']} to {report['until']} "
        f"({engines}); the book in force: {report['based_on']}",
    ]
    for cap in report["capabilities"]:
        lines.append("")
        if not cap["fitted"]:
            lines.append(f"{cap['capability']}: not fitted, prices kept")
        else:
            lines.append(
                f"{cap['capability']}: {cap['samples']} jobs ({cap['outliers']} outliers left "
                f"out), R^2 {_seconds(cap['r2'], 3)}, RMSE {_seconds(cap['rmse_s'])} s, "
                f"mean {_seconds(cap['mean_s'])} s"
            )
            lines.append(
                f"  {'term':34}{'seconds':>10}{'+/-':>9}{'tokens now':>12}{'proposed':>10}"
            )
            lines += [
                f"  {t['label']:34}{_seconds(t['seconds']):>10}{_seconds(t['stderr_s']):>9}"
                f"{t['current']:>12}{t['proposed']:>10}"
                for t in cap["terms"]
            ]
            lines.append(
                f"  tokens per GPU second (median): now {_seconds(cap['current_tokens_per_s'], 2)}"
                f", proposed {_seconds(cap['proposed_tokens_per_s'], 2)}"
            )
            memory = cap["memory"]
            if memory:
                lines.append(
                    f"  peak GPU memory: {memory['base_mb']:.0f} MB + "
                    f"{_seconds(memory['mb_per_megapixel'], 0)} MB per megapixel "
                    f"(R^2 {_seconds(memory['r2'], 2)}, {memory['samples']} jobs)"
                )
        lines += [f"  note: {note}" for note in cap["notes"]]
    for capability, count in report["unpriced"].items():
        lines.append(f"{capability}: {count} jobs, not in the book (left out)")
    change = report["revenue_change"]
    rate = f"{report['tokens_per_second']} tokens per GPU second"
    lines += [
        "",
        f"proposed rate: {rate}"
        + (" (keeps the fitted jobs' total list price)" if report["revenue_neutral"] else "")
        + ("" if change is None else f"; list tokens of the fitted jobs {change:+.1%}"),
        f"{'example':34}{'predicted s':>12}{'tokens now':>12}{'proposed':>10}",
    ]
    lines += [
        f"{e['capability'] + ' ' + str(e['width']) + 'x' + str(e['height']):34}"
        f"{_seconds(e['predicted_s']):>12}{e['current_tokens']:>12}{e['proposed_tokens']:>10}"
        for e in report["examples"]
    ]
    version = report["price_book"]["version"]
    lines.append("")
    if output is not None:
        lines.append(f"proposed book {version} written to {output}; activate it with:")
        lines.append(
            f"  comfygate price-books activate {output}"
            + (f" --account {account}" if account else "")
        )
    else:
        lines.append(f"proposed book {version}: give --output FILE to save it for activation")
    return "\n".join(lines)


def register(group: click.Group) -> None:
    group.add_command(pricing_group)
