"""TIFF structure walk (classic and BigTIFF): the first IFD, every out-of-line value it
points to, and every strip or tile (offset + byte count) must lie inside the file.
There must be exactly as many strips or tiles as the image's sides need: Pillow builds
a tuple per block, so a million one-byte strips would cost it seconds and hundreds of MB.

Only the first image (IFD0) is inspected: it is the one decoders show and we colorize.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from comfygate.adapters.images._source import MAX_STRUCTURE_ITEMS, ByteSource, HeaderFacts

# TIFF field type -> (struct code, size in bytes); unknown types are skipped, as the
# specification asks of readers.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1), 2: ("B", 1), 3: ("H", 2), 4: ("I", 4), 5: ("Q", 8), 6: ("b", 1),
    7: ("B", 1), 8: ("h", 2), 9: ("i", 4), 10: ("q", 8), 11: ("f", 4), 12: ("d", 8),
    13: ("I", 4), 16: ("Q", 8), 17: ("q", 8), 18: ("Q", 8),
}  # fmt: skip
_INTEGER_TYPES = frozenset({1, 3, 4, 13, 16, 18})
_WIDTH, _LENGTH = 256, 257
_STRIP_OFFSETS, _STRIP_BYTE_COUNTS = 273, 279
_TILE_OFFSETS, _TILE_BYTE_COUNTS = 324, 325
_SAMPLES_PER_PIXEL, _ROWS_PER_STRIP, _PLANAR_CONFIGURATION = 277, 278, 284
_TILE_WIDTH, _TILE_LENGTH = 322, 323
_PLANAR_SEPARATE = 2
_MAX_BLOCKS = 65_536
"""Strips or tiles in one image. One strip per row of a 50 MP picture is under 10,000
(even planar RGBA, 4 x 7,100 rows for 7,100 x 7,000); 256 x 256 tiles of it, under 800."""
_DECODED_TAGS = frozenset(
    {
        _WIDTH, _LENGTH, _STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS,
        _SAMPLES_PER_PIXEL, _ROWS_PER_STRIP, _PLANAR_CONFIGURATION, _TILE_WIDTH, _TILE_LENGTH,
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Layout:
    """Classic TIFF or BigTIFF: the sizes of the IFD fields."""

    order: str
    count_code: str  # entry count in an IFD
    value_code: str  # an entry's count and an offset
    inline_bytes: int

    @property
    def entry_bytes(self) -> int:
        return 4 + 2 * self.inline_bytes


def _layout(src: ByteSource) -> tuple[_Layout, int]:
    head = src.read_at(0, 16 if src.size_bytes >= 16 else 8, what="header")
    order = "<" if head[:2] == b"II" else ">"
    (version,) = struct.unpack(order + "H", head[2:4])
    if version == 42:
        (first_ifd,) = struct.unpack(order + "I", head[4:8])
        return _Layout(order, "H", "I", 4), first_ifd
    if len(head) < 16:
        raise src.truncated("BigTIFF header is incomplete")
    offset_bytes, _, first_ifd = struct.unpack(order + "HHQ", head[4:16])
    if offset_bytes != 8:
        raise src.corrupt(f"BigTIFF offset size {offset_bytes}")
    return _Layout(order, "Q", "Q", 8), first_ifd


def _entry_values(
    src: ByteSource, lay: _Layout, tag: int, field_type: int, n: int, inline: bytes
) -> tuple[int, ...] | None:
    """Check that an entry's values lie in the file; decode them if we need them."""
    if field_type not in _TYPES:
        return None
    code, item_bytes = _TYPES[field_type]
    total = n * item_bytes
    offset = 0
    if total > lay.inline_bytes:
        (offset,) = struct.unpack(lay.order + lay.value_code, inline)
        src.require_within(offset, total, what=f"tag {tag} values")
    if tag not in _DECODED_TAGS or field_type not in _INTEGER_TYPES:
        return None
    if n > _MAX_BLOCKS:
        raise src.corrupt(f"tag {tag} has {n} values")
    if total > lay.inline_bytes:
        data = src.read_at(offset, total, what=f"tag {tag} values")
    else:
        data = inline[:total]
    values: tuple[int, ...] = struct.unpack(f"{lay.order}{n}{code}", data)
    return values


def _read_ifd(src: ByteSource, lay: _Layout, ifd_at: int) -> dict[int, tuple[int, ...]]:
    """Read IFD0: check that every value lies in the file; return the decoded tags."""
    if ifd_at < 8:
        raise src.corrupt(f"IFD offset {ifd_at}")
    count_bytes = struct.calcsize(lay.count_code)
    (count,) = struct.unpack(
        lay.order + lay.count_code, src.read_at(ifd_at, count_bytes, what="IFD")
    )
    if count == 0 or count > MAX_STRUCTURE_ITEMS:
        raise src.corrupt(f"IFD with {count} entries")
    entries_at = ifd_at + count_bytes
    raw = src.read_at(entries_at, count * lay.entry_bytes + lay.inline_bytes, what="IFD entries")
    entry_fmt = f"{lay.order}HH{lay.value_code}{lay.inline_bytes}s"
    arrays: dict[int, tuple[int, ...]] = {}
    for index in range(count):
        start = index * lay.entry_bytes
        entry = struct.unpack(entry_fmt, raw[start : start + lay.entry_bytes])
        values = _entry_values(src, lay, *entry)
        if values is not None:
            arrays[entry[0]] = values
    (next_ifd,) = struct.unpack(lay.order + lay.value_code, raw[count * lay.entry_bytes :])
    if next_ifd:
        src.require_within(next_ifd, count_bytes, what="next IFD")
    return arrays


def _first(arrays: dict[int, tuple[int, ...]], tag: int, default: int) -> int:
    values = arrays.get(tag)
    return values[0] if values else default


def _blocks_needed(src: ByteSource, arrays: dict[int, tuple[int, ...]]) -> int:
    """How many strips or tiles the sides, the block size and the planes make."""
    width, height = arrays[_WIDTH][0], arrays[_LENGTH][0]
    planes = 1
    if _first(arrays, _PLANAR_CONFIGURATION, 1) == _PLANAR_SEPARATE:
        planes = _first(arrays, _SAMPLES_PER_PIXEL, 1)
    if _TILE_OFFSETS in arrays:
        tile_width = _first(arrays, _TILE_WIDTH, 0)
        tile_length = _first(arrays, _TILE_LENGTH, 0)
        if tile_width <= 0 or tile_length <= 0:
            raise src.corrupt("tiles without a TileWidth / TileLength")
        across, down = -(-width // tile_width), -(-height // tile_length)
        return across * down * planes
    rows_per_strip = _first(arrays, _ROWS_PER_STRIP, 2**32 - 1)  # the default: one strip
    if rows_per_strip <= 0:
        raise src.corrupt("RowsPerStrip is 0")
    return -(-height // rows_per_strip) * planes


def _check_blocks(src: ByteSource, offsets: tuple[int, ...], counts: tuple[int, ...]) -> None:
    if not offsets or len(offsets) != len(counts):
        raise src.corrupt(f"{len(offsets)} strip/tile offsets for {len(counts)} byte counts")
    end = max(offset + count for offset, count in zip(offsets, counts, strict=True))
    if end > src.size_bytes:
        raise src.truncated(f"image data runs to byte {end}, the file ends at {src.size_bytes}")


def walk_tiff(src: ByteSource) -> HeaderFacts:
    """Check a TIFF's first image directory and its data blocks; return its stored size."""
    lay, first_ifd = _layout(src)
    arrays = _read_ifd(src, lay, first_ifd)
    if not arrays.get(_WIDTH) or not arrays.get(_LENGTH):
        raise src.corrupt("no ImageWidth / ImageLength tag")
    facts = src.positive_sides(arrays[_WIDTH][0], arrays[_LENGTH][0])
    if _TILE_OFFSETS in arrays:
        offsets, counts = arrays[_TILE_OFFSETS], arrays.get(_TILE_BYTE_COUNTS, ())
    else:
        offsets, counts = arrays.get(_STRIP_OFFSETS, ()), arrays.get(_STRIP_BYTE_COUNTS, ())
    needed = _blocks_needed(src, arrays)
    if needed > _MAX_BLOCKS:
        raise src.corrupt(f"the image needs {needed} strips/tiles, more than {_MAX_BLOCKS}")
    if offsets and len(offsets) != needed:
        raise src.corrupt(f"{len(offsets)} strips/tiles where the image needs {needed}")
    _check_blocks(src, offsets, counts)
    return facts
