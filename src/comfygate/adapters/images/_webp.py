"""WebP structure walk: the RIFF size must equal the file's, every chunk must fit.

The stored size comes from the VP8X canvas when there is one, otherwise from the VP8
(lossy) or VP8L (lossless) bitstream header.
"""

from __future__ import annotations

import struct

from comfygate.adapters.images._source import MAX_STRUCTURE_ITEMS, ByteSource, HeaderFacts

_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F
_VP8X_ANIMATION_FLAG = 0x02


def _vp8_sides(src: ByteSource, data: bytes) -> tuple[int, int]:
    if len(data) < 10 or data[3:6] != _VP8_START_CODE:
        raise src.corrupt("VP8 frame header has no start code")
    width, height = struct.unpack("<HH", data[6:10])
    return width & 0x3FFF, height & 0x3FFF


def _vp8l_sides(src: ByteSource, data: bytes) -> tuple[int, int]:
    if len(data) < 5 or data[0] != _VP8L_SIGNATURE:
        raise src.corrupt("VP8L header has no signature")
    bits = int.from_bytes(data[1:5], "little")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def _check_riff_size(src: ByteSource) -> int:
    riff_bytes = int.from_bytes(src.read_at(4, 4, what="RIFF header"), "little")
    end = 8 + riff_bytes
    if end > src.size_bytes:
        raise src.truncated(f"RIFF header declares {end} bytes, the file has {src.size_bytes}")
    if end < src.size_bytes:
        raise src.corrupt(f"RIFF header declares {end} bytes, the file has {src.size_bytes}")
    return end


def walk_webp(src: ByteSource) -> HeaderFacts:
    """Check a WebP's RIFF structure and return its stored size."""
    end = _check_riff_size(src)
    canvas: tuple[int, int] | None = None
    bitstream: tuple[int, int] | None = None
    animated = False
    pos = 12
    for _ in range(MAX_STRUCTURE_ITEMS):
        if pos == end:
            break
        fourcc, length = struct.unpack("<4sI", src.read_at(pos, 8, what="chunk header"))
        padded = length + (length & 1)
        src.require_within(pos, 8 + padded, what=f"chunk {fourcc!r}")
        if fourcc == b"VP8X":
            head = src.read_at(pos + 8, min(length, 10), what="VP8X")
            if len(head) < 10:
                raise src.corrupt("VP8X chunk is too short")
            animated = bool(head[0] & _VP8X_ANIMATION_FLAG)
            canvas = (
                int.from_bytes(head[4:7], "little") + 1,
                int.from_bytes(head[7:10], "little") + 1,
            )
        elif fourcc in (b"VP8 ", b"VP8L") and bitstream is None:
            head = src.read_at(pos + 8, min(length, 10), what="bitstream header")
            bitstream = _vp8_sides(src, head) if fourcc == b"VP8 " else _vp8l_sides(src, head)
        pos += 8 + padded
    else:
        raise src.corrupt(f"more than {MAX_STRUCTURE_ITEMS} chunks")
    if bitstream is None and not animated:
        raise src.corrupt("no VP8 or VP8L image chunk")
    sides = canvas or bitstream
    assert sides is not None
    facts = src.positive_sides(*sides)
    return HeaderFacts(facts.width, facts.height, animated=animated)
