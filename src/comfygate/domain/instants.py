"""The instants comfygate accepts: aware, and a day inside what a datetime holds, so
that every time zone (and every database column) can show them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def in_range(value: datetime) -> bool:
    """Whether the aware ``value`` is one of them (converting it cannot overflow)."""
    return EARLIEST <= value <= LATEST
