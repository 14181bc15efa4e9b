"""CLI commands for the database schema: ``db upgrade`` and ``db status``.

They need the database alone (no container: no price book, plan catalog or engine
is read), and ``auto_migrate`` does not stop them on a schema behind the code: they
are how an operator who turned it off migrates, once, and checks. (``db upgrade``
refuses a schema ahead of the code; ``db status`` reports it.)

``db status`` exits 0 when the schema is the code's, ``EXIT_BEHIND`` when revisions
are pending and ``EXIT_AHEAD`` when the database has revisions the code does not
know (1 stays every command's error, 2 click's usage error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from comfygate.adapters.db import migrate
from comfygate.domain.errors import InvalidInputError
from comfygate.entrypoints.cli import context, emit

EXIT_BEHIND = 3
EXIT_AHEAD = 4

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("db")
def db_group() -> None:
    """The database schema (each area of it is an Alembic branch)."""


@db_group.command("upgrade")
@json_option
@click.pass_context
def db_upgrade(ctx: click.Context, as_json: bool) -> None:
    """Apply every pending revision (idempotent); print what was applied.

    JSON: ``applied`` (revisions, each branch's oldest first), ``before`` and
    ``after`` (branch -> revision, null for none) and ``heads`` (the code's).
    Refuses a database with revisions this code does not know.
    """
    done = migrate.upgrade(context(ctx).engine())
    emit(
        {
            "applied": list(done.applied),
            "before": done.before.revisions(),
            "after": done.after.revisions(),
            "heads": list(done.after.heads),
        },
        as_json=as_json,
        human=_upgrade_text,
    )


def _upgrade_text(data: dict[str, Any]) -> str:
    lines = []
    for branch, after in data["after"].items():
        before = data["before"].get(branch)
        change = "(unchanged)" if before == after else f"-> {after}"
        lines.append(f"{branch:10} {before or '(none)'} {change}")
    applied = data["applied"]
    lines.append(
        f"applied {migrate.revisions(len(applied))}: {', '.join(applied)}"
        if applied
        else "nothing to apply: the schema is current"
    )
    return "\n".join(lines)


@db_group.command("status")
@json_option
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """Each branch's revision, the code's heads and the pending revisions.

    Exit status: 0 current, 3 revisions pending (run ``comfygate db upgrade``), 4 the
    database has revisions this code does not know (a newer comfygate migrated it).
    JSON: ``state`` (current, behind or ahead), ``branches`` (branch -> ``current``,
    ``head``, ``pending``), ``heads``, ``pending`` and ``unknown``.
    """
    app = context(ctx)
    url = sa.engine.make_url(app.settings.database_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():  # reads: makes nothing
        raise InvalidInputError(f"no SQLite database at {path}", database=path)
    found = migrate.status(app.engine())
    emit(
        {
            "state": found.state,
            "branches": {
                b.name: {"current": b.current, "head": b.head, "pending": list(b.pending)}
                for b in found.branches
            },
            "heads": list(found.heads),
            "pending": list(found.pending),
            "unknown": list(found.unknown),
        },
        as_json=as_json,
        human=_status_text,
    )
    if found.state != "current":
        ctx.exit(EXIT_AHEAD if found.state == "ahead" else EXIT_BEHIND)


def _status_text(data: dict[str, Any]) -> str:
    lines = [f"{'branch':10} {'database':16} {'code':16} pending"]
    for name, branch in data["branches"].items():
        lines.append(
            f"{name:10} {branch['current'] or '(none)':16} {branch['head'] or '(none)':16} "
            + (" ".join(branch["pending"]) or "-")
        )
    if data["state"] == "ahead":
        lines.append(
            f"ahead: the database has revisions this comfygate does not know"
            f" ({', '.join(data['unknown'])}); run a comfygate that knows them"
        )
    elif data["state"] == "behind":
        lines.append(
            f"behind: {migrate.revisions(len(data['pending']))} pending;"
            f" run `{migrate.UPGRADE_COMMAND}`"
        )
    else:
        lines.append("current")
    return "\n".join(lines)


def register(group: click.Group) -> None:
    group.add_command(db_group)
