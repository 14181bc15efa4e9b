"""``ddcolor-onnx``: DDColor run by onnxruntime from a user-provided ONNX export.

The model contract is DDColor's: input ``(1, 3, S, S)`` float32 grey RGB in [0, 1],
output ``(1, 2, S, S)`` predicted a and b. The pipeline follows DDColor's
``inference/colorization_pipeline.py``: L is taken from the original at full
resolution; the image is resized to S x S, reduced to its L (a = b = 0) and turned back
into RGB as the model input; the predicted ab is resized to the original size
(bilinear), joined with the original L and converted to RGB.

onnxruntime is an optional dependency (``pip install 'comfygate[onnx]'``), imported
only when the engine starts. The session is created once, at ``start()``, followed by
one warm-up inference; ``cold_start_s`` records the two together.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from comfygate.adapters.engines.colorspace import FloatArray, lab_to_rgb, rgb_to_lightness
from comfygate.adapters.engines.local import (
    COLORIZE_CAPABILITIES,
    CancelToken,
    LocalEngine,
    output_path_for,
)
from comfygate.adapters.engines.onnx_session import OnnxColorModel, load_color_model
from comfygate.adapters.engines.pixels import load_rgb, resize_planes, save_png
from comfygate.domain.errors import (
    EngineSetupError,
    InvalidImageSizeError,
    WorkerUnavailableError,
    WorkflowError,
)
from comfygate.domain.workflow_params import IMAGE_SIZE_RANGES, model_input_size
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback

DDCOLOR_ONNX_ENGINE = "ddcolor-onnx"


def model_input(rgb: FloatArray, size_px: int) -> FloatArray:
    """DDColor's input: ``rgb`` resized to ``size_px`` square, grey (a = b = 0), NCHW."""
    small = resize_planes(rgb, size_px, size_px)
    grey_lab = np.zeros_like(small)
    grey_lab[..., 0] = rgb_to_lightness(small)
    grey_rgb = lab_to_rgb(grey_lab)
    tensor: FloatArray = np.ascontiguousarray(grey_rgb.transpose(2, 0, 1)[None])
    return tensor


def compose(lightness: FloatArray, ab: FloatArray) -> FloatArray:
    """Full-resolution L ``(H, W)`` + predicted ab ``(2, h, w)`` -> RGB ``(H, W, 3)``."""
    height, width = lightness.shape
    ab_full = resize_planes(np.ascontiguousarray(ab.transpose(1, 2, 0)), width, height)
    return lab_to_rgb(np.concatenate([lightness[..., None], ab_full], axis=-1))


class DdcolorOnnxEngine(LocalEngine):
    """DDColor on onnxruntime (CPU, or any provider the installed build offers)."""

    name = DDCOLOR_ONNX_ENGINE

    def __init__(
        self,
        *,
        model_path: Path,
        capabilities: Iterable[str] = COLORIZE_CAPABILITIES,
        max_workers: int = 1,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        instance: str | None = None,
    ) -> None:
        super().__init__(capabilities=capabilities, max_workers=max_workers, instance=instance)
        unknown = sorted(set(self.capabilities()) - set(IMAGE_SIZE_RANGES))
        if unknown:
            raise EngineSetupError(
                f"{DDCOLOR_ONNX_ENGINE} has no model input size for {', '.join(unknown)}"
            )
        self.model_path = model_path
        self._intra_op_threads = intra_op_threads
        self._providers = tuple(providers) if providers is not None else None
        self._model: OnnxColorModel | None = None
        self.cold_start_s: float | None = None

    async def start(self) -> None:
        """Load the model and run one warm-up inference; record ``cold_start_s``."""
        await super().start()
        if self._model is not None:
            return
        started = time.perf_counter()
        token = CancelToken("warm-up")
        load = functools.partial(
            load_color_model,
            self.model_path,
            intra_op_threads=self._intra_op_threads,
            providers=self._providers,
        )
        model = await self.in_thread(token, load)
        warm_size = model.fixed_size_px or min(
            model_input_size(capability, None) for capability in self.capabilities()
        )
        warm_input = np.zeros((1, 3, warm_size, warm_size), dtype=np.float32)
        await self.in_thread(token, model.predict_ab, warm_input, token)
        self._model = model
        self.cold_start_s = time.perf_counter() - started

    async def close(self) -> None:
        await super().close()
        self._model = None

    def _size_for(self, job: EngineJob, model: OnnxColorModel) -> int:
        # A model exported with a fixed input size only accepts that size.
        if model.fixed_size_px is not None:
            return model.fixed_size_px
        requested: Any = job.params.get("image_size")
        try:
            return model_input_size(job.capability, requested)
        except InvalidImageSizeError as exc:
            # Params are validated before dispatch; reaching here is a wiring fault,
            # reported the way the engine port reports failures.
            raise WorkflowError(str(exc), image_size=requested) from exc

    async def _process(
        self, job: EngineJob, token: CancelToken, progress: ProgressCallback
    ) -> EngineResult:
        model = self._model
        if model is None:
            raise WorkerUnavailableError(f"engine {self.name} is not started")
        size_px = self._size_for(job, model)
        await progress(0.0, "decoding")
        rgb = await self.in_thread(token, load_rgb, job.input_path)
        lightness = await self.in_thread(token, rgb_to_lightness, rgb)
        tensor = await self.in_thread(token, model_input, rgb, size_px)
        del rgb
        await progress(0.2, f"running DDColor at {size_px}px")
        model_started = time.perf_counter()
        ab = await self.in_thread(token, model.predict_ab, tensor, token)
        model_s = time.perf_counter() - model_started
        await progress(0.8, "composing")
        colored = await self.in_thread(token, compose, lightness, ab)
        await progress(0.9, "saving")
        output = output_path_for(job)
        text = {
            "engine": DDCOLOR_ONNX_ENGINE,
            "model": self.model_path.name,
            "model_input_size": str(size_px),
            "job_id": job.job_id,
            "Software": "comfygate",
        }
        save = functools.partial(save_png, text=text, before_publish=token.check)
        await self.in_thread(token, save, colored, output)
        await progress(1.0, "done")
        height, width = lightness.shape
        return EngineResult(
            output_path=output,
            engine=self.name,
            width=width,
            height=height,
            inference_s=0.0,
            metadata={
                "model": self.model_path.name,
                "model_input_size": size_px,
                "model_s": round(model_s, 6),
                "cold_start_s": self.cold_start_s,
            },
        )
