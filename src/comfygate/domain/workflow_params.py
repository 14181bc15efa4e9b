"""Model input sizes for the built-in DDColor engine (the seed's ``image_size`` table).

ComfyUI jobs get their parameters from the workflow pack's manifest
(``domain.workflows``); the built-in ``ddcolor-onnx`` engine has no pack, so it applies
the seed's ranges here: person 460-680 (default 512), building 960-1280 (default 1024),
on the 32-pixel grid DDColor's encoder needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from comfygate.domain.errors import InvalidImageSizeError, UnknownCapabilityError

MODEL_SIZE_STEP_PX = 32
"""DDColor's ConvNeXt encoder downsamples by 32: sides must be multiples of it."""


@dataclass(frozen=True, slots=True)
class SizeRange:
    """Allowed model input sides for one capability."""

    min_px: int
    max_px: int
    default_px: int


IMAGE_SIZE_RANGES: dict[str, SizeRange] = {
    "colorize.person": SizeRange(min_px=460, max_px=680, default_px=512),
    "colorize.building": SizeRange(min_px=960, max_px=1280, default_px=1024),
}


def model_input_size(capability: str, requested: int | None) -> int:
    """The square side fed to the model for ``capability``.

    ``None`` gives the capability's default. Other values are clamped into the range
    and snapped to the nearest multiple of 32 (ties up) that lies inside it (so 460 becomes 480
    and 680 becomes 672). Raises ``UnknownCapabilityError`` for a capability without a
    range and ``InvalidImageSizeError`` for a non-integer or non-positive request.
    """
    size_range = IMAGE_SIZE_RANGES.get(capability)
    if size_range is None:
        raise UnknownCapabilityError(
            f"no model input size range for capability {capability!r}", capability=capability
        )
    if requested is None:
        return size_range.default_px
    if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
        raise InvalidImageSizeError(
            f"image_size must be a positive integer, got {requested!r}", image_size=requested
        )
    clamped = min(max(requested, size_range.min_px), size_range.max_px)
    step = MODEL_SIZE_STEP_PX
    lowest = math.ceil(size_range.min_px / step) * step
    highest = size_range.max_px // step * step
    nearest = (clamped + step // 2) // step * step  # ties go up, e.g. 496 -> 512
    return min(max(nearest, lowest), highest)
