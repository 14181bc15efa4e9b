"""sRGB <-> Lab against published values (scikit-image / OpenCV float conversion)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from comfygate.adapters.engines.colorspace import (
    lab_to_rgb,
    linear_to_srgb,
    rgb_to_lab,
    rgb_to_lightness,
    srgb_to_linear,
)

KNOWN = [
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
    ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((0.5, 0.5, 0.5), (53.3890, 0.0, 0.0)),
]


@pytest.mark.parametrize(("rgb", "lab"), KNOWN)
def test_rgb_to_lab_matches_published_values(
    rgb: tuple[float, float, float], lab: tuple[float, float, float]
) -> None:
    got = rgb_to_lab(np.array(rgb, dtype=np.float32))
    np.testing.assert_allclose(got, lab, atol=0.01)


@pytest.mark.parametrize(("rgb", "lab"), KNOWN)
def test_lab_to_rgb_inverts_published_values(
    rgb: tuple[float, float, float], lab: tuple[float, float, float]
) -> None:
    got = lab_to_rgb(np.array(lab, dtype=np.float32))
    np.testing.assert_allclose(got, rgb, atol=1e-3)  # the table has 4 decimals


@given(hnp.arrays(np.float32, (7, 3), elements=st.floats(0, 1, width=32, allow_nan=False)))
def test_round_trip(rgb: np.ndarray) -> None:
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=2e-4)


def test_lightness_only_equals_full_conversion() -> None:
    rgb = np.random.default_rng(3).random((16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(rgb_to_lightness(rgb), rgb_to_lab(rgb)[..., 0], atol=1e-4)


def test_out_of_gamut_lab_is_clipped() -> None:
    rgb = lab_to_rgb(np.array([[50.0, 120.0, -120.0], [100.0, -100.0, 100.0]], np.float32))
    assert rgb.min() >= 0.0
    assert rgb.max() <= 1.0


def test_transfer_curve_is_continuous_and_inverse() -> None:
    x = np.linspace(0, 1, 10_001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert np.all(np.diff(srgb_to_linear(x)) >= 0)
