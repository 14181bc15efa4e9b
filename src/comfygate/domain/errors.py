"""The domain error tree.

Every error carries a stable machine ``code`` (part of the public interface: the API
puts it in problem+json, the CLI prints it) and a human message. The API layer maps
codes to HTTP status in one table; nothing below the entrypoints knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class ComfygateError(Exception):
    """Base of every error comfygate raises on purpose."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, Any] = details

    def __str__(self) -> str:
        return self.message


# --- input -------------------------------------------------------------------------


class InvalidInputError(ComfygateError):
    """A request or command argument is malformed."""

    code = "invalid_input"


class RequestTooLargeError(InvalidInputError):
    """A request body (other than an upload, capped on its own) past the limit."""

    code = "request_too_large"


class ValidationFailedError(InvalidInputError):
    """Data (a price book, a workflow pack) failed validation; carries every problem."""

    code = "validation_failed"

    def __init__(self, message: str, /, errors: Sequence[str], **details: Any) -> None:
        super().__init__(message, errors=list(errors), **details)
        self.errors: list[str] = list(errors)


class UnknownCapabilityError(InvalidInputError):
    code = "unknown_capability"


class InvalidOptionError(InvalidInputError):
    code = "invalid_option"


class InvalidImageSizeError(InvalidInputError):
    code = "invalid_image_size"


class ExpiredGrantError(InvalidInputError):
    """A grant whose lot would expire at or before the moment it is made."""

    code = "grant_already_expired"


class PriceOutOfRangeError(InvalidInputError):
    """A request whose price would pass ``MAX_PRICE_TOKENS`` (an option value far
    beyond anything the book's author meant, with no ``max`` to stop it)."""

    code = "price_out_of_range"


# --- images (upload) ---------------------------------------------------------------


class ImageError(InvalidInputError):
    code = "invalid_image"


class EmptyUploadError(ImageError):
    code = "empty_upload"


class NotAnImageError(ImageError):
    code = "not_an_image"


class UnsupportedImageFormatError(ImageError):
    code = "unsupported_format"


class TruncatedImageError(ImageError):
    code = "truncated_image"


class CorruptImageError(ImageError):
    code = "corrupt_image"


class UploadTooLargeError(ImageError):
    code = "upload_too_large"


class TooManyPixelsError(ImageError):
    code = "too_many_pixels"


class ImageTooSmallError(ImageError):
    code = "image_too_small"


class DeclaredSizeMismatchError(ImageError):
    code = "declared_size_mismatch"


# --- lookups -----------------------------------------------------------------------


class NotFoundError(ComfygateError):
    code = "not_found"


class AccountNotFoundError(NotFoundError):
    code = "account_not_found"


class HoldNotFoundError(NotFoundError):
    code = "hold_not_found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class QuoteNotFoundError(NotFoundError):
    code = "quote_not_found"


class PlanNotFoundError(NotFoundError):
    code = "unknown_plan"


class PriceBookNotFoundError(NotFoundError):
    code = "price_book_not_found"


# --- money -------------------------------------------------------------------------


class LedgerError(ComfygateError):
    code = "ledger_error"


class InsufficientBalanceError(LedgerError):
    code = "insufficient_balance"

    def __init__(self, message: str, /, *, available: int, required: int, **details: Any):
        super().__init__(message, available=available, required=required, **details)
        self.available = available
        self.required = required


class HoldNotOpenError(LedgerError):
    """Capture or release of a hold that is already settled or expired."""

    code = "hold_not_open"


class CaptureExceedsHoldError(LedgerError):
    code = "capture_exceeds_hold"


class IdempotencyConflictError(LedgerError):
    """The same idempotency key was reused with different parameters."""

    code = "idempotency_conflict"


class QuoteExpiredError(ComfygateError):
    code = "quote_expired"


class QuoteMismatchError(ComfygateError):
    """A locked quote was presented for a different request or account."""

    code = "quote_mismatch"


class ConcurrencyLimitError(ComfygateError):
    """A fair-use limit (e.g. VIP concurrent jobs) is reached."""

    code = "concurrency_limit"


# --- identity ------------------------------------------------------------------------


class AuthenticationError(ComfygateError):
    code = "unauthenticated"


class PermissionDeniedError(ComfygateError):
    code = "forbidden"


class RateLimitedError(ComfygateError):
    code = "rate_limited"

    def __init__(self, message: str, /, *, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


# --- jobs and workers ----------------------------------------------------------------


class JobStateError(ComfygateError):
    """An action that the job's current state does not allow (e.g. cancel after finish)."""

    code = "invalid_job_state"


class WorkerError(ComfygateError):
    """A worker or engine failed a job. ``retryable`` says whether another instance may."""

    code = "worker_error"

    def __init__(self, message: str, /, *, retryable: bool = False, **details: Any) -> None:
        super().__init__(message, retryable=retryable, **details)
        self.retryable = retryable


class WorkerUnavailableError(WorkerError):
    code = "worker_unavailable"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=True, **details)


class WorkflowError(WorkerError):
    """ComfyUI rejected or failed the workflow (validation, node error): never retried."""

    code = "workflow_error"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=False, **details)


class JobTimeoutError(WorkerError):
    code = "job_timeout"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=False, **details)


# --- built-in engines ----------------------------------------------------------------


class ImageDecodeError(WorkerError):
    """An engine could not decode a job's input although its header passed inspection.

    A worker failure (raised after the hold, so the hold is released) rather than the
    upload's ``CorruptImageError``: its own code keeps the API's code -> status table
    unambiguous. Never retried: another instance would read the same bytes.
    """

    code = "image_decode_failed"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=False, **details)


class UploadRefusedError(WorkerError):
    """A worker refused a job's input outright (ComfyUI's ``--max-upload-size``, a proxy's
    body limit, a type it will not take). The instance is fine; never retried: another
    instance configured alike would refuse the same bytes."""

    code = "upload_refused"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=False, **details)


class EngineSetupError(WorkerError):
    """An engine cannot start: optional dependency missing, model file unusable."""

    code = "engine_setup_failed"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=False, **details)


class JobCancelledError(WorkerError):
    """The job was cancelled while an engine was running it."""

    code = "job_cancelled"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=False, **details)


# --- pricing -------------------------------------------------------------------------


class DuplicatePriceBookVersionError(InvalidInputError):
    """A price book version string is already taken (versions are never edited/reused)."""

    code = "duplicate_price_book_version"


# --- identity and payments (gateway) -----------------------------------------------


class UserNotFoundError(NotFoundError):
    code = "user_not_found"


class ApiKeyNotFoundError(NotFoundError):
    code = "key_not_found"


class OrderNotFoundError(NotFoundError):
    code = "order_not_found"


class PaymentProviderNotFoundError(NotFoundError):
    code = "unknown_payment_provider"


class InvalidSignatureError(AuthenticationError):
    """A payment provider's webhook failed signature (or timestamp) verification."""

    code = "invalid_signature"


class OrderStateError(ComfygateError):
    """An order action its state does not allow (e.g. confirming a canceled order)."""

    code = "invalid_order_state"


class PaymentMismatchError(InvalidInputError):
    """A provider reported a payment that does not match the order (amount, currency)."""

    code = "payment_mismatch"


# --- job results and share links -------------------------------------------------------


class WorkerLostError(WorkerError):
    """The process running a job stopped (crash, kill) before the job finished."""

    code = "worker_lost"

    def __init__(self, message: str, /, **details: Any) -> None:
        details.pop("retryable", None)
        super().__init__(message, retryable=True, **details)


class ResultNotReadyError(JobStateError):
    """A result was asked for a job that has not succeeded (yet)."""

    code = "result_not_ready"


class ResultExpiredError(NotFoundError):
    """The job succeeded but its result was deleted after the retention period."""

    code = "result_expired"


class ShareLinkInvalidError(NotFoundError):
    """A share token that is malformed, forged, or names no job."""

    code = "invalid_share_link"


class ShareLinkExpiredError(NotFoundError):
    code = "share_link_expired"


# --- deployment ------------------------------------------------------------------------


class SchemaMismatchError(ComfygateError):
    """The database's schema is not the one this code was written for. A command, or
    ``/readyz``, refuses it at once rather than failing later on a missing column."""

    code = "schema_mismatch"


class SchemaOutOfDateError(SchemaMismatchError):
    """Revisions of this code are not applied to the database (``comfygate db upgrade``
    applies them)."""

    code = "schema_out_of_date"

    def __init__(self, message: str, /, *, pending: Sequence[str], **details: Any) -> None:
        super().__init__(message, pending=list(pending), **details)
        self.pending: list[str] = list(pending)


class SchemaAheadError(SchemaMismatchError):
    """The database has revisions this code does not know: a newer comfygate migrated it."""

    code = "schema_ahead_of_code"

    def __init__(self, message: str, /, *, unknown: Sequence[str], **details: Any) -> None:
        super().__init__(message, unknown=list(unknown), **details)
        self.unknown: list[str] = list(unknown)
