"""Every table, registered on ``base.metadata`` by importing each area's module."""

from __future__ import annotations

from comfygate.adapters.db import tables_ledger

__all__ = ["tables_ledger"]
