"""Properties of upload inspection over damaged files (hypothesis).

Truncation anywhere is always caught from the structure alone, and no input, however
mangled, gets anything but an ``ImageInfo`` or one of our ``ImageError`` subclasses.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from comfygate.adapters.images import inspect_image
from comfygate.domain.errors import (
    CorruptImageError,
    EmptyUploadError,
    ImageError,
    NotAnImageError,
    TruncatedImageError,
)
from comfygate.domain.images import ImageInfo


def _sample(fmt: str, **kwargs: object) -> bytes:
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 8
    exif[0x010E] = "a scanned photo"  # ImageDescription: makes the EXIF block longer
    return exif


SAMPLES = {
    "jpeg": _sample("JPEG", exif=_exif()),
    "jpeg-progressive": _sample("JPEG", progressive=True),
    "png": _sample("PNG", exif=_exif()),
    "webp": _sample("WEBP", exif=_exif()),
    "webp-lossless": _sample("WEBP", lossless=True),
    "bmp": _sample("BMP"),
    "tiff": _sample("TIFF", exif=_exif()),
    "tiff-lzw": _sample("TIFF", compression="tiff_lzw"),
    "tiff-tiled": _sample("TIFF", compression="tiff_adobe_deflate", tile=True),
}

FIXTURE_REUSE = HealthCheck.function_scoped_fixture  # the scratch file is module-scoped
TRUNCATION_ERRORS = (TruncatedImageError, CorruptImageError, NotAnImageError)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    # One file rewritten per example: hypothesis does not mix with function fixtures.
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "upload.bin"


def _inspect(path: Path, data: bytes) -> ImageInfo:
    path.write_bytes(data)
    return inspect_image(path, max_pixels=10_000_000, min_side_px=1)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_are_valid(scratch: Path, name: str) -> None:
    assert _inspect(scratch, SAMPLES[name]).pixels == 24 * 32


@pytest.mark.parametrize("name", sorted(SAMPLES))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_truncation_anywhere_is_caught(scratch: Path, name: str, data: st.DataObject) -> None:
    sample = SAMPLES[name]
    cut = data.draw(st.integers(min_value=0, max_value=len(sample) - 1), label="cut")

    expected = EmptyUploadError if cut == 0 else TRUNCATION_ERRORS
    with pytest.raises(expected):
        _inspect(scratch, sample[:cut])


@pytest.mark.parametrize("name", sorted(SAMPLES))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mangled_files_give_info_or_an_image_error(
    scratch: Path, name: str, data: st.DataObject
) -> None:
    mangled = bytearray(SAMPLES[name])
    # Most structure lives in the first few hundred bytes: aim there more often.
    header_end = min(len(mangled), 400)
    edits = data.draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(0, header_end - 1), st.integers(0, len(mangled) - 1)),
                st.integers(0, 255),
            ),
            min_size=1,
            max_size=6,
        ),
        label="edits",
    )
    for position, value in edits:
        mangled[position] = value

    try:
        info = _inspect(scratch, bytes(mangled))
    except ImageError:
        return
    assert info.pixels > 0


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from(
        [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"BM"]
    ),
    body=st.binary(max_size=300),
)
def test_arbitrary_bytes_never_escape_the_error_tree(
    scratch: Path, prefix: bytes, body: bytes
) -> None:
    with contextlib.suppress(ImageError):  # anything else fails the test
        _inspect(scratch, prefix + body)
