"""CLI commands for accounts, grants, plans, balances and the ledger's maintenance."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
import sqlalchemy as sa

from comfygate.domain.ids import new_id
from comfygate.entrypoints.cli import app, emit, to_jsonable
from comfygate.entrypoints.cli_options import iso_time

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command("init")
@json_option
@click.pass_context
def init_cmd(ctx: click.Context, as_json: bool) -> None:
    """Create or upgrade the database (idempotent) and the data dir.

    The first time, also creates the operator account, user and API key and prints
    the key (``operator_key``); it is never shown again (null on later runs). It
    upgrades the schema whatever ``auto_migrate`` says.
    """
    container = app(ctx, upgrade_schema=True)
    container.prepare_data_dir()
    issued = container.identity.bootstrap_operator()
    emit(
        {
            "database": shown_url(container.settings.database_url),
            "ok": True,
            "operator_key": issued.api_key if issued else None,
        },
        as_json=as_json,
        human=lambda d: (
            f"database ready: {d['database']}"
            + (f"\noperator API key (shown once): {d['operator_key']}" if d["operator_key"] else "")
        ),
    )


@click.group("accounts")
def accounts_group() -> None:
    """Customer accounts."""


@accounts_group.command("create")
@click.argument("name")
@json_option
@click.pass_context
def accounts_create(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create an account with an empty balance and a first admin user.

    Prints the admin user's API key (``api_key``) once.
    """
    made = app(ctx).identity.create_account(name=name, actor="cli")
    emit(
        {
            "id": made.account_id,
            "name": name,
            "user_id": made.user.id,
            "api_key": made.key.api_key,
            "key_id": made.key.key_id,
        },
        as_json=as_json,
        human=lambda d: f"{d['id']}\nadmin API key (shown once): {d['api_key']}",
    )


@click.command("grant")
@click.argument("account")
@click.argument("tokens", type=int)
@click.option(
    "--expires-at", callback=iso_time, metavar="ISO", help="with an offset; none: never expires"
)
@click.option(
    "--source",
    default="promotion",
    type=click.Choice(["plan", "topup", "promotion", "adjustment"]),
    show_default=True,
)
@click.option("--priority", type=int, default=0, help="Lower is spent first among equals.")
@click.option("--idempotency-key", help="Replays with the same key grant once.")
@json_option
@click.pass_context
def grant_cmd(
    ctx: click.Context,
    account: str,
    tokens: int,
    expires_at: datetime | None,
    source: str,
    priority: int,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Grant TOKENS to ACCOUNT as a new lot."""
    receipt = app(ctx).ledger.grant(
        account_id=account,
        amount=tokens,
        source=source,
        priority=priority,
        expires_at=expires_at,
        idempotency_key=new_id("cli") if idempotency_key is None else idempotency_key,
    )
    _audit(ctx, "ledger.grant", account, receipt.lot_id, tokens=tokens, source=source,
           lot_id=receipt.lot_id)  # fmt: skip
    emit(receipt, as_json=as_json, human=lambda r: f"granted {r.amount} tokens (lot {r.lot_id})")


def shown_url(url: str) -> str:
    """A database URL as it may be printed: without its password."""
    return sa.make_url(url).render_as_string(hide_password=True)


def _audit(
    ctx: click.Context, action: str, account: str, once_for: str | None, **details: Any
) -> None:
    """Money moved from the command line is audited like money moved over the API:
    once for what it made (``once_for``), so a replay writes an entry a failure lost."""
    app(ctx).audit.record(
        actor="cli",
        action=action,
        target=account,
        account_id=account,
        details=details,
        once_for=once_for,
    )


@click.command("subscribe")
@click.argument("account")
@click.argument("plan")
@json_option
@click.pass_context
def subscribe_cmd(ctx: click.Context, account: str, plan: str, as_json: bool) -> None:
    """Subscribe ACCOUNT to PLAN (grants the current period; idempotent)."""
    receipt = app(ctx).plans.subscribe(account_id=account, plan=plan)
    _audit_once(ctx, receipt, "subscriptions.create", account, plan)
    _emit_subscription(ctx, receipt, as_json)


@click.command("renew")
@click.argument("account")
@click.argument("plan")
@json_option
@click.pass_context
def renew_cmd(ctx: click.Context, account: str, plan: str, as_json: bool) -> None:
    """Renew ACCOUNT's PLAN: grants the next period (idempotent per period)."""
    receipt = app(ctx).plans.renew(account_id=account, plan=plan)
    _audit_once(ctx, receipt, "subscriptions.renew", account, plan)
    _emit_subscription(ctx, receipt, as_json)


@click.command("topup")
@click.argument("account")
@click.argument("plan")
@click.option("--idempotency-key", help="E.g. the payment order id.")
@json_option
@click.pass_context
def topup_cmd(
    ctx: click.Context, account: str, plan: str, idempotency_key: str | None, as_json: bool
) -> None:
    """Grant a top-up pack PLAN to ACCOUNT."""
    receipt = app(ctx).plans.buy_topup(
        account_id=account,
        plan=plan,
        idempotency_key=new_id("cli") if idempotency_key is None else idempotency_key,
    )
    _audit_once(ctx, receipt, "ledger.topup", account, plan)
    _emit_subscription(ctx, receipt, as_json)


def _audit_once(ctx: click.Context, receipt: Any, action: str, account: str, plan: str) -> None:
    """Audit what moved tokens, once per period (or top-up lot): a replay (the same
    period, or key) moved none, and writes an entry only where a failure lost one."""
    once_for = receipt.subscription_id or receipt.lot_id
    _audit(ctx, action, account, once_for, plan=plan, tokens=receipt.tokens_granted,
           replayed=receipt.replayed)  # fmt: skip


def _emit_subscription(ctx: click.Context, receipt: Any, as_json: bool) -> None:
    """The receipt; in words, its period in the plan catalog's timezone, where a month
    is a month."""
    tz = app(ctx).plans.catalog.timezone
    zone = ZoneInfo(tz)

    def describe(r: Any) -> str:
        start, end = r.period_start.astimezone(zone), r.period_end.astimezone(zone)
        what = "unlimited" if r.unlimited else f"{r.tokens_granted} tokens"
        again = " (granted before: nothing new)" if r.replayed else ""
        return (
            f"{r.plan}: {what} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({tz})" + again
        )

    emit(receipt, as_json=as_json, human=describe)


@click.command("plans")
@json_option
@click.pass_context
def plans_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the plan catalog."""
    plans = list(app(ctx).plans.catalog.plans.values())
    emit(
        plans,
        as_json=as_json,
        human=lambda ps: "\n".join(
            f"{p.name:12} {p.kind:9} {p.tokens or '-':>6} {p.price:>11}  {p.title}" for p in ps
        ),
    )


@click.command("balance")
@click.argument("account")
@json_option
@click.pass_context
def balance_cmd(ctx: click.Context, account: str, as_json: bool) -> None:
    """Show ACCOUNT's balance: available, held, unlimited, and its lots."""
    view = app(ctx).accounts.balance(account_id=account)
    data = {
        "available": view.available,
        "held": view.held,
        "unlimited": view.unlimited,
        "unlimited_until": view.unlimited_until,
        "lots": view.lots,
    }
    upcoming = sum(lot.remaining for lot in view.lots if not lot.started)
    emit(
        data,
        as_json=as_json,
        human=lambda d: (
            f"available {d['available']}  held {d['held']}"
            + (f"  upcoming {upcoming} (granted ahead of their period)" if upcoming else "")
            + ("  (unlimited)" if d["unlimited"] else "")
        ),
    )


@click.command("statement")
@click.argument("account")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--before", help="Page: transactions older than this transaction id.")
@json_option
@click.pass_context
def statement_cmd(
    ctx: click.Context, account: str, limit: int, before: str | None, as_json: bool
) -> None:
    """ACCOUNT's ledger transactions, newest first."""
    lines = app(ctx).accounts.statement(account_id=account, limit=limit, before=before)
    emit(
        lines,
        as_json=as_json,
        human=lambda ls: (
            "\n".join(
                f"{x.created_at:%Y-%m-%d %H:%M:%S}  {x.kind:12} available {x.available_delta:+7d}  "
                f"held {x.held_delta:+7d}  {x.txn_id}"
                for x in ls
            )
            or "no transactions"
        ),
    )


@click.command("reconcile")
@json_option
@click.pass_context
def reconcile_cmd(ctx: click.Context, as_json: bool) -> None:
    """Recompute balances from postings; exit 1 if anything drifted."""
    report = app(ctx).accounts.reconcile()
    emit(
        to_jsonable(report),
        as_json=as_json,
        human=_describe_reconcile,
    )
    if not report.ok:
        ctx.exit(1)


def _describe_reconcile(report: dict[str, Any]) -> str:
    if report["ok"]:
        return "ledger consistent"
    lines = [f"{len(report['drifts'])} drift(s):"]
    for d in report["drifts"]:
        line = f"  {d['account_id']}: {d['what']}"
        if d["unit"] == "tokens":  # (a hold's state says it all in ``what``)
            line += f" is {d['cached']}, the postings say {d['derived']}"
        lines.append(line)
    if sum(report["book_totals"].values()) != 0:
        lines.append(f"  postings do not sum to zero: {report['book_totals']}")
    return "\n".join(lines)


@click.command("expire")
@json_option
@click.pass_context
def expire_cmd(ctx: click.Context, as_json: bool) -> None:
    """Release overdue holds and write off expired lots (idempotent); exit 1 if the
    expiry of any account failed (the others' went ahead)."""
    report = app(ctx).ledger.expire()
    emit(
        report,
        as_json=as_json,
        human=lambda r: (
            f"released {r.holds_expired} hold(s) ({r.tokens_released} tokens), "
            f"wrote off {r.lots_expired} lot(s) ({r.tokens_written_off} tokens)"
            + "".join(f"\nfailed: {account} (see the log)" for account in r.failed_accounts)
        ),
    )
    if report.failed_accounts:
        ctx.exit(1)


def register(group: click.Group) -> None:
    for command in (
        init_cmd,
        accounts_group,
        grant_cmd,
        subscribe_cmd,
        renew_cmd,
        topup_cmd,
        plans_cmd,
        balance_cmd,
        statement_cmd,
        reconcile_cmd,
        expire_cmd,
    ):
        group.add_command(command)
