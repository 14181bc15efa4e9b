"""What an uploaded image is, as far as metering cares, and the limits it must respect.

Pure values and rules only: reading bytes from disk is the images adapter's job. The
adapter reads the header, then calls :func:`check_dimensions` so every limit is applied
the same way whichever format the file came in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from comfygate.domain.errors import (
    DeclaredSizeMismatchError,
    ImageTooSmallError,
    TooManyPixelsError,
)

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
"""50 MiB: a 600 dpi scan of a large print as PNG fits; anything bigger is abuse."""

DEFAULT_MAX_PIXELS = 50_000_000
"""50 MP: above any camera a customer is likely to use, far below a decompression bomb.
Kept under Pillow's own bomb threshold (about 89 MP) so Pillow never warns first."""

DEFAULT_MIN_SIDE_PX = 16

ORIENTATIONS_SWAPPING_SIDES = frozenset({5, 6, 7, 8})
"""EXIF orientations that rotate by 90 or 270 degrees (with or without a mirror)."""


class ImageFormat(StrEnum):
    """The upload formats we accept."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    BMP = "bmp"
    TIFF = "tiff"

    @property
    def mime_type(self) -> str:
        """The IANA media type of the format."""
        return _MIME_TYPES[self]


_MIME_TYPES = {
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.BMP: "image/bmp",
    ImageFormat.TIFF: "image/tiff",
}


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """An upload written to disk, with the digests computed while it streamed in.

    ``sha256`` is the duplicate-detection key; ``md5`` is recorded because the seed
    design names it, never trusted for identity.
    """

    path: Path
    size_bytes: int
    sha256: str
    md5: str


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image's header facts. ``width`` and ``height`` are as displayed, i.e. after
    the EXIF orientation is applied; the stored (sensor) sides are kept for the record."""

    format: ImageFormat
    width: int
    height: int
    orientation: int
    mode: str
    stored_width: int
    stored_height: int

    @property
    def pixels(self) -> int:
        """Pixel count: the same before and after orientation."""
        return self.width * self.height


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Return the displayed ``(width, height)`` for a stored size and EXIF orientation."""
    if orientation in ORIENTATIONS_SWAPPING_SIDES:
        return height, width
    return width, height


def normalise_orientation(value: object) -> int:
    """Map a raw EXIF orientation tag to 1-8; anything missing or invalid means 1."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


def check_pixel_count(width: int, height: int, *, max_pixels: int) -> None:
    """Raise ``TooManyPixelsError`` past the cap; run before any decoder sees the file."""
    pixels = width * height
    if pixels > max_pixels:
        raise TooManyPixelsError(
            f"image has {pixels} pixels ({width}x{height}); the limit is {max_pixels}",
            width=width,
            height=height,
            pixels=pixels,
            max_pixels=max_pixels,
        )


def check_min_side(width: int, height: int, *, min_side_px: int) -> None:
    """Raise ``ImageTooSmallError`` if a side is short; orientation cannot change it."""
    if min(width, height) < min_side_px:
        raise ImageTooSmallError(
            f"image is {width}x{height}; each side must be at least {min_side_px} px",
            width=width,
            height=height,
            min_side_px=min_side_px,
        )


def check_dimensions(
    width: int,
    height: int,
    *,
    max_pixels: int,
    min_side_px: int,
    declared: tuple[int, int] | None = None,
) -> None:
    """Apply the pixel cap, the minimum side and the declared size to displayed sides.

    Raises ``TooManyPixelsError``, ``ImageTooSmallError`` or
    ``DeclaredSizeMismatchError``; the pixel cap is checked first because it is the
    one that protects the service.
    """
    check_pixel_count(width, height, max_pixels=max_pixels)
    check_min_side(width, height, min_side_px=min_side_px)
    if declared is not None and tuple(declared) != (width, height):
        raise DeclaredSizeMismatchError(
            f"declared size {declared[0]}x{declared[1]} differs from the image's {width}x{height}",
            declared_width=declared[0],
            declared_height=declared[1],
            width=width,
            height=height,
        )
