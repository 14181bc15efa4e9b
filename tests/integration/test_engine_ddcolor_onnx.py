"""``ddcolor-onnx`` on real onnxruntime with tiny models that honour DDColor's contract.

The models are built here with the ``onnx`` helper API: a 1x1 convolution from the
grey RGB input (1, 3, S, S) to ab (1, 2, S, S). With zero weights the output is the
bias, a constant ab; with weights it is a known function of the input's grey level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from comfygate.adapters.engines import onnx_session
from comfygate.adapters.engines.colorspace import lab_to_rgb, rgb_to_lab
from comfygate.adapters.engines.ddcolor_onnx import DdcolorOnnxEngine, model_input
from comfygate.adapters.engines.local import CancelToken
from comfygate.adapters.engines.onnx_session import load_color_model
from comfygate.domain.errors import (
    EngineSetupError,
    ImageDecodeError,
    JobCancelledError,
    WorkflowError,
)
from comfygate.services.engines import EngineJob, EngineResult


def conv_model(
    path: Path,
    *,
    weights: Sequence[Sequence[float]] = ((0, 0, 0), (0, 0, 0)),
    bias: Sequence[float] = (0.0, 0.0),
    side: int | str = "S",
    in_channels: int = 3,
    elem_type: int = TensorProto.FLOAT,
) -> Path:
    w = np.array(weights, dtype=np.float32).reshape(2, in_channels, 1, 1)
    nodes = []
    conv_input = "input"
    if elem_type == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["input"], ["input32"], to=TensorProto.FLOAT))
        conv_input = "input32"
    nodes.append(helper.make_node("Conv", [conv_input, "w", "b"], ["ab"]))
    graph = helper.make_graph(
        nodes,
        "tiny-ddcolor",
        [helper.make_tensor_value_info("input", elem_type, [1, in_channels, side, side])],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, [1, 2, side, side])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(bias, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def gradient_photo(path: Path, width: int = 96, height: int = 64) -> Path:
    row = np.linspace(40, 220, width, dtype=np.float32)
    Image.fromarray(np.tile(row, (height, 1)).astype(np.uint8), mode="L").save(path)
    return path


def lab_of(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return rgb_to_lab(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def run_job(engine: DdcolorOnnxEngine, job: EngineJob) -> tuple[EngineResult, list[float]]:
    fractions: list[float] = []

    async def progress(fraction: float, message: str) -> None:
        fractions.append(fraction)

    async def scenario() -> EngineResult:
        await engine.start()
        try:
            return await engine.run(job, progress=progress)
        finally:
            await engine.close()

    return asyncio.run(scenario()), fractions


def make_job(tmp_path: Path, source: Path, **kwargs: object) -> EngineJob:
    return EngineJob(
        job_id="job_dd",
        capability=str(kwargs.pop("capability", "colorize.person")),
        input_path=source,
        output_dir=tmp_path / "out",
        params=dict(kwargs),
    )


def test_constant_ab_model_gives_that_ab_and_keeps_l(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "const.onnx", bias=(20.0, -15.0))
    source = gradient_photo(tmp_path / "in.png")
    engine = DdcolorOnnxEngine(model_path=model)

    result, fractions = run_job(engine, make_job(tmp_path, source))

    assert result.engine == "ddcolor-onnx"
    assert (result.width, result.height) == (96, 64)
    assert result.metadata["model_input_size"] == 512
    assert engine.cold_start_s is not None and engine.cold_start_s > 0
    lab_out, lab_in = lab_of(result.output_path), lab_of(source)
    np.testing.assert_allclose(lab_out[..., 0], lab_in[..., 0], atol=0.6)
    np.testing.assert_allclose(lab_out[..., 1], 20.0, atol=1.5)
    np.testing.assert_allclose(lab_out[..., 2], -15.0, atol=1.5)
    with Image.open(result.output_path) as image:
        assert image.info["engine"] == "ddcolor-onnx"
        assert image.info["model"] == "const.onnx"
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions)


def test_ab_follows_the_model_across_the_image(tmp_path: Path) -> None:
    # a = 30 * (R + G + B) - 45: negative on the dark side, positive on the bright.
    model = conv_model(tmp_path / "slope.onnx", weights=((10, 10, 10), (0, 0, 0)), bias=(-15, 0))
    source = gradient_photo(tmp_path / "in.png")

    result, _ = run_job(DdcolorOnnxEngine(model_path=model), make_job(tmp_path, source))

    a = lab_of(result.output_path)[..., 1].mean(axis=0)
    assert a[:10].mean() < -5
    assert a[-10:].mean() > 5
    assert np.all(np.diff(a) > -1.0)  # rising with the grey level, up to quantisation


def test_model_input_is_ddcolor_grey_rgb() -> None:
    rgb = np.random.default_rng(5).random((40, 60, 3), dtype=np.float32)

    tensor = model_input(rgb, 32)

    assert tensor.shape == (1, 3, 32, 32)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 0], tensor[0, 1], atol=1e-5)  # grey: R = G = B
    np.testing.assert_allclose(tensor[0, 1], tensor[0, 2], atol=1e-5)
    grey_lab = rgb_to_lab(tensor[0].transpose(1, 2, 0))
    assert np.abs(grey_lab[..., 1:]).max() < 0.01
    assert lab_to_rgb(grey_lab).max() <= 1.0


@pytest.mark.parametrize(
    ("capability", "params", "expected"),
    [
        ("colorize.person", {}, 512),
        ("colorize.person", {"image_size": 600}, 608),
        ("colorize.building", {}, 1024),
        ("colorize.building", {"image_size": 5000}, 1280),
    ],
)
def test_input_size_comes_from_the_job(
    tmp_path: Path, capability: str, params: dict[str, int], expected: int
) -> None:
    model = conv_model(tmp_path / "m.onnx")
    source = gradient_photo(tmp_path / "in.png", 40, 30)

    job = make_job(tmp_path, source, capability=capability, **params)
    result, _ = run_job(DdcolorOnnxEngine(model_path=model), job)

    assert result.metadata["model_input_size"] == expected


def test_a_fixed_size_model_uses_its_own_size(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "fixed.onnx", side=64, bias=(5.0, 5.0))
    source = gradient_photo(tmp_path / "in.png")

    result, _ = run_job(
        DdcolorOnnxEngine(model_path=model), make_job(tmp_path, source, image_size=640)
    )

    assert result.metadata["model_input_size"] == 64
    assert (result.width, result.height) == (96, 64)


def test_float16_model(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "half.onnx", bias=(10.0, 10.0), elem_type=TensorProto.FLOAT16)
    source = gradient_photo(tmp_path / "in.png")

    result, _ = run_job(DdcolorOnnxEngine(model_path=model), make_job(tmp_path, source))

    np.testing.assert_allclose(lab_of(result.output_path)[..., 1], 10.0, atol=1.5)


def test_undecodable_input(tmp_path: Path) -> None:
    # The header is intact (inspection passes); the compressed pixel data is not.
    model = conv_model(tmp_path / "m.onnx")
    source = gradient_photo(tmp_path / "bad.png")
    data = bytearray(source.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32
    source.write_bytes(bytes(data))

    with pytest.raises(ImageDecodeError) as caught:
        run_job(DdcolorOnnxEngine(model_path=model), make_job(tmp_path, source))
    assert caught.value.retryable is False


def missing_model(directory: Path) -> Path:
    return directory / "missing.onnx"


def junk_model(directory: Path) -> Path:
    path = directory / "junk.onnx"
    path.write_bytes(b"not a model")
    return path


def four_channel_model(directory: Path) -> Path:
    return conv_model(directory / "four.onnx", weights=((0,) * 4, (0,) * 4), in_channels=4)


@pytest.mark.parametrize("build", [missing_model, junk_model, four_channel_model])
def test_unusable_models_fail_at_start(tmp_path: Path, build: Callable[[Path], Path]) -> None:
    engine = DdcolorOnnxEngine(model_path=build(tmp_path))

    with pytest.raises(EngineSetupError):
        asyncio.run(engine.start())


def test_missing_onnxruntime_is_a_clear_setup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_module(name: str) -> object:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(onnx_session.importlib, "import_module", no_module)

    with pytest.raises(EngineSetupError, match=r"comfygate\[onnx\]"):
        load_color_model(conv_model(tmp_path / "m.onnx"))


def test_unknown_capability_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(EngineSetupError):
        DdcolorOnnxEngine(model_path=tmp_path / "m.onnx", capabilities=["upscale.x4"])


def test_cancelling_terminates_inference(tmp_path: Path) -> None:
    model = load_color_model(conv_model(tmp_path / "m.onnx"))
    token = CancelToken("job_x")
    token.cancel("cancelled")

    with pytest.raises(JobCancelledError):
        model.predict_ab(np.zeros((1, 3, 32, 32), np.float32), token)


def test_a_garbage_image_size_is_a_worker_error(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "m.onnx")
    source = gradient_photo(tmp_path / "in.png")

    with pytest.raises(WorkflowError):
        run_job(DdcolorOnnxEngine(model_path=model), make_job(tmp_path, source, image_size="big"))
    assert not (tmp_path / "out").exists()
