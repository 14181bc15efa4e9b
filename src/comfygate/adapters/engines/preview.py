"""``preview``: a fast classical colorizer with no model, for demos and tests.

A luminance-keyed gradient map in Lab: L is kept from the input, and a and b are read
from a palette keyed on L (cool shadows, warm skin-like mid-tones, a pale sky-blue
band in the highlights, neutral white). Because the output colour depends on L alone,
the whole colorization is one 1-D lookup table, built once; a 1080p photo takes tens
of milliseconds. Every result says ``engine: preview`` (in ``EngineResult.engine`` and
in the PNG's text chunks), so no one mistakes it for DDColor.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from comfygate.adapters.engines.colorspace import FloatArray, lab_to_rgb, rgb_to_lightness
from comfygate.adapters.engines.local import (
    COLORIZE_CAPABILITIES,
    CancelToken,
    LocalEngine,
    output_path_for,
)
from comfygate.adapters.engines.pixels import ByteArray, load_rgb, save_png, to_uint8
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback

PREVIEW_ENGINE = "preview"

# (L, a, b) key points of the palette; a and b are interpolated linearly in L.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (15.0, 2.0, -5.0),  # shadows: a little cool
    (35.0, 9.0, 14.0),  # browns: hair, wood, earth
    (55.0, 15.0, 22.0),  # skin
    (70.0, 11.0, 20.0),
    (82.0, -2.0, -8.0),  # bright areas: pale sky
    (92.0, -2.0, -10.0),
    (100.0, 0.0, 0.0),  # paper white stays white
)
_LUT_STEPS_PER_L = 20  # L resolution 0.05: finer than one 8-bit step anywhere


def build_lut() -> ByteArray:
    """The ``(2001, 3)`` uint8 RGB table indexed by ``round(L * 20)``."""
    lightness = np.linspace(0.0, 100.0, 100 * _LUT_STEPS_PER_L + 1, dtype=np.float32)
    keys = np.array(PALETTE, dtype=np.float32)
    a = np.interp(lightness, keys[:, 0], keys[:, 1])
    b = np.interp(lightness, keys[:, 0], keys[:, 2])
    lab = np.stack([lightness, a, b], axis=-1).astype(np.float32)
    return to_uint8(lab_to_rgb(lab))


def colorize_preview(rgb: FloatArray, lut: ByteArray) -> ByteArray:
    """Map an ``(H, W, 3)`` image in [0, 1] through the palette."""
    index = np.rint(rgb_to_lightness(rgb) * _LUT_STEPS_PER_L).astype(np.intp)
    np.clip(index, 0, len(lut) - 1, out=index)
    out: ByteArray = lut[index]
    return out


class PreviewEngine(LocalEngine):
    """The model-free default engine."""

    name = PREVIEW_ENGINE

    def __init__(
        self,
        *,
        capabilities: Iterable[str] = COLORIZE_CAPABILITIES,
        max_workers: int = 1,
        instance: str | None = None,
    ) -> None:
        super().__init__(capabilities=capabilities, max_workers=max_workers, instance=instance)
        self._lut: ByteArray | None = None

    async def start(self) -> None:
        await super().start()
        if self._lut is None:
            self._lut = build_lut()

    async def _process(
        self, job: EngineJob, token: CancelToken, progress: ProgressCallback
    ) -> EngineResult:
        lut = self._lut if self._lut is not None else build_lut()
        await progress(0.0, "decoding")
        rgb = await self.in_thread(token, load_rgb, job.input_path)
        await progress(0.4, "colorizing")
        colored = await self.in_thread(token, colorize_preview, rgb, lut)
        await progress(0.7, "saving")
        output = output_path_for(job)
        text = {"engine": PREVIEW_ENGINE, "job_id": job.job_id, "Software": "comfygate"}
        save = functools.partial(save_png, text=text, before_publish=token.check)
        await self.in_thread(token, save, colored, output)
        await progress(1.0, "done")
        height, width = colored.shape[:2]
        return EngineResult(
            output_path=output, engine=self.name, width=width, height=height, inference_s=0.0
        )
