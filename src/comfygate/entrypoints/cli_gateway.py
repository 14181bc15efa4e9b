"""CLI commands for the gateway: ``serve``, ``keys create|revoke|list``, ``users create``.

The CLI is a trusted actor (whoever can run it can read the database): its changes
are audited as actor ``cli``.
"""

from __future__ import annotations

import click

from comfygate.entrypoints.cli import app, emit
from comfygate.services.identity_types import Role

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
ROLES = click.Choice([r.value for r in Role])


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default: settings, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default: settings, 8000).")
@click.pass_context
def serve_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the HTTP API. On an empty database, initialise it and print an operator key once.

    With ``auto_migrate`` off it migrates nothing: a schema unlike the code's stops it.
    """
    import uvicorn

    from comfygate.entrypoints.api.app import create_app
    from comfygate.entrypoints.api.logs import configure_logging

    container = app(ctx)  # upgrades the schema, or with auto_migrate off refuses a stale one
    container.prepare_data_dir()
    settings = container.settings
    configure_logging(settings.log_level)
    issued = container.identity.bootstrap_operator()
    if issued is not None:
        click.echo(f"operator API key (shown once, keep it safe): {issued.api_key}")
    host = host or settings.host
    port = settings.port if port is None else port
    click.echo(f"comfygate serving on http://{host}:{port} (docs at /docs)")
    uvicorn.run(
        create_app(container),
        host=host,
        port=port,
        log_config=None,  # our JSON logs (configure_logging), not uvicorn's
        access_log=False,  # the request middleware writes the access log
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


@click.group("keys")
def keys_group() -> None:
    """API keys."""


@keys_group.command("create")
@click.argument("account")
@click.option("--role", type=ROLES, default=None, help="Default: user (or the user's role).")
@click.option("--user", "user_id", default=None, help="Existing user; else a new user is made.")
@click.option("--label", default="", help="A note, e.g. the app that uses the key.")
@json_option
@click.pass_context
def keys_create(
    ctx: click.Context,
    account: str,
    role: str | None,
    user_id: str | None,
    label: str,
    as_json: bool,
) -> None:
    """Issue an API key for ACCOUNT; the key is printed once."""
    issued = app(ctx).identity.create_key(
        account_id=account,
        actor="cli",
        role=Role(role) if role else None,
        user_id=user_id,
        label=label,
    )
    emit(
        {
            "api_key": issued.api_key,
            "key_id": issued.key_id,
            "account_id": issued.account_id,
            "user_id": issued.user_id,
            "role": issued.role.value,
        },
        as_json=as_json,
        human=lambda d: f"{d['api_key']}\n(key {d['key_id']}, role {d['role']}; shown once)",
    )


@keys_group.command("revoke")
@click.argument("key_id")
@json_option
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Revoke KEY_ID (idempotent)."""
    key = app(ctx).identity.revoke_key(key_id=key_id, actor="cli")
    emit(
        {"key_id": key.id, "revoked_at": key.revoked_at},
        as_json=as_json,
        human=lambda d: f"revoked {d['key_id']}",
    )


@keys_group.command("list")
@click.argument("account")
@json_option
@click.pass_context
def keys_list(ctx: click.Context, account: str, as_json: bool) -> None:
    """ACCOUNT's keys (never their secrets)."""
    keys = app(ctx).identity.keys(account_id=account, actor="cli")
    rows = [
        {
            "key_id": k.id,
            "user_id": k.user_id,
            "role": k.role.value,
            "label": k.label,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
        }
        for k in keys
    ]
    emit(
        rows,
        as_json=as_json,
        human=lambda rs: (
            "\n".join(
                f"{r['key_id']}  {r['role']:8} {'revoked' if r['revoked_at'] else 'active':8} "
                f"{r['label']}"
                for r in rs
            )
            or "no keys"
        ),
    )


@click.group("users")
def users_group() -> None:
    """Users of an account."""


@users_group.command("create")
@click.argument("account")
@click.argument("name")
@click.option("--role", type=ROLES, default=Role.USER.value, show_default=True)
@json_option
@click.pass_context
def users_create(ctx: click.Context, account: str, name: str, role: str, as_json: bool) -> None:
    """Add user NAME to ACCOUNT (issue it a key with ``keys create --user``)."""
    user = app(ctx).identity.create_user(
        account_id=account, name=name, role=Role(role), actor="cli"
    )
    emit(
        {"id": user.id, "account_id": user.account_id, "name": user.name, "role": user.role.value},
        as_json=as_json,
        human=lambda d: d["id"],
    )


def register(group: click.Group) -> None:
    for command in (serve_cmd, keys_group, users_group):
        group.add_command(command)
