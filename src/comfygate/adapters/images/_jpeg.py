"""JPEG structure walk: marker segments up to the first scan must fit, and an
end-of-image marker (FFD9) must follow the scan header.

Entropy-coded data cannot contain FFD9 (an FF in it is always followed by 00 or a
restart marker), so an FFD9 after the first scan header is the image's end. Only the
last 64 KiB are searched, which tolerates trailers after the image (multi-picture
secondary images, vendor blocks) as long as the file still ends near an FFD9.
"""

from __future__ import annotations

import struct

from comfygate.adapters.images._source import MAX_STRUCTURE_ITEMS, ByteSource, HeaderFacts

_TAIL_BYTES = 64 * 1024
_EOI = b"\xff\xd9"
_SOS = 0xDA
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def _next_marker(src: ByteSource, pos: int) -> tuple[int, int]:
    """The marker at ``pos`` (skipping FF fill bytes) and the position after it."""
    if src.read_at(pos, 1, what="marker")[0] != 0xFF:
        raise src.corrupt(f"expected a marker at byte {pos}")
    pos += 1
    for _ in range(MAX_STRUCTURE_ITEMS):
        marker = src.read_at(pos, 1, what="marker")[0]
        pos += 1
        if marker != 0xFF:
            return marker, pos
    raise src.corrupt("endless fill bytes")


def _scan_start(src: ByteSource) -> tuple[HeaderFacts, int]:
    """Walk the segments from SOI to the first SOS; return the frame size and the
    offset just past the SOS header."""
    pos = 2
    frame: HeaderFacts | None = None
    for _ in range(MAX_STRUCTURE_ITEMS):
        marker, pos = _next_marker(src, pos)
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9):
            raise src.corrupt(f"unexpected marker FF{marker:02X} before the image data")
        (length,) = struct.unpack(">H", src.read_at(pos, 2, what="segment length"))
        if length < 2:
            raise src.corrupt(f"segment length {length} at byte {pos}")
        src.require_within(pos, length, what=f"segment FF{marker:02X}")
        if marker in _SOF and frame is None:
            if length < 8:
                raise src.corrupt("frame header is too short")
            height, width = struct.unpack(">HH", src.read_at(pos + 3, 4, what="frame header"))
            frame = src.positive_sides(width, height)
        if marker == _SOS:
            if frame is None:
                raise src.corrupt("scan before any frame header")
            return frame, pos + length
        pos += length
    raise src.corrupt(f"more than {MAX_STRUCTURE_ITEMS} segments")


def walk_jpeg(src: ByteSource) -> HeaderFacts:
    """Check a JPEG's segment structure and trailer; return its stored size."""
    frame, scan_data_at = _scan_start(src)
    tail_at = max(scan_data_at, src.size_bytes - _TAIL_BYTES)
    tail = src.read_at(tail_at, src.size_bytes - tail_at, what="trailer")
    if tail.rfind(_EOI) < 0:
        raise src.truncated("no end-of-image marker (FFD9) after the image data")
    return frame
