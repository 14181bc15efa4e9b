"""Crafted headers that cost a parser work: refused from the structure walk alone.

Each test asserts bounded work, never time: the file is refused with a stable code
before Pillow is asked to open it, and the walk reads a small, counted number of bytes.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfygate.adapters.images import inspect_image
from comfygate.adapters.images._source import ByteSource
from comfygate.domain.errors import CorruptImageError, ImageTooSmallError


@pytest.fixture
def pillow_opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The formats Pillow was asked to open, in order (it still opens them)."""
    opened: list[str] = []
    real_open = Image.open

    def recording_open(fp: object, *args: object, **kwargs: object) -> Image.Image:
        opened.append(str(kwargs.get("formats")))
        return real_open(fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", recording_open)
    yield opened


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The length of every read the structure walk made."""
    reads: list[int] = []
    real_read_at = ByteSource.read_at

    def counting_read_at(self: ByteSource, offset: int, length: int, *, what: str = "") -> bytes:
        reads.append(length)
        return real_read_at(self, offset, length, what=what)

    monkeypatch.setattr(ByteSource, "read_at", counting_read_at)
    yield reads


def small_jpeg() -> bytes:
    pixels = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def with_segments(jpeg: bytes, segments: bytes) -> bytes:
    """``segments`` inserted right after SOI."""
    return jpeg[:2] + segments + jpeg[2:]


def write(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


EMPTY_COMMENT = b"\xff\xfe\x00\x02"


def test_jpeg_with_a_few_fill_bytes_is_read(tmp_path: Path) -> None:
    data = with_segments(small_jpeg(), b"\xff" * 16 + EMPTY_COMMENT)

    assert inspect_image(write(tmp_path, data)).pixels == 1200


def test_jpeg_with_endless_fill_bytes_is_refused_unread(
    tmp_path: Path, pillow_opens: list[str], bytes_read: list[int]
) -> None:
    # The review's file: 65,535 fill bytes before each of 80 empty comments (5 MiB).
    data = with_segments(small_jpeg(), (b"\xff" * 65_535 + EMPTY_COMMENT) * 80)

    with pytest.raises(CorruptImageError) as caught:
        inspect_image(write(tmp_path, data))

    assert caught.value.code == "corrupt_image"
    assert "fill bytes" in str(caught.value)
    assert pillow_opens == []
    assert sum(bytes_read) < 100


def test_jpeg_with_thousands_of_empty_segments_is_refused_unread(
    tmp_path: Path, pillow_opens: list[str], bytes_read: list[int]
) -> None:
    data = with_segments(small_jpeg(), EMPTY_COMMENT * 5_000)

    with pytest.raises(CorruptImageError) as caught:
        inspect_image(write(tmp_path, data))

    assert "segments" in str(caught.value)
    assert pillow_opens == []
    assert len(bytes_read) <= 2 * 1024 + 1


def app1(payload_bytes: int) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", payload_bytes + 2) + b"\x00" * payload_bytes


def test_jpeg_with_phone_sized_metadata_is_read(tmp_path: Path) -> None:
    # EXIF, XMP and 62 extended-XMP segments, all full: about 4 MiB of header.
    data = with_segments(small_jpeg(), app1(65_533) * 64)

    assert inspect_image(write(tmp_path, data)).pixels == 1200


def test_jpeg_header_past_16_mib_is_refused_unread(tmp_path: Path, pillow_opens: list[str]) -> None:
    data = with_segments(small_jpeg(), app1(65_533) * 257)

    with pytest.raises(CorruptImageError) as caught:
        inspect_image(write(tmp_path, data))

    assert "before the image data" in str(caught.value)
    assert pillow_opens == []


def hand_made_tiff(
    width: int,
    height: int,
    *,
    rows_per_strip: int,
    strips: int | None = None,
    samples: int = 1,
    planar: int = 1,
) -> bytes:
    """An uncompressed 8-bit little-endian TIFF with ``strips`` strips (by default, as
    many as the sides need); every strip points at the same one strip of bytes."""
    planes = samples if planar == 2 else 1
    if strips is None:
        strips = -(-height // rows_per_strip) * planes
    ifd_bytes = 2 + 12 * 10 + 4  # the ten entries below
    offsets_at = 8 + ifd_bytes
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips if strips > 1 else offsets_at  # 1 strip: inline
    strip_bytes = width * min(rows_per_strip, height) * (samples if planes == 1 else 1)
    photometric = 2 if samples == 3 else 1
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),  # one BitsPerSample per sample is spec; Pillow takes one
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, strips, offsets_at if strips > 1 else pixels_at),
        (277, 3, 1, samples),
        (278, 4, 1, rows_per_strip),
        (279, 4, strips, counts_at if strips > 1 else strip_bytes),
        (284, 3, 1, planar),
    ]
    ifd = struct.pack("<H", len(entries))
    for entry in entries:
        ifd += struct.pack("<HHII", *entry)
    ifd += struct.pack("<I", 0)
    out = b"II*\x00" + struct.pack("<I", 8) + ifd
    if strips > 1:
        out += struct.pack(f"<{strips}I", *[pixels_at] * strips)
        out += struct.pack(f"<{strips}I", *[strip_bytes] * strips)
    return out + b"\x80" * strip_bytes


@pytest.mark.parametrize(
    ("rows_per_strip", "samples", "planar"),
    [(1, 1, 1), (7, 1, 1), (30, 1, 1), (2**32 - 1, 1, 1), (4, 3, 1), (4, 3, 2)],
)
def test_tiff_strips_matching_the_sides_are_read(
    tmp_path: Path, rows_per_strip: int, samples: int, planar: int
) -> None:
    data = hand_made_tiff(40, 30, rows_per_strip=rows_per_strip, samples=samples, planar=planar)

    assert inspect_image(write(tmp_path, data)).pixels == 1200


@pytest.mark.parametrize("strips", [2, 29, 31])
def test_tiff_with_more_or_fewer_strips_than_its_rows_need_is_corrupt(
    tmp_path: Path, strips: int, pillow_opens: list[str]
) -> None:
    data = hand_made_tiff(40, 30, rows_per_strip=1, strips=strips)

    with pytest.raises(CorruptImageError) as caught:
        inspect_image(write(tmp_path, data))

    assert f"{strips} strips/tiles where the image needs 30" in str(caught.value)
    assert pillow_opens == []


def test_tiff_with_more_strips_than_the_cap_is_refused_unread(
    tmp_path: Path, pillow_opens: list[str], bytes_read: list[int]
) -> None:
    # The review's shape (a 1-pixel-wide column, one row per strip), past the 65,536 cap.
    data = hand_made_tiff(1, 70_000, rows_per_strip=1)

    with pytest.raises(CorruptImageError) as caught:
        inspect_image(write(tmp_path, data), min_side_px=1)

    assert caught.value.code == "corrupt_image"
    assert pillow_opens == []
    assert sum(bytes_read) < 1024  # the strip arrays (560 KB) were never read


def test_tiled_tiff_counts_tiles_across_and_down(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, format="TIFF", tile=True, tilewidth=16, tilelength=16)
    data = buffer.getvalue()

    assert inspect_image(write(tmp_path, data)).pixels == 1200  # 3 x 2 tiles


def test_small_image_is_refused_before_pillow_is_asked(
    tmp_path: Path, pillow_opens: list[str]
) -> None:
    data = hand_made_tiff(40, 15, rows_per_strip=15)

    with pytest.raises(ImageTooSmallError):
        inspect_image(write(tmp_path, data), min_side_px=16)

    assert pillow_opens == []
