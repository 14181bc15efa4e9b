"""Decode job inputs to float RGB and write results as tagged PNG files.

Shared by the built-in engines. Inputs are turned upright (EXIF orientation) so results
have the displayed size that the upload was priced at. Results are written to a
temporary name and renamed, so a failed or cancelled job never leaves half a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, PngImagePlugin

from comfygate.adapters.engines.colorspace import FloatArray
from comfygate.domain.errors import ImageDecodeError

ByteArray = npt.NDArray[np.uint8]
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
PNG_COMPRESS_LEVEL = 1
"""zlib level for results: on photos level 1 makes files as small as levels 2-3 (and
smaller than Pillow's default 6) in a third to a half of the time; encoding is the
largest cost of the preview engine."""


def _to_float_rgb(image: Image.Image) -> FloatArray:
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit greyscale scans: Pillow's convert("RGB") would clip instead of scale.
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    out: FloatArray = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    return out


def load_rgb(path: Path) -> FloatArray:
    """Decode ``path`` to an upright ``(H, W, 3)`` float32 array in [0, 1].

    Raises ``ImageDecodeError`` if the pixels cannot be decoded (the header passed
    inspection, but the data is damaged or in a variant Pillow cannot read).
    """
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return _to_float_rgb(upright)
    except Exception as exc:
        # Decoders fail with OSError, SyntaxError, ValueError, zlib.error ... all of
        # which mean the same thing for a job: these bytes do not decode.
        raise ImageDecodeError(
            f"the input image cannot be decoded: {exc}", input=path.name
        ) from exc


def to_uint8(rgb: FloatArray | ByteArray) -> ByteArray:
    """[0, 1] floats -> rounded uint8 (uint8 input is returned as is)."""
    if rgb.dtype == np.uint8:
        return rgb.astype(np.uint8, copy=False)
    out: ByteArray = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def save_png(
    rgb: FloatArray | ByteArray,
    path: Path,
    *,
    text: Mapping[str, str],
    before_publish: Callable[[], None] | None = None,
) -> None:
    """Write ``rgb`` as an 8-bit PNG at ``path`` with ``text`` as tEXt chunks.

    ``before_publish`` runs after encoding and before the rename; if it raises (the job
    was cancelled meanwhile) no result appears.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    partial = path.with_name(f".{path.name}.partial")
    try:
        Image.fromarray(to_uint8(rgb)).save(
            partial, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL
        )
        if before_publish is not None:
            before_publish()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def resize_planes(planes: FloatArray, width: int, height: int) -> FloatArray:
    """Bilinear resize of an ``(H, W, C)`` float32 array to ``(height, width, C)``.

    Pillow's float ("F") images keep full precision; downscaling is antialiased.
    """
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        for c in range(planes.shape[-1])
    ]
    out: FloatArray = np.stack(channels, axis=-1)
    return out
