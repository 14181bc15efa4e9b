"""Option types shared by the command groups (kept apart from ``cli``, which imports
the groups)."""

from __future__ import annotations

from datetime import datetime

import click


def iso_time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An option's ISO-8601 time with a UTC offset (``2024-05-01T23:30+08:00``, ``...Z``),
    parsed before the command runs: a bad one is a usage error naming the option."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset (add +08:00 or Z)")
    return parsed
