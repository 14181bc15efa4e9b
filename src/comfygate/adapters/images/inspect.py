"""Inspect an uploaded image from its header, without decoding a single pixel.

Order matters: sniff the signature, walk the format's structure (catches truncation
and gives the stored size), apply the pixel cap and the minimum side (neither depends
on the orientation), and only then let Pillow parse the header (mode, EXIF orientation)
and cross-check the size. Pillow therefore never sees a decompression bomb, so its own
bomb warning cannot fire first, nor spends work on a file the sides already refuse.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin, TiffImagePlugin

from comfygate.adapters.images._bmp import walk_bmp
from comfygate.adapters.images._jpeg import walk_jpeg
from comfygate.adapters.images._png import walk_png
from comfygate.adapters.images._sniff import SNIFF_BYTES, sniff_format
from comfygate.adapters.images._source import ByteSource, HeaderFacts
from comfygate.adapters.images._tiff import walk_tiff
from comfygate.adapters.images._webp import walk_webp
from comfygate.domain.errors import (
    CorruptImageError,
    EmptyUploadError,
    TooManyPixelsError,
    UnsupportedImageFormatError,
)
from comfygate.domain.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE_PX,
    ImageFormat,
    ImageInfo,
    check_dimensions,
    check_min_side,
    check_pixel_count,
    normalise_orientation,
    oriented_size,
)

_WALKERS: dict[ImageFormat, Callable[[ByteSource], HeaderFacts]] = {
    ImageFormat.JPEG: walk_jpeg,
    ImageFormat.PNG: walk_png,
    ImageFormat.WEBP: walk_webp,
    ImageFormat.BMP: walk_bmp,
    ImageFormat.TIFF: walk_tiff,
}
_PILLOW_FORMATS = {
    ImageFormat.JPEG: "JPEG",
    ImageFormat.PNG: "PNG",
    ImageFormat.WEBP: "WEBP",
    ImageFormat.BMP: "BMP",
    ImageFormat.TIFF: "TIFF",
}
_EXIF_ORIENTATION = 0x0112
PNG_TEXT_MEMORY = 4 * 1024 * 1024
"""The most text a PNG's header may inflate to (compressed ``zTXt``/``iTXt`` chunks),
for Pillow's reader in this process: its default of 64 MiB let 63 KB of chunks cost
61 MB and a fifth of a second. Photos carry a few KiB of text, XMP included."""
PngImagePlugin.MAX_TEXT_MEMORY = PNG_TEXT_MEMORY


def _orientation(image: Image.Image, raw_exif: bytes | None) -> int:
    """EXIF orientation (1 if none), read without decoding pixels."""
    try:
        if isinstance(image, TiffImagePlugin.TiffImageFile):
            # The tag Pillow's TIFF reader oriented its size by; getexif() would fall
            # back to an XMP orientation the reader ignored, and the sizes disagree.
            return normalise_orientation(image.tag_v2.get(_EXIF_ORIENTATION))
        if image.format == "PNG":
            # PngImageFile.getexif() decodes the whole image to look past the pixel
            # data; the base method reads only the header, and the walk has already
            # brought the eXIf chunk from wherever it was.
            if raw_exif is not None and "exif" not in image.info:
                image.info["exif"] = raw_exif
            exif = Image.Image.getexif(image)
        else:
            exif = image.getexif()
        return normalise_orientation(exif.get(_EXIF_ORIENTATION))
    except Exception:
        # Broken EXIF is common in scans and harmless to the pixels: upright.
        return 1


def _pillow_header(
    fp: BinaryIO, image_format: ImageFormat, raw_exif: bytes | None
) -> tuple[str, tuple[int, int], int]:
    """Pillow's view of the header: mode, stored size, EXIF orientation (1 if none)."""
    fp.seek(0)
    try:
        with Image.open(fp, formats=[_PILLOW_FORMATS[image_format]]) as image:
            return image.mode, image.size, _orientation(image, raw_exif)
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError(str(exc)) from exc
    except Exception as exc:
        # Pillow reports bad headers with many exception types (SyntaxError, OSError,
        # struct.error, ValueError ...): for an upload they all mean "corrupt".
        raise CorruptImageError(
            f"the {image_format.value.upper()} header cannot be read: {exc}",
            format=image_format.value,
        ) from exc


def inspect_image(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side_px: int = DEFAULT_MIN_SIDE_PX,
    declared: tuple[int, int] | None = None,
) -> ImageInfo:
    """Read an image's header facts and enforce the upload limits.

    Costs a few small reads (plus a search for a JPEG's end marker); never decodes pixels.
    ``declared`` is compared with the displayed (EXIF-oriented) size. Raises an
    ``ImageError`` subclass for every problem.
    """
    with path.open("rb") as fp:
        size_bytes = os.fstat(fp.fileno()).st_size
        if size_bytes == 0:
            raise EmptyUploadError("the upload is empty")
        image_format = sniff_format(fp.read(SNIFF_BYTES))
        facts = _WALKERS[image_format](ByteSource(fp, size_bytes, image_format))
        if facts.animated:
            raise UnsupportedImageFormatError(
                f"animated {image_format.value.upper()} images are not supported",
                format=image_format.value,
            )
        check_pixel_count(facts.width, facts.height, max_pixels=max_pixels)
        check_min_side(facts.width, facts.height, min_side_px=min_side_px)
        mode, pillow_size, orientation = _pillow_header(fp, image_format, facts.exif)
    width, height = oriented_size(facts.width, facts.height, orientation)
    # Pillow's TIFF reader reports the size already oriented; the others the stored one.
    expected = (width, height) if image_format is ImageFormat.TIFF else (facts.width, facts.height)
    if pillow_size != expected:
        raise CorruptImageError(
            f"the {image_format.value.upper()} header gives two sizes: "
            f"{expected[0]}x{expected[1]} and {pillow_size[0]}x{pillow_size[1]}",
            format=image_format.value,
        )
    check_dimensions(
        width, height, max_pixels=max_pixels, min_side_px=min_side_px, declared=declared
    )
    return ImageInfo(
        format=image_format,
        width=width,
        height=height,
        orientation=orientation,
        mode=mode,
        stored_width=facts.width,
        stored_height=facts.height,
    )
