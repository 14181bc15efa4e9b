"""Pure image rules: orientation, limits, declared size."""

from __future__ import annotations

import pytest

from comfygate.domain.errors import (
    DeclaredSizeMismatchError,
    ImageTooSmallError,
    TooManyPixelsError,
)
from comfygate.domain.images import (
    ImageFormat,
    ImageInfo,
    check_dimensions,
    normalise_orientation,
    oriented_size,
)


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [(1, (400, 300)), (2, (400, 300)), (3, (400, 300)), (4, (400, 300)),
     (5, (300, 400)), (6, (300, 400)), (7, (300, 400)), (8, (300, 400))],
)  # fmt: skip
def test_oriented_size(orientation: int, expected: tuple[int, int]) -> None:
    assert oriented_size(400, 300, orientation) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 1), (0, 1), (9, 1), (True, 1), ("6", 1), (6, 6), (8, 8)]
)
def test_normalise_orientation(raw: object, expected: int) -> None:
    assert normalise_orientation(raw) == expected


def test_pixels_do_not_change_with_orientation() -> None:
    info = ImageInfo(ImageFormat.JPEG, 300, 400, 6, "RGB", stored_width=400, stored_height=300)
    assert info.pixels == 120_000


def test_check_dimensions_order_and_limits() -> None:
    check_dimensions(800, 600, max_pixels=480_000, min_side_px=16, declared=(800, 600))
    with pytest.raises(TooManyPixelsError):
        check_dimensions(800, 601, max_pixels=480_000, min_side_px=16)
    with pytest.raises(ImageTooSmallError):
        check_dimensions(800, 15, max_pixels=480_000, min_side_px=16)
    with pytest.raises(DeclaredSizeMismatchError):
        check_dimensions(800, 600, max_pixels=480_000, min_side_px=16, declared=(600, 800))
    # The pixel cap protects the service, so it wins over the other checks.
    with pytest.raises(TooManyPixelsError):
        check_dimensions(100_000, 1, max_pixels=50_000, min_side_px=16, declared=(1, 1))


def test_mime_types() -> None:
    assert {f.mime_type for f in ImageFormat} == {
        "image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff"
    }  # fmt: skip
