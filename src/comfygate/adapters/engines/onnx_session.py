"""An onnxruntime session holding a colorization model with DDColor's contract.

Checks the contract when the model is loaded (one input ``(1, 3, S, S)``, an output
``(1, 2, S, S)``), so a wrong file fails at start-up with a clear message instead of on
the first paying job. ``onnxruntime`` is imported here, lazily: it is an optional
dependency.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from comfygate.adapters.engines.colorspace import FloatArray
from comfygate.adapters.engines.local import CancelToken
from comfygate.domain.errors import EngineSetupError, WorkerError

_FLOAT16 = "tensor(float16)"
_FLOAT32 = "tensor(float)"


def _import_onnxruntime() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise EngineSetupError(
            "the ddcolor-onnx engine needs onnxruntime: pip install 'comfygate[onnx]'"
        ) from exc


def _dim_is(dim: Any, expected: int) -> bool:
    """A fixed dimension must equal ``expected``; a symbolic one (str / None) may."""
    return dim == expected if isinstance(dim, int) else True


def _fixed_side(shape: Sequence[Any]) -> int | None:
    """S if the model fixes both spatial sides to the same integer, else None."""
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height == width and height > 0:
        return height
    return None


@dataclass(frozen=True, slots=True)
class OnnxColorModel:
    """A loaded model: predicts ab from a grey RGB tensor."""

    session: Any
    runtime: Any
    input_name: str
    output_name: str
    input_type: str
    fixed_size_px: int | None

    def predict_ab(self, tensor: FloatArray, token: CancelToken) -> FloatArray:
        """Run the model on ``(1, 3, S, S)``; return ``(2, h, w)`` float32 ab.

        Cancelling ``token`` terminates a running inference.
        """
        options = self.runtime.RunOptions()
        token.add_hook(lambda: setattr(options, "terminate", True))
        feed = tensor.astype(np.float16) if self.input_type == _FLOAT16 else tensor
        try:
            (output,) = self.session.run([self.output_name], {self.input_name: feed}, options)
        except Exception as exc:
            token.check()  # terminated on purpose: report the cancellation, not a crash
            # Same model, same input: another instance would fail the same way.
            raise WorkerError(f"DDColor inference failed: {exc}", retryable=False) from exc
        ab = np.asarray(output, dtype=np.float32)
        if ab.ndim != 4 or ab.shape[0] != 1 or ab.shape[1] != 2:
            raise WorkerError(
                f"model output has shape {ab.shape}, expected (1, 2, S, S)", retryable=False
            )
        token.check()
        result: FloatArray = ab[0]
        return result


def _check_contract(session: Any, path: Path) -> tuple[Any, Any]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs (expected 1)")
    elif len(inputs[0].shape) != 4 or not _dim_is(inputs[0].shape[1], 3):
        problems.append(f"input shape {inputs[0].shape} (expected (1, 3, S, S))")
    elif inputs[0].type not in (_FLOAT32, _FLOAT16):
        problems.append(f"input type {inputs[0].type} (expected float or float16)")
    if not outputs or len(outputs[0].shape) != 4 or not _dim_is(outputs[0].shape[1], 2):
        problems.append("first output is not (1, 2, S, S)")
    if problems:
        raise EngineSetupError(
            f"{path.name} is not a DDColor-style model: {'; '.join(problems)}", model=str(path)
        )
    return inputs[0], outputs[0]


def load_color_model(
    path: Path, *, intra_op_threads: int | None = None, providers: Sequence[str] | None = None
) -> OnnxColorModel:
    """Create the session for ``path`` and check its input/output contract."""
    runtime = _import_onnxruntime()
    if not path.is_file():
        raise EngineSetupError(f"model file {path} does not exist", model=str(path))
    options = runtime.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    try:
        session = runtime.InferenceSession(
            str(path),
            sess_options=options,
            providers=list(providers or runtime.get_available_providers()),
        )
    except Exception as exc:
        raise EngineSetupError(f"cannot load model {path.name}: {exc}", model=str(path)) from exc
    model_input, model_output = _check_contract(session, path)
    return OnnxColorModel(
        session=session,
        runtime=runtime,
        input_name=model_input.name,
        output_name=model_output.name,
        input_type=model_input.type,
        fixed_size_px=_fixed_side(model_input.shape),
    )
