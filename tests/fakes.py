"""Test doubles shared by several test modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from comfygate.domain.errors import DuplicatePriceBookVersionError
from comfygate.domain.pricing import PriceBook
from comfygate.services.quoting import PriceBookRecord


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


class FakePriceBookRepository:
    """In memory, with the same "active" rule as the SQL repository."""

    def __init__(self) -> None:
        self.records: list[PriceBookRecord] = []
        self.builtins: dict[str, PriceBook] = {}

    def active(self, *, account_id: str | None, at: datetime) -> PriceBookRecord | None:
        def newest(owner: str | None) -> PriceBookRecord | None:
            found = [
                r
                for r in self.records
                if r.account_id == owner and r.effective_at is not None and r.effective_at <= at
            ]
            return max(found, key=lambda r: (r.effective_at, r.created_at), default=None)

        own = newest(account_id) if account_id is not None else None
        return own or newest(None)

    def get(self, version: str) -> PriceBookRecord | None:
        return next((r for r in self.records if r.book.version == version), None)

    def add(self, record: PriceBookRecord) -> None:
        if self.get(record.book.version):
            raise DuplicatePriceBookVersionError(f"{record.book.version} exists")
        self.records.append(record)

    def history(self, *, account_id: str | None) -> list[PriceBookRecord]:
        mine = [r for r in self.records if r.account_id == account_id]
        return sorted(mine, key=lambda r: (r.effective_at, r.created_at), reverse=True)

    def remember_builtin(self, book: PriceBook, *, at: datetime) -> PriceBook:
        return self.builtins.setdefault(book.version, book)

    def builtin(self, version: str) -> PriceBook | None:
        return self.builtins.get(version)
