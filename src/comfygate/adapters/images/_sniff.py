"""Tell the format from the first bytes, before any parser is trusted with the file.

Supported formats are recognised by their signatures; a few well-known image formats we
do not accept (GIF, HEIF/AVIF, JPEG 2000, JPEG XL, PSD, QOI) get
``UnsupportedImageFormatError`` so the user learns to convert rather than that the file
"is not an image".
"""

from __future__ import annotations

from comfygate.domain.errors import (
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageFormatError,
)
from comfygate.domain.images import ImageFormat

SNIFF_BYTES = 32

_SIGNATURES: tuple[tuple[bytes, ImageFormat], ...] = (
    (b"\xff\xd8\xff", ImageFormat.JPEG),
    (b"\x89PNG\r\n\x1a\n", ImageFormat.PNG),
    (b"II*\x00", ImageFormat.TIFF),
    (b"MM\x00*", ImageFormat.TIFF),
    (b"II+\x00", ImageFormat.TIFF),  # BigTIFF
    (b"MM\x00+", ImageFormat.TIFF),
)

_UNSUPPORTED: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"8BPS", "PSD"),
    (b"qoif", "QOI"),
)

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")

_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def _unsupported(name: str) -> UnsupportedImageFormatError:
    return UnsupportedImageFormatError(
        f"{name} images are not supported; send JPEG, PNG, WebP, BMP or TIFF",
        format=name,
    )


def _truncated(image_format: ImageFormat, size_bytes: int) -> TruncatedImageError:
    return TruncatedImageError(
        f"the file ends after {size_bytes} bytes, inside the {image_format.value.upper()} "
        "signature",
        format=image_format.value,
        size_bytes=size_bytes,
    )


def _sniff_riff_bmp(head: bytes) -> ImageFormat | None:
    if head.startswith(b"RIFF"):
        if len(head) < 12:  # the whole file is shorter than a RIFF header
            if b"WEBP".startswith(head[8:]):
                raise _truncated(ImageFormat.WEBP, len(head))
            return None
        return ImageFormat.WEBP if head[8:12] == b"WEBP" else None
    if head.startswith(b"BM"):
        if len(head) < 18:
            raise _truncated(ImageFormat.BMP, len(head))
        # "BM" alone is two letters of text: also require a known DIB header size.
        if int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
            return ImageFormat.BMP
    return None


def sniff_format(head: bytes) -> ImageFormat:
    """The format of a file whose first bytes (up to ``SNIFF_BYTES``) are ``head``.

    ``head`` must be non-empty. Raises ``UnsupportedImageFormatError`` for a known image
    format we do not take, ``TruncatedImageError`` when the file ends inside a supported
    signature, ``NotAnImageError`` otherwise.
    """
    for signature, image_format in _SIGNATURES:
        if head.startswith(signature):
            return image_format
        if len(head) < len(signature) and signature.startswith(head):
            raise _truncated(image_format, len(head))
    riff_or_bmp = _sniff_riff_bmp(head)
    if riff_or_bmp is not None:
        return riff_or_bmp
    for signature, name in _UNSUPPORTED:
        if head.startswith(signature):
            raise _unsupported(name)
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        raise _unsupported("HEIF/AVIF")
    raise NotAnImageError(
        "the file is not an image we recognise (JPEG, PNG, WebP, BMP or TIFF expected)",
        size_bytes=len(head),
    )
