"""PNG structure walk: signature, IHDR first (with a good CRC), chunks that fit, IEND.

Only chunk headers are read (8 bytes each, the data is skipped by seeking), so the cost
is the number of chunks, not the size of the image. The eXIf chunk is kept: Pillow's
``getexif()`` on a PNG decodes the whole image to look for it after the pixel data.
"""

from __future__ import annotations

import struct
import zlib

from comfygate.adapters.images._source import MAX_STRUCTURE_ITEMS, ByteSource, HeaderFacts

_SIGNATURE_BYTES = 8
_MAX_CHUNK_BYTES = 2**31 - 1  # the PNG specification's limit


def _is_chunk_type(chunk_type: bytes) -> bool:
    return all(65 <= c <= 90 or 97 <= c <= 122 for c in chunk_type)


def walk_png(src: ByteSource) -> HeaderFacts:
    """Check a PNG's chunk structure and return its stored size."""
    length, chunk_type = struct.unpack(">I4s", src.read_at(_SIGNATURE_BYTES, 8, what="IHDR"))
    if chunk_type != b"IHDR" or length != 13:
        raise src.corrupt("the first chunk is not a 13-byte IHDR")
    ihdr = src.read_at(_SIGNATURE_BYTES + 4, 4 + 13 + 4, what="IHDR")
    if zlib.crc32(ihdr[:-4]) != int.from_bytes(ihdr[-4:], "big"):
        raise src.corrupt("IHDR checksum mismatch")
    width, height = struct.unpack(">II", ihdr[4:12])
    if width > _MAX_CHUNK_BYTES or height > _MAX_CHUNK_BYTES:
        raise src.corrupt("IHDR sides exceed 2^31-1")
    facts = src.positive_sides(width, height)
    pos = _SIGNATURE_BYTES + 8 + 13 + 4
    seen_idat = animated = False
    exif: bytes | None = None
    for _ in range(MAX_STRUCTURE_ITEMS):
        length, chunk_type = struct.unpack(">I4s", src.read_at(pos, 8, what="chunk header"))
        if length > _MAX_CHUNK_BYTES or not _is_chunk_type(chunk_type):
            raise src.corrupt(f"invalid chunk header at byte {pos}")
        name = chunk_type.decode("ascii")
        src.require_within(pos, 12 + length, what=f"chunk {name}")
        if chunk_type == b"IDAT":
            seen_idat = True
        elif chunk_type == b"acTL":
            animated = True
        elif chunk_type == b"eXIf" and exif is None:
            exif = src.read_at(pos + 8, length, what="eXIf chunk")
        elif chunk_type == b"IEND":
            if not seen_idat:
                raise src.corrupt("no IDAT chunk before IEND")
            return HeaderFacts(facts.width, facts.height, animated=animated, exif=exif)
        pos += 12 + length
    raise src.corrupt(f"more than {MAX_STRUCTURE_ITEMS} chunks")
