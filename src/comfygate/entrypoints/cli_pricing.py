"""CLI commands for pricing: ``quote`` and ``price-books validate|show|history|activate|
simulate``.

They do not build anything themselves: ``register(group, build_services)`` adds them
to a click group, and ``build_services(ctx)`` returns the ``PricingServices`` (the main
CLI passes a function reading its lazily built container from ``ctx.obj``). Domain
errors exit with status 1 and ``error [code]: message`` (plus every validation
problem) on stderr; malformed arguments exit with click's usage status 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from comfygate.domain.errors import ComfygateError, ValidationFailedError
from comfygate.domain.pricing import Price
from comfygate.domain.pricing_document import parse_toml, price_book_to_document
from comfygate.domain.pricing_options import plain
from comfygate.domain.pricing_quotes import Quote
from comfygate.domain.pricing_validation import validate_price_book
from comfygate.entrypoints.cli_options import iso_time
from comfygate.services.audit import AuditLog
from comfygate.services.quoting import PriceBookRecord, PricingServices

ServicesFactory = Callable[[click.Context], PricingServices]
AuditFactory = Callable[[click.Context], AuditLog]


class DomainFailure(click.ClickException):
    """A ``ComfygateError`` shown as ``error [code]: message`` and every listed problem."""

    exit_code = 1

    def __init__(self, error: ComfygateError) -> None:
        super().__init__(f"[{error.code}]: {error.message}")
        self.problems = error.errors if isinstance(error, ValidationFailedError) else []

    def show(self, file: Any = None) -> None:
        click.echo(f"error {self.format_message()}", err=True)
        for problem in self.problems:
            click.echo(f"  - {problem}", err=True)


@contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except ComfygateError as exc:
        raise DomainFailure(exc) from exc


def _request_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options describing one request to price (shared by quote and simulate)."""
    decorators = [
        click.option("--capability", required=True, help="e.g. colorize.person"),
        click.option("--width", type=int, required=True, help="image width in pixels"),
        click.option("--height", type=int, required=True, help="image height in pixels"),
        click.option("--upscale", help="shorthand for --option upscale=F"),
        click.option("--option", "extra", multiple=True, metavar="NAME=VALUE"),
        click.option("--at", callback=iso_time, metavar="ISO", help="price at this time; no lock"),
        click.option("--account", help="price for this account (overrides, own book)"),
        click.option("--json", "as_json", is_flag=True, help="print JSON"),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def _options(upscale: str | None, extra: tuple[str, ...]) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--option")
        name = name.strip()
        if name in options:
            raise click.BadParameter(f"{name} is given twice", param_hint="--option")
        options[name] = value.strip()
    if upscale is not None:
        if "upscale" in options:
            raise click.BadParameter("give upscale once: --upscale or --option upscale=F")
        options["upscale"] = upscale
    return options


def _read_document(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return parse_toml(text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailedError("the price book is not valid JSON", errors=[str(exc)]) from exc
    if not isinstance(doc, dict):
        raise ValidationFailedError("the price book is not a table", errors=["not an object"])
    return doc


def _echo_price(result: Price | Quote, as_json: bool) -> None:
    if isinstance(result, Quote):
        price, data = result.price, result.to_dict()
        lock = f"quote {result.quote_id} locked until {result.expires_at.isoformat()}"
    else:  # priced at another time: an estimate, nothing locked
        price, data = result, {**result.to_dict(), "quote_id": None, "expires_at": None}
        lock = f"priced at {result.priced_at.isoformat()}, not locked"
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(
        f"{price.tokens} tokens  {price.capability} {price.width}x{price.height}  "
        f"price book {price.price_book_version}"
    )
    for line in price.breakdown:
        click.echo(f"  {line.step:<16} {line.to_dict()['amount']:>12}  {line.note}")
    click.echo(lock)


def _record_dict(record: PriceBookRecord) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {
        "version": record.book.version,
        "account_id": record.account_id,
        "source": record.source,
        "effective_at": iso(record.effective_at),
        "created_at": iso(record.created_at),
        "document": price_book_to_document(record.book),
    }


def _echo_record(record: PriceBookRecord) -> None:
    book = record.book
    owner = f"account {record.account_id}" if record.account_id else "default"
    since = record.effective_at.isoformat() if record.effective_at else "always (built-in)"
    click.echo(f"price book {book.version} ({owner}, {record.source}), effective {since}")
    click.echo(f"  timezone {book.timezone}, rounding {book.rounding.value}")
    for cap in book.capabilities.values():
        per = ", ".join(f"{k} x{plain(v)}" for k, v in cap.coefficients.items()) or "-"
        opts = ", ".join(cap.options) or "-"
        click.echo(
            f"  {cap.name:<20} base {plain(cap.base)}  per {per}  minimum {cap.minimum}  "
            f"options {opts}"
        )
    for window in book.time_windows:
        click.echo(f"  window {window.label()} x{plain(window.multiplier)}")
    for account_id, over in book.accounts.items():
        click.echo(f"  account {account_id}: discount {plain(over.discount_percent)}%")


def register(group: click.Group, build_services: ServicesFactory, audit_log: AuditFactory) -> None:
    """Add ``quote`` and the ``price-books`` group to ``group``; activations are
    written to ``audit_log(ctx)``, as the API's are."""

    @group.command("quote")
    @_request_options
    @click.pass_context
    def quote(
        ctx: click.Context,
        capability: str,
        width: int,
        height: int,
        upscale: str | None,
        extra: tuple[str, ...],
        at: datetime | None,
        account: str | None,
        as_json: bool,
    ) -> None:
        """Price a request; without --at, lock the price under a quote id."""
        options = _options(upscale, extra)
        with _domain_errors():
            quotes = build_services(ctx).quotes
            if account is not None:
                quotes.require_account(account)
            request: dict[str, Any] = {
                "capability": capability,
                "width": width,
                "height": height,
                "options": options,
                "account_id": account,
            }
            result = quotes.price(**request, at=at) if at else quotes.quote(**request)
        _echo_price(result, as_json)

    group.add_command(_price_books(build_services, audit_log))


def _price_books(build_services: ServicesFactory, audit_log: AuditFactory) -> click.Group:
    file_arg = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))

    @click.group("price-books")
    def books() -> None:
        """Validate, show, activate and simulate price book versions (TOML or JSON files)."""

    @books.command("validate")
    @file_arg
    def validate(file: Path) -> None:
        """Check FILE; print every problem and exit 1 if there is any. Needs no database."""
        with _domain_errors():
            problems = validate_price_book(_read_document(file))
            if problems:
                raise ValidationFailedError(f"{file} is not a valid price book", errors=problems)
        click.echo(f"{file}: valid")

    @books.command("show")
    @click.option("--account", help="the book that prices this account's requests")
    @click.option("--at", callback=iso_time, metavar="ISO", help="book in effect then")
    @click.option("--history", is_flag=True, help="every stored version, newest first")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @click.pass_context
    def show(
        ctx: click.Context, account: str | None, at: datetime | None, history: bool, as_json: bool
    ) -> None:
        """Show the price book in effect (or, with --history, the stored versions)."""
        service = build_services(ctx).price_books
        with _domain_errors():
            if history:
                records = service.history(account_id=account)
            else:
                records = [service.show(account_id=account, at=at)]
        if as_json:
            data = [_record_dict(r) for r in records]
            click.echo(json.dumps(data if history else data[0], ensure_ascii=False))
        for record in [] if as_json else records:
            _echo_record(record)

    @books.command("activate")
    @file_arg
    @click.option("--effective-at", callback=iso_time, metavar="ISO", help="default: now")
    @click.option("--account", help="make FILE this account's own (enterprise) book")
    @click.pass_context
    def activate(
        ctx: click.Context, file: Path, effective_at: datetime | None, account: str | None
    ) -> None:
        """Store FILE as a new version, in effect from --effective-at."""
        with _domain_errors():
            books = build_services(ctx).price_books
            record = books.activate(
                _read_document(file), effective_at=effective_at, account_id=account
            )
        assert record.effective_at is not None
        audit_log(ctx).record(
            actor="cli",
            action="price_books.activate",
            target=record.book.version,
            account_id=account,
            details={"effective_at": record.effective_at, "account_id": account},
        )
        owner = f"account {account}" if account else "the default book"
        click.echo(
            f"activated {record.book.version} for {owner}, "
            f"effective {record.effective_at.isoformat()}"
        )
        for gap in books.left_out(record):
            click.echo(f"note: {owner} has no {gap} in this book (the default has)", err=True)

    @books.command("simulate")
    @file_arg
    @_request_options
    @click.pass_context
    def simulate(
        ctx: click.Context,
        file: Path,
        capability: str,
        width: int,
        height: int,
        upscale: str | None,
        extra: tuple[str, ...],
        at: datetime | None,
        account: str | None,
        as_json: bool,
    ) -> None:
        """Price a request with FILE as a draft, without activating it."""
        with _domain_errors():
            price = build_services(ctx).price_books.simulate(
                _read_document(file),
                capability=capability,
                width=width,
                height=height,
                options=_options(upscale, extra),
                account_id=account,
                at=at,
            )
        _echo_price(price, as_json)

    return books
