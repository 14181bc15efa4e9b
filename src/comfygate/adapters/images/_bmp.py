"""BMP structure check: the file-size field must match, the pixel array must fit."""

from __future__ import annotations

import struct

from comfygate.adapters.images._source import ByteSource, HeaderFacts

_CORE_HEADER_BYTES = 12  # OS/2 BITMAPCOREHEADER: 16-bit sides
_UNCOMPRESSED = frozenset({0, 3, 6})  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS
_EMBEDDED = {4: "JPEG", 5: "PNG"}
_BIT_COUNTS = frozenset({1, 2, 4, 8, 16, 24, 32})


def walk_bmp(src: ByteSource) -> HeaderFacts:
    """Check a BMP's headers against its length and return its stored size."""
    declared_bytes, _, pixel_offset, dib_bytes = struct.unpack(
        "<IIII", src.read_at(2, 16, what="file header")
    )
    if declared_bytes > src.size_bytes:
        raise src.truncated(
            f"header declares {declared_bytes} bytes, the file has {src.size_bytes}"
        )
    if declared_bytes < src.size_bytes:
        raise src.corrupt(f"header declares {declared_bytes} bytes, the file has {src.size_bytes}")
    if dib_bytes == _CORE_HEADER_BYTES:
        width, height, _, bit_count = struct.unpack("<HHHH", src.read_at(18, 8, what="DIB header"))
        compression = 0
    else:
        width, height, _, bit_count, compression = struct.unpack(
            "<iiHHI", src.read_at(18, 16, what="DIB header")
        )
    if bit_count not in _BIT_COUNTS:
        raise src.corrupt(f"{bit_count} bits per pixel")
    if compression in _EMBEDDED:
        raise src.corrupt(f"BMP with an embedded {_EMBEDDED[compression]} stream")
    facts = src.positive_sides(width, abs(height))  # negative height: rows stored top-down
    if compression in _UNCOMPRESSED:
        row_bytes = (facts.width * bit_count + 31) // 32 * 4
        src.require_within(pixel_offset, row_bytes * facts.height, what="pixel array")
    elif pixel_offset >= src.size_bytes:
        raise src.truncated("the pixel data starts past the end of the file")
    return facts
