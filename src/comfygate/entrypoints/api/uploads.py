"""Stream a ``multipart/form-data`` request: the image to disk, the other fields to memory.

Starlette's ``request.form()`` would spool the whole file before we could count it;
here the request body is parsed as it arrives (python-multipart's streaming parser) and
the image part's bytes go straight into ``adapters.images.receive_upload``, which
hashes them, writes them to a temporary file and stops at the size cap. Text fields are
capped too. Nothing is kept when anything fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from comfygate.adapters.images import receive_upload
from comfygate.domain.errors import InvalidImageSizeError, InvalidInputError, UploadTooLargeError
from comfygate.domain.images import ReceivedFile

MAX_FIELDS_BYTES = 64 * 1024
"""Everything of the form but the file: values, part names and part headers."""
MAX_PARTS = 64
FRAMING_BYTES = 64 * 1024
"""Room for a form's boundaries, beside its file and its text: a body longer than the
three together carries something no part holds (a parser discards what follows the
closing boundary, so a client could stream it for ever)."""
RESERVED_FIELDS = frozenset({"capability", "options", "quote_id", "width", "height"})
"""Form fields with a meaning of their own; every other text field is an option."""
MAX_OPTIONS_DEPTH = 32
"""Nesting of the ``options`` JSON: options are flat (name -> number, flag or word);
a deeper document is refused here rather than recursed through later."""


@dataclass(frozen=True, slots=True)
class UploadForm:
    file: ReceivedFile
    fields: dict[str, str]


class _Collector:
    """Parser callbacks: routes each part's bytes to the file buffer or a text field."""

    def __init__(self, file_field: str) -> None:
        self.file_field = file_field
        self.fields: dict[str, str] = {}
        self.file_seen = False
        self.file_data = bytearray()
        self.fields_bytes = 0
        self.parts = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._part_name: str | None = None
        self._part_is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header(self._header_name, d[s:e]),
            "on_header_value": lambda d, s, e: self._header(self._header_value, d[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidInputError(f"a form of more than {MAX_PARTS} parts")
        self._part_name, self._part_is_file = None, False
        self._value = bytearray()

    def _header(self, into: bytearray, data: bytes) -> None:
        self._count(len(data))
        into.extend(data)

    def _count(self, size: int) -> None:
        """Count ``size`` more bytes of the form's text (not its file) against the cap:
        once only values counted, and 20,000 empty fields went through."""
        self.fields_bytes += size
        if self.fields_bytes > MAX_FIELDS_BYTES:
            raise InvalidInputError(f"form fields exceed {MAX_FIELDS_BYTES} bytes")

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            _, params = parse_options_header(bytes(self._header_value))
            name = params.get(b"name", b"").decode("utf-8", "replace")
            self._part_name = name
            self._part_is_file = name == self.file_field
            if self._part_is_file and self.file_seen:
                raise InvalidInputError(f"send one {self.file_field!r} file, not several")
            self.file_seen = self.file_seen or self._part_is_file
        self._header_name, self._header_value = bytearray(), bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            self.file_data += data[start:end]
            return
        self._count(end - start)
        self._value += data[start:end]

    def _part_end(self) -> None:
        if self._part_name and not self._part_is_file:
            self.fields[self._part_name] = self._value.decode("utf-8", "replace")


def _boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidInputError("expected multipart/form-data with a boundary")
    return params[b"boundary"]


async def read_upload(
    request: Request,
    *,
    file_field: str,
    dest_dir: Path,
    max_bytes: int,
    offload: Callable[..., Awaitable[Any]] = asyncio.to_thread,
) -> UploadForm:
    """The file part ``file_field`` on disk (hashed, size-capped) and the text fields.

    Raises ``InvalidInputError`` for a malformed body or a missing file part,
    ``UploadTooLargeError`` past ``max_bytes``, ``EmptyUploadError`` for an empty file.
    """
    collector = _Collector(file_field)
    parser = MultipartParser(_boundary(request), collector.callbacks())  # type: ignore[arg-type]
    most = max_bytes + MAX_FIELDS_BYTES + FRAMING_BYTES

    async def file_chunks() -> AsyncIterator[bytes]:
        read = 0
        async for chunk in request.stream():
            read += len(chunk)
            if read > most:
                raise UploadTooLargeError(
                    f"the request is larger than its file ({max_bytes} bytes at most) and "
                    "form can be",
                    max_bytes=max_bytes,
                )
            try:
                parser.write(chunk)
            except InvalidInputError:
                raise
            except Exception as exc:  # the parser's own errors: a malformed body
                raise InvalidInputError(f"malformed multipart body: {exc}") from None
            if collector.file_data:
                data, collector.file_data = bytes(collector.file_data), bytearray()
                yield data
        parser.finalize()
        if not collector.file_seen:
            raise InvalidInputError(f"the form has no {file_field!r} file part", field=file_field)

    received = await receive_upload(
        file_chunks(), dest_dir=dest_dir, max_bytes=max_bytes, offload=offload
    )
    return UploadForm(received, collector.fields)


def _too_deep(value: object) -> bool:
    """Whether ``value`` nests deeper than ``MAX_OPTIONS_DEPTH`` (walked without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_OPTIONS_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def form_options(fields: dict[str, str]) -> dict[str, Any]:
    """A form's options: the ``options`` field's JSON object, then every text field that
    is not reserved (those win). ``InvalidInputError`` for anything but a JSON object of
    reasonable depth."""
    options: dict[str, Any] = {}
    if fields.get("options", "").strip():
        try:
            parsed = json.loads(fields["options"])
        except (ValueError, RecursionError):
            # RecursionError: nesting past the interpreter's limit (json is recursive).
            parsed = None
        if not isinstance(parsed, dict) or _too_deep(parsed):
            raise InvalidInputError(
                f"options must be a JSON object nested at most {MAX_OPTIONS_DEPTH} deep",
                field="options",
            )
        options.update(parsed)
    options.update({k: v for k, v in fields.items() if k not in RESERVED_FIELDS})
    return options


def whole_number(text: str, *, digits: int) -> int | None:
    """``text`` as a whole number of at most ``digits`` ASCII digits, else None.
    (``str.isdigit`` alone also takes ``²`` and other digits ``int`` refuses, and
    ``int`` refuses more than 4,300 digits.)"""
    if 0 < len(text) <= digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def declared_size(fields: dict[str, str]) -> tuple[int, int] | None:
    """The form's ``width`` and ``height``, when it declares them: the image must be
    that size (SPEC §8), on a quote as on a job."""
    width, height = fields.get("width", "").strip(), fields.get("height", "").strip()
    if not width and not height:
        return None
    w, h = whole_number(width, digits=9), whole_number(height, digits=9)
    if not w or not h:
        raise InvalidImageSizeError("declare both width and height as positive whole numbers")
    return w, h
