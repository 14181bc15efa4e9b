"""Every table, registered on ``base.metadata`` by importing each area's module."""

from __future__ import annotations

from comfygate.adapters.db import (
    tables_identity,
    tables_jobs,
    tables_ledger,
    tables_payments,
    tables_pricing,
)

__all__ = [
    "tables_identity",
    "tables_jobs",
    "tables_ledger",
    "tables_payments",
    "tables_pricing",
]
