"""JPEG structure walk: marker segments up to the first scan must fit, and an
end-of-image marker (FFD9) must follow the scan header.

The header before the first scan is bounded three ways, because Pillow walks it again
byte by byte in Python after us: a few fill bytes per marker, a number of segments and
a number of bytes. Each bound is far above what cameras and phones write (see below);
past it the file is refused as corrupt before Pillow is asked.

Entropy-coded data cannot contain FFD9 (an FF in it is always followed by 00 or a
restart marker), so an FFD9 after the first scan header is the image's end. It is
searched for from there forward, over the whole rest of the file at C speed, so
trailers of any length after the image are tolerated: multi-picture secondary images,
vendor blocks, the MP4 a phone's "motion photo" appends.
"""

from __future__ import annotations

import struct

from comfygate.adapters.images._source import ByteSource, HeaderFacts

_MAX_FILL_BYTES = 16
"""FF fill bytes allowed before one marker. The standard allows any number, encoders
write none (libjpeg, phones) or a few to align; thousands only make readers spin."""
_MAX_HEADER_SEGMENTS = 1024
"""Segments before the first scan. A rich phone photo has EXIF, XMP, up to 256 extended
XMP segments (16 MiB of depth map or original image), an ICC profile in at most 255
segments, MPF, and a dozen tables: well under 1024. Empty segments cost Pillow a Python
loop turn each, so this also caps its work (65,536 of them take it 0.2 s)."""
_MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Bytes before the first scan. APPn segments carry at most 64 KiB each: EXIF with its
thumbnail, XMP, ICC and MPF fit in a few hundred KiB; Google's extended XMP (portrait
depth maps, the original of an edited photo) reaches a few MiB. 16 MiB is above all
of them and keeps a 50 MiB upload from being mostly header."""
_EOI = b"\xff\xd9"
_SOS = 0xDA
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def _next_marker(src: ByteSource, pos: int) -> tuple[int, int]:
    """The marker at ``pos`` (skipping FF fill bytes) and the position after it."""
    window_bytes = min(_MAX_FILL_BYTES + 2, max(0, src.size_bytes - pos))
    window = src.read_at(pos, window_bytes, what="marker")
    if not window:
        raise src.truncated(f"no marker at byte {pos}")
    if window[0] != 0xFF:
        raise src.corrupt(f"expected a marker at byte {pos}")
    rest = window[1:].lstrip(b"\xff")
    if not rest:
        if len(window) < _MAX_FILL_BYTES + 2:
            raise src.truncated(f"the file ends in fill bytes after byte {pos}")
        raise src.corrupt(f"more than {_MAX_FILL_BYTES} fill bytes at byte {pos}")
    fill_bytes = len(window) - 1 - len(rest)
    return rest[0], pos + 2 + fill_bytes


def _scan_start(src: ByteSource) -> tuple[HeaderFacts, int]:
    """Walk the segments from SOI to the first SOS; return the frame size and the
    offset just past the SOS header."""
    pos = 2
    frame: HeaderFacts | None = None
    for _ in range(_MAX_HEADER_SEGMENTS):
        marker, pos = _next_marker(src, pos)
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9):
            raise src.corrupt(f"unexpected marker FF{marker:02X} before the image data")
        (length,) = struct.unpack(">H", src.read_at(pos, 2, what="segment length"))
        if length < 2:
            raise src.corrupt(f"segment length {length} at byte {pos}")
        src.require_within(pos, length, what=f"segment FF{marker:02X}")
        if pos + length > _MAX_HEADER_BYTES:
            raise src.corrupt(f"more than {_MAX_HEADER_BYTES} bytes before the image data")
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
    raise src.corrupt(f"more than {_MAX_HEADER_SEGMENTS} segments before the image data")


def walk_jpeg(src: ByteSource) -> HeaderFacts:
    """Check a JPEG's segment structure and trailer; return its stored size."""
    frame, scan_data_at = _scan_start(src)
    if src.find(_EOI, scan_data_at) < 0:
        raise src.truncated("no end-of-image marker (FFD9) after the image data")
    return frame
