"""sRGB <-> CIE Lab (D65) on float arrays, matching OpenCV's and scikit-image's float
conversions, which is what DDColor was trained with (``cv2.cvtColor(..., COLOR_BGR2Lab)``
on float32 images in [0, 1]).

L is in [0, 100]; a and b roughly in [-128, 127]. The white point is the row sums of
the RGB -> XYZ matrix (as in OpenCV), so pure white maps to exactly a = b = 0.
Everything is float32 and vectorised: a 1920x1080 image converts in tens of ms.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# sRGB primaries, D65 (IEC 61966-2-1 as tabulated by OpenCV and scikit-image).
_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=np.float64,
)
_WHITE = _RGB_TO_XYZ.sum(axis=1)
# Fold the white-point normalisation into the matrices once.
_RGB_TO_XYZN = (_RGB_TO_XYZ / _WHITE[:, None]).astype(np.float32)
_XYZN_TO_RGB = np.linalg.inv(_RGB_TO_XYZ / _WHITE[:, None]).astype(np.float32)

_EPSILON = (6.0 / 29.0) ** 3  # CIE: below this f(t) is linear
_SLOPE = 1.0 / (3.0 * (6.0 / 29.0) ** 2)
_DELTA = 6.0 / 29.0


def srgb_to_linear(rgb: FloatArray) -> FloatArray:
    """Undo the sRGB transfer curve (values in [0, 1])."""
    rgb = np.asarray(rgb, dtype=np.float32)
    out: FloatArray = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(
        np.float32, copy=False
    )
    return out


def linear_to_srgb(linear: FloatArray) -> FloatArray:
    """Apply the sRGB transfer curve; negative input is clamped to 0 first."""
    linear = np.maximum(np.asarray(linear, dtype=np.float32), 0.0)
    out: FloatArray = np.where(
        linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1.0 / 2.4) - 0.055
    ).astype(np.float32, copy=False)
    return out


def _f(t: FloatArray) -> FloatArray:
    out: FloatArray = np.where(t > _EPSILON, np.cbrt(t), t * _SLOPE + 4.0 / 29.0).astype(
        np.float32, copy=False
    )
    return out


def _f_inverse(t: FloatArray) -> FloatArray:
    out: FloatArray = np.where(t > _DELTA, t**3, (t - 4.0 / 29.0) / _SLOPE).astype(
        np.float32, copy=False
    )
    return out


def luminance_to_lightness(y: FloatArray) -> FloatArray:
    """CIE L* from relative luminance Y (white = 1)."""
    out: FloatArray = (116.0 * _f(y) - 16.0).astype(np.float32, copy=False)
    return out


def rgb_to_lab(rgb: FloatArray) -> FloatArray:
    """``(..., 3)`` sRGB in [0, 1] -> ``(..., 3)`` Lab."""
    xyz = srgb_to_linear(rgb) @ _RGB_TO_XYZN.T
    fx, fy, fz = (_f(xyz[..., i]) for i in range(3))
    lab = np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)
    return lab.astype(np.float32, copy=False)


def rgb_to_lightness(rgb: FloatArray) -> FloatArray:
    """``(..., 3)`` sRGB in [0, 1] -> ``(...)`` L only (skips computing a and b)."""
    luminance = srgb_to_linear(rgb) @ _RGB_TO_XYZN[1]
    return luminance_to_lightness(luminance.astype(np.float32, copy=False))


def lab_to_rgb(lab: FloatArray) -> FloatArray:
    """``(..., 3)`` Lab -> ``(..., 3)`` sRGB, clipped to [0, 1] (out-of-gamut colours
    are clipped per channel, as OpenCV does)."""
    lab = np.asarray(lab, dtype=np.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = np.stack([_f_inverse(fx), _f_inverse(fy), _f_inverse(fz)], axis=-1)
    rgb = linear_to_srgb(xyz @ _XYZN_TO_RGB.T)
    out: FloatArray = np.clip(rgb, 0.0, 1.0)
    return out
