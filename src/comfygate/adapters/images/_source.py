"""Random access to an upload's bytes for the structure checks, and what they report.

Every read is bounds-checked: a structure that points past the end of the file is the
definition of a truncated upload, so ``read_at`` raises ``TruncatedImageError`` itself
and the per-format walkers stay short.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import BinaryIO

from comfygate.domain.errors import CorruptImageError, TruncatedImageError
from comfygate.domain.images import ImageFormat

MAX_STRUCTURE_ITEMS = 65_536
"""Cap on chunks / segments walked: real files have a few hundred at most; millions of
empty chunks would turn a header read into a denial of service."""


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """What a structure walk learnt: stored sides, animation, maybe the EXIF block."""

    width: int
    height: int
    animated: bool = False
    exif: bytes | None = None
    """Raw EXIF found by the walk itself (PNG's eXIf chunk), so nobody decodes for it."""


class ByteSource:
    """A seekable file of known size, read by absolute offsets."""

    def __init__(self, fp: BinaryIO, size_bytes: int, image_format: ImageFormat) -> None:
        self._fp = fp
        self.size_bytes = size_bytes
        self.format = image_format

    def read_at(self, offset: int, length: int, *, what: str = "data") -> bytes:
        """``length`` bytes at ``offset``; ``TruncatedImageError`` if they are not all there."""
        if offset < 0 or length < 0:
            raise self.corrupt(f"negative offset or length for {what}")
        if offset + length > self.size_bytes:
            raise self.truncated(
                f"{what} at byte {offset} needs {length} bytes, the file ends at {self.size_bytes}"
            )
        self._fp.seek(offset)
        data = self._fp.read(length)
        if len(data) != length:  # the file shrank under us: same outcome for the caller
            raise self.truncated(f"short read of {what} at byte {offset}")
        return data

    def find(self, needle: bytes, start: int) -> int:
        """The offset of the first ``needle`` at or after ``start``, or -1. Searched at C
        speed in a read-only map of the file: nothing is copied into memory."""
        if start >= self.size_bytes:
            return -1
        with mmap.mmap(self._fp.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(needle, start, self.size_bytes)

    def require_within(self, offset: int, length: int, *, what: str) -> None:
        """Check that ``length`` bytes at ``offset`` lie inside the file without reading them."""
        if offset < 0 or length < 0:
            raise self.corrupt(f"negative offset or length for {what}")
        if offset + length > self.size_bytes:
            raise self.truncated(
                f"{what} at byte {offset} needs {length} bytes, the file ends at {self.size_bytes}"
            )

    def truncated(self, detail: str) -> TruncatedImageError:
        """A ``TruncatedImageError`` naming the format."""
        return TruncatedImageError(
            f"the {self.format.value.upper()} file is truncated: {detail}",
            format=self.format.value,
            size_bytes=self.size_bytes,
        )

    def corrupt(self, detail: str) -> CorruptImageError:
        """A ``CorruptImageError`` naming the format."""
        return CorruptImageError(
            f"the {self.format.value.upper()} file is corrupt: {detail}",
            format=self.format.value,
            size_bytes=self.size_bytes,
        )

    def positive_sides(self, width: int, height: int) -> HeaderFacts:
        """``HeaderFacts`` for the sides, which must both be positive."""
        if width <= 0 or height <= 0:
            raise self.corrupt(f"header gives an empty image ({width}x{height})")
        return HeaderFacts(width, height)
