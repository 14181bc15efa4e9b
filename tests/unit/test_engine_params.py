"""DDColor model input sizes: defaults, clamping, the 32-pixel grid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfygate.domain.errors import InvalidImageSizeError, UnknownCapabilityError
from comfygate.domain.workflow_params import IMAGE_SIZE_RANGES, model_input_size


@pytest.mark.parametrize(
    ("capability", "requested", "expected"),
    [
        ("colorize.person", None, 512),
        ("colorize.building", None, 1024),
        ("colorize.person", 460, 480),  # 448 would leave the range
        ("colorize.person", 680, 672),
        ("colorize.person", 100, 480),
        ("colorize.person", 5000, 672),
        ("colorize.person", 600, 608),
        ("colorize.person", 496, 512),  # a tie goes up
        ("colorize.building", 960, 960),
        ("colorize.building", 1100, 1088),
        ("colorize.building", 1280, 1280),
        ("colorize.building", 2000, 1280),
    ],
)
def test_model_input_size(capability: str, requested: int | None, expected: int) -> None:
    assert model_input_size(capability, requested) == expected


@given(capability=st.sampled_from(sorted(IMAGE_SIZE_RANGES)), requested=st.integers(1, 10_000))
def test_sizes_are_on_the_grid_and_in_range(capability: str, requested: int) -> None:
    size = model_input_size(capability, requested)
    size_range = IMAGE_SIZE_RANGES[capability]
    assert size % 32 == 0
    assert size_range.min_px <= size <= size_range.max_px


@pytest.mark.parametrize("bad", [0, -512, True, 512.0, "512"])
def test_bad_requests(bad: object) -> None:
    with pytest.raises(InvalidImageSizeError):
        model_input_size("colorize.person", bad)  # type: ignore[arg-type]


def test_unknown_capability() -> None:
    with pytest.raises(UnknownCapabilityError):
        model_input_size("upscale.x4", None)
