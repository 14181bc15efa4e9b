"""Upload inspection: header facts for every format, and one error per problem."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin
from PIL.PngImagePlugin import PngInfo

from comfygate.adapters.images import inspect_image
from comfygate.adapters.images._source import ByteSource
from comfygate.domain.errors import (
    CorruptImageError,
    DeclaredSizeMismatchError,
    EmptyUploadError,
    ImageTooSmallError,
    NotAnImageError,
    TooManyPixelsError,
    TruncatedImageError,
    UnsupportedImageFormatError,
)
from comfygate.domain.images import ImageFormat

FORMATS: list[tuple[str, dict[str, object]]] = [
    ("JPEG", {}),
    ("JPEG", {"progressive": True}),
    ("PNG", {}),
    ("WEBP", {}),
    ("WEBP", {"lossless": True}),
    ("BMP", {}),
    ("TIFF", {}),
    ("TIFF", {"compression": "tiff_lzw"}),
    ("TIFF", {"compression": "tiff_adobe_deflate", "tile": True}),
]


def noise(width: int = 40, height: int = 30, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    bands = len(Image.new(mode, (1, 1)).getbands())
    pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if bands == 1 else pixels).convert(mode)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def write(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + data)
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)


def hand_made_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("fmt", "kwargs"), FORMATS)
def test_every_supported_format_gives_its_header_facts(
    tmp_path: Path, fmt: str, kwargs: dict[str, object]
) -> None:
    path = write(tmp_path, encode(noise(40, 30), fmt, **kwargs))

    info = inspect_image(path)

    assert info.format is ImageFormat(fmt.lower())
    assert (info.width, info.height, info.pixels) == (40, 30, 1200)
    assert info.orientation == 1
    assert info.mode == "RGB"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"), ("1", "BMP")],
)
def test_modes_are_reported(tmp_path: Path, mode: str, fmt: str) -> None:
    path = write(tmp_path, encode(noise(20, 20, mode), fmt))

    assert inspect_image(path).mode == mode


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_swaps_sides_for_5_to_8(tmp_path: Path, orientation: int) -> None:
    data = encode(noise(40, 30), "JPEG", exif=exif_with_orientation(orientation))

    info = inspect_image(write(tmp_path, data))

    swapped = orientation >= 5
    assert (info.width, info.height) == ((30, 40) if swapped else (40, 30))
    assert (info.stored_width, info.stored_height) == (40, 30)
    assert info.orientation == orientation
    assert info.pixels == 1200


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_read_in_other_formats(tmp_path: Path, fmt: str) -> None:
    data = encode(noise(40, 30), fmt, exif=exif_with_orientation(6))

    info = inspect_image(write(tmp_path, data))

    assert (info.width, info.height, info.orientation) == (30, 40, 6)


def test_tiff_orientation_is_the_tag_pillow_orients_by_not_xmp(tmp_path: Path) -> None:
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
        b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    only_xmp = TiffImagePlugin.ImageFileDirectory_v2()
    only_xmp[700] = xmp
    only_xmp.tagtype[700] = 1
    both = TiffImagePlugin.ImageFileDirectory_v2()
    both[700] = xmp
    both.tagtype[700] = 1
    both[0x0112] = 8

    xmp_info = inspect_image(write(tmp_path, encode(noise(40, 30), "TIFF", tiffinfo=only_xmp)))
    tag_info = inspect_image(write(tmp_path, encode(noise(40, 30), "TIFF", tiffinfo=both), "b"))

    assert (xmp_info.width, xmp_info.height, xmp_info.orientation) == (40, 30, 1)
    assert (tag_info.width, tag_info.height, tag_info.orientation) == (30, 40, 8)


def test_declared_size_is_compared_with_the_displayed_size(tmp_path: Path) -> None:
    path = write(tmp_path, encode(noise(40, 30), "JPEG", exif=exif_with_orientation(6)))

    assert inspect_image(path, declared=(30, 40)).width == 30
    with pytest.raises(DeclaredSizeMismatchError) as caught:
        inspect_image(path, declared=(40, 30))
    assert caught.value.details["declared_width"] == 40


def test_hand_made_bomb_header_is_refused_before_any_decoder(tmp_path: Path) -> None:
    path = write(tmp_path, hand_made_png(100_000, 100_000))

    with pytest.raises(TooManyPixelsError) as caught:
        inspect_image(path, max_pixels=50_000_000)
    assert caught.value.details["pixels"] == 10_000_000_000


def test_pillow_bomb_error_becomes_too_many_pixels(tmp_path: Path) -> None:
    # Our cap set absurdly high: Pillow's own bomb check must still end as our error.
    path = write(tmp_path, hand_made_png(100_000, 100_000))

    with pytest.raises(TooManyPixelsError):
        inspect_image(path, max_pixels=10**12)


def test_pixel_cap_is_inclusive(tmp_path: Path) -> None:
    path = write(tmp_path, encode(noise(40, 30), "PNG"))

    assert inspect_image(path, max_pixels=1200).pixels == 1200
    with pytest.raises(TooManyPixelsError):
        inspect_image(path, max_pixels=1199)


def test_small_images_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, encode(noise(40, 15), "PNG"))

    with pytest.raises(ImageTooSmallError):
        inspect_image(path, min_side_px=16)
    assert inspect_image(path, min_side_px=15).height == 15


def test_inspection_never_decodes_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []

    def recording_load(self: ImageFile.ImageFile) -> None:
        decoded.append(str(self.format))
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    for index, (fmt, kwargs) in enumerate(FORMATS):
        rotated = fmt != "BMP"  # BMP has no EXIF
        extra = {"exif": exif_with_orientation(6)} if rotated else {}
        data = encode(noise(40, 30), fmt, **kwargs, **extra)

        info = inspect_image(write(tmp_path, data, f"f{index}"))

        assert info.orientation == (6 if rotated else 1), fmt
    assert decoded == []


def test_png_exif_after_the_pixel_data_is_found(tmp_path: Path) -> None:
    data = encode(noise(40, 30), "PNG")
    exif = exif_with_orientation(8).tobytes().removeprefix(b"Exif\x00\x00")  # bare TIFF
    iend = data.rindex(b"IEND") - 4
    data = data[:iend] + png_chunk(b"eXIf", exif) + data[iend:]

    info = inspect_image(write(tmp_path, data))

    assert (info.orientation, info.width, info.height) == (8, 30, 40)


def test_damaged_pixel_data_passes_inspection(tmp_path: Path) -> None:
    """The price is set from the header; damaged pixels fail later, in the engine."""
    data = bytearray(encode(noise(40, 30), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32

    assert inspect_image(write(tmp_path, bytes(data))).pixels == 1200


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EmptyUploadError):
        inspect_image(write(tmp_path, b""))


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is text",
        b"%PDF-1.7\n",
        bytes(range(256)),
        b"RIFF\x04\x00\x00\x00WAVE",
        b"BMW is a car maker, not a bitmap",
    ],
)
def test_not_an_image(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(NotAnImageError):
        inspect_image(write(tmp_path, data))


def test_gif_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedImageFormatError) as caught:
        inspect_image(write(tmp_path, encode(noise(), "GIF")))
    assert caught.value.details["format"] == "GIF"


def test_heif_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedImageFormatError):
        inspect_image(write(tmp_path, b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_are_unsupported(tmp_path: Path, fmt: str) -> None:
    frames = [noise(40, 30), noise(41, 30).resize((40, 30))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])

    with pytest.raises(UnsupportedImageFormatError):
        inspect_image(write(tmp_path, data))


def test_trailing_bytes_after_png_iend_and_jpeg_eoi_are_tolerated(tmp_path: Path) -> None:
    # Phones append secondary pictures after the primary JPEG; zip-appended PNGs exist.
    jpeg = encode(noise(40, 30), "JPEG")
    png = encode(noise(40, 30), "PNG")

    assert inspect_image(write(tmp_path, jpeg + jpeg, "a")).pixels == 1200
    assert inspect_image(write(tmp_path, png + b"trailer", "b")).pixels == 1200


def test_jpeg_with_a_long_trailer_after_its_end_marker_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A "motion photo": the phone appends an MP4 (hundreds of KB, no FFD9 in it).
    trailer = np.random.default_rng(5).bytes(300_000).replace(b"\xff", b"\x00")
    data = encode(noise(40, 30), "JPEG") + trailer
    reads: list[int] = []
    read_at = ByteSource.read_at

    def counting(self: ByteSource, offset: int, length: int, *, what: str = "") -> bytes:
        reads.append(length)
        return read_at(self, offset, length, what=what)

    monkeypatch.setattr(ByteSource, "read_at", counting)

    assert inspect_image(write(tmp_path, data)).pixels == 1200
    assert sum(reads) < 4096  # the end marker was searched for, not read into memory
    with pytest.raises(TruncatedImageError):
        inspect_image(write(tmp_path, data[: data.rindex(b"\xff\xd9")] + trailer, "cut"))


def test_jpeg_without_end_marker_is_truncated(tmp_path: Path) -> None:
    data = encode(noise(40, 30), "JPEG")
    assert data.endswith(b"\xff\xd9")

    with pytest.raises(TruncatedImageError):
        inspect_image(write(tmp_path, data[:-2]))


def test_bmp_size_field_must_match(tmp_path: Path) -> None:
    data = encode(noise(40, 30), "BMP")

    with pytest.raises(CorruptImageError):
        inspect_image(write(tmp_path, data + b"\x00\x00", "longer"))
    with pytest.raises(TruncatedImageError):
        inspect_image(write(tmp_path, data[:-1], "shorter"))


def test_webp_riff_size_must_match(tmp_path: Path) -> None:
    data = encode(noise(40, 30), "WEBP")

    with pytest.raises(CorruptImageError):
        inspect_image(write(tmp_path, data + b"\x00\x00", "longer"))


def test_tiff_strip_past_the_end_is_truncated(tmp_path: Path) -> None:
    data = encode(noise(40, 30), "TIFF")

    with pytest.raises(TruncatedImageError) as caught:
        inspect_image(write(tmp_path, data[:-1]))
    assert "image data" in str(caught.value)


def test_png_with_bad_ihdr_checksum_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(encode(noise(40, 30), "PNG"))
    data[29] ^= 0xFF  # first byte of IHDR's CRC

    with pytest.raises(CorruptImageError):
        inspect_image(write(tmp_path, bytes(data)))


def test_png_without_idat_is_corrupt(tmp_path: Path) -> None:
    ihdr = struct.pack(">IIBBBBB", 40, 30, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")

    with pytest.raises(CorruptImageError):
        inspect_image(write(tmp_path, data))


def test_errors_carry_stable_codes(tmp_path: Path) -> None:
    with pytest.raises(TruncatedImageError) as caught:
        inspect_image(write(tmp_path, encode(noise(), "PNG")[:-5]))
    assert caught.value.code == "truncated_image"
    assert caught.value.details["format"] == "png"


def test_a_png_whose_text_inflates_past_its_cap_is_corrupt(tmp_path: Path) -> None:
    """Compressed text chunks are inflated by Pillow as it reads the header: 63 KB of
    them came to 61 MB (its own cap is 64 MiB). A few KiB of text, as photos carry, is
    read as before."""
    bomb, fine = PngInfo(), PngInfo()
    for i in range(8):  # 8 x 1 MiB of text, ~8 KB compressed
        bomb.add_text(f"k{i}", "x" * (1 << 20), zip=True)
    fine.add_text("Comment", "x" * 4096, zip=True)
    for name, info in (("bomb.png", bomb), ("fine.png", fine)):
        Image.new("L", (64, 64), 128).save(tmp_path / name, "PNG", pnginfo=info)
    assert (tmp_path / "bomb.png").stat().st_size < 64 * 1024
    with pytest.raises(CorruptImageError):
        inspect_image(tmp_path / "bomb.png")
    assert inspect_image(tmp_path / "fine.png").width == 64
