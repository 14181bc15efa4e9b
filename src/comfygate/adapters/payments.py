"""Payment providers that talk to us through signed webhooks.

``HmacWebhookProvider`` verifies the scheme most providers use (Stripe-like): a header
``Comfygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
The timestamp is inside the signed bytes and must be within ``tolerance_s`` of our
clock, so a captured request cannot be replayed later; several ``v1=`` values are
accepted so a provider can rotate its secret. The body is JSON:
``{"id": event id, "order_id": ..., "status": "paid"|"failed"|"canceled",
"amount": "29.00", "currency": "CNY", "provider_ref": ...}``.
A real provider with another format gets its own small class with the same ``verify``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime

from comfygate.domain.errors import InvalidInputError, InvalidSignatureError
from comfygate.services.payments import PaymentNotice

SIGNATURE_HEADER = "comfygate-signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value a provider sends for ``body`` at ``timestamp`` (tests use it)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _parse_header(value: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        name, _, item = part.strip().partition("=")
        # Seconds since 1970 (up to 12 ASCII digits), and an ASCII signature: anything
        # else is malformed (``int`` refuses 4,300 digits, ``compare_digest`` non-ASCII).
        if name == "t" and 0 < len(item) <= 12 and item.isascii() and item.isdigit():
            timestamp = int(item)
        elif name == "v1" and item and item.isascii():
            signatures.append(item)
    if timestamp is None or not signatures:
        raise InvalidSignatureError("malformed signature header")
    return timestamp, signatures


class HmacWebhookProvider:
    """A provider configured with a shared secret."""

    def __init__(self, *, name: str, secret: str, tolerance_s: int = 300) -> None:
        if not secret:
            raise ValueError(f"payment provider {name!r} needs a secret")
        self.name = name
        self._secret = secret
        self._tolerance_s = tolerance_s

    def verify(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> PaymentNotice:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
        if header is None:
            raise InvalidSignatureError(f"missing {SIGNATURE_HEADER} header")
        timestamp, signatures = _parse_header(header)
        if abs(now.timestamp() - timestamp) > self._tolerance_s:
            raise InvalidSignatureError("signature timestamp outside the tolerated window")
        expected = sign(self._secret, body, timestamp).partition("v1=")[2]
        if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            raise InvalidSignatureError("signature does not match")
        return _parse_notice(self.name, body)


NOTICE_FIELD_LENGTHS = {
    "id": 200, "order_id": 40, "amount": 32, "currency": 8, "provider_ref": 200,
}  # fmt: skip
"""The most characters of each field of a notice: what the order and event rows hold.
A status of any length is taken (one we do not know is an operator's to read, whole,
in the audit log); the event row keeps its first 20 characters."""


def _parse_notice(provider: str, body: bytes) -> PaymentNotice:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("webhook body is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInputError("webhook body must be a JSON object")
    missing = [k for k in ("id", "order_id", "status") if not isinstance(doc.get(k), str)]
    if missing:
        raise InvalidInputError(f"webhook body lacks {', '.join(missing)}", missing=missing)
    optional = {k: doc.get(k) for k in ("amount", "currency", "provider_ref")}
    fields = {**optional, **{k: doc[k] for k in ("id", "order_id", "status")}}
    too_long = [
        k
        for k, most in NOTICE_FIELD_LENGTHS.items()
        if fields[k] is not None and len(str(fields[k])) > most
    ]
    if too_long:  # refused before anything is applied, rather than failing half way
        limits = ", ".join(f"{k} {NOTICE_FIELD_LENGTHS[k]}" for k in too_long)
        raise InvalidInputError(f"webhook fields too long (at most: {limits})", fields=too_long)
    return PaymentNotice(
        provider=provider,
        event_id=doc["id"],
        order_id=doc["order_id"],
        status=doc["status"],
        amount=None if optional["amount"] is None else str(optional["amount"]),
        currency=None if optional["currency"] is None else str(optional["currency"]),
        provider_ref=None if optional["provider_ref"] is None else str(optional["provider_ref"]),
    )
