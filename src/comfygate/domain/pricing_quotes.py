"""Locked quotes: a price held for a few minutes under an id.

Submitting a job with a quote id charges exactly the quoted tokens, provided the quote
is the same account's, for the same request, and not expired. A quote is a price
lock, not a voucher: it may be presented more than once until it expires (a retried
submission must not fail because the first attempt "used" it); duplicate submissions
are the job layer's business (idempotency keys, duplicate-image checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from comfygate.domain.errors import QuoteExpiredError, QuoteMismatchError, QuoteNotFoundError
from comfygate.domain.pricing import BreakdownLine, Price
from comfygate.domain.pricing_options import JsonScalar


@dataclass(frozen=True, slots=True)
class Quote:
    """A ``Price`` locked under ``quote_id`` until ``expires_at``."""

    quote_id: str
    price: Price
    expires_at: datetime

    @property
    def tokens(self) -> int:
        return self.price.tokens

    @property
    def breakdown(self) -> tuple[BreakdownLine, ...]:
        return self.price.breakdown

    @property
    def price_book_version(self) -> str:
        return self.price.price_book_version

    @property
    def account_id(self) -> str | None:
        return self.price.account_id

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def check_redeemable(
        self,
        *,
        account_id: str | None,
        capability: str,
        width: int,
        height: int,
        options: Mapping[str, JsonScalar] | None,
        now: datetime,
    ) -> None:
        """Raise ``QuoteNotFoundError`` (another account's: it does not exist for the
        caller, whose ids cannot be probed), ``QuoteExpiredError`` or
        ``QuoteMismatchError`` unless this quote may price the given request now.
        ``options`` must be normalised (defaults filled); None means they could not be
        (so they are not this quote's)."""
        if account_id != self.price.account_id:
            raise QuoteNotFoundError(f"no quote {self.quote_id!r}", quote_id=self.quote_id)
        if self.is_expired(now):
            raise QuoteExpiredError(
                f"quote {self.quote_id} expired at {self.expires_at.isoformat()}",
                quote_id=self.quote_id,
                expired_at=self.expires_at.isoformat(),
            )
        p = self.price
        asked = (capability, width, height, None if options is None else dict(options))
        if asked != (p.capability, p.width, p.height, dict(p.options)):
            raise QuoteMismatchError(
                f"quote {self.quote_id} was made for a different request "
                f"({p.capability} {p.width}x{p.height} {dict(p.options)})",
                quote_id=self.quote_id,
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: the price plus ``quote_id`` and ``expires_at``."""
        return {
            **self.price.to_dict(),
            "quote_id": self.quote_id,
            "expires_at": self.expires_at.isoformat(),
        }
