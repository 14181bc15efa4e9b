"""The ``preview`` engine end to end, and the behaviour every local engine shares."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfygate.adapters.engines.colorspace import rgb_to_lab
from comfygate.adapters.engines.preview import PreviewEngine
from comfygate.domain.errors import (
    ImageDecodeError,
    JobCancelledError,
    JobTimeoutError,
    WorkerError,
    WorkerUnavailableError,
    WorkflowError,
)
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback


class FakeProgress:
    """Records progress calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, fraction: float, message: str) -> None:
        self.calls.append((fraction, message))


def grey_gradient(width: int = 64, height: int = 48) -> Image.Image:
    row = np.linspace(10, 245, width, dtype=np.float32)
    return Image.fromarray(np.tile(row, (height, 1)).astype(np.uint8), mode="L")


def job(tmp_path: Path, source: Path, job_id: str = "job_1", **kwargs: object) -> EngineJob:
    return EngineJob(
        job_id=job_id,
        capability=str(kwargs.pop("capability", "colorize.person")),
        input_path=source,
        output_dir=tmp_path / "results",
        **kwargs,  # type: ignore[arg-type]
    )


def run(engine: PreviewEngine, engine_job: EngineJob, progress: ProgressCallback) -> EngineResult:
    async def scenario() -> EngineResult:
        await engine.start()
        try:
            return await engine.run(engine_job, progress=progress)
        finally:
            await engine.close()

    return asyncio.run(scenario())


def read_lab(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return rgb_to_lab(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def test_preview_colorizes_keeps_lightness_and_says_preview(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    grey_gradient().save(source)
    progress = FakeProgress()

    result = run(PreviewEngine(), job(tmp_path, source), progress)

    assert result.engine == "preview"
    assert result.output_path == tmp_path / "results" / "job_1.png"
    assert (result.width, result.height) == (64, 48)
    with Image.open(result.output_path) as output:
        assert output.format == "PNG"
        assert output.mode == "RGB"
        assert output.size == (64, 48)
        assert output.info["engine"] == "preview"
        assert output.info["job_id"] == "job_1"
    lab_out = read_lab(result.output_path)
    lab_in = read_lab(source)
    chroma = np.hypot(lab_out[..., 1], lab_out[..., 2])
    assert chroma.mean() > 8.0  # visibly coloured, not grey
    np.testing.assert_allclose(lab_out[..., 0], lab_in[..., 0], atol=0.6)
    fractions = [fraction for fraction, _ in progress.calls]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert result.inference_s > 0


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", "jpg"), ("TIFF", "tif")])
def test_output_is_upright(tmp_path: Path, fmt: str, suffix: str) -> None:
    source = tmp_path / f"in.{suffix}"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48, displayed 48x64
    grey_gradient().convert("RGB").save(source, format=fmt, exif=exif)

    result = run(PreviewEngine(), job(tmp_path, source), FakeProgress())

    assert (result.width, result.height) == (48, 64)
    with Image.open(result.output_path) as output:
        assert output.size == (48, 64)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    source = tmp_path / "in16.png"
    row = np.linspace(1000, 64000, 64).astype(np.uint16)
    Image.fromarray(np.tile(row, (48, 1))).save(source)

    result = run(PreviewEngine(), job(tmp_path, source), FakeProgress())

    lightness = read_lab(result.output_path)[..., 0]
    assert lightness[:, 0].mean() < 15  # dark stays dark
    assert lightness[:, -1].mean() > 90  # bright stays bright


def test_undecodable_input_is_a_non_retryable_worker_error(tmp_path: Path) -> None:
    source = tmp_path / "damaged.png"
    grey_gradient().save(source)
    data = bytearray(source.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32
    source.write_bytes(bytes(data))

    with pytest.raises(ImageDecodeError) as caught:
        run(PreviewEngine(), job(tmp_path, source), FakeProgress())

    assert isinstance(caught.value, WorkerError)
    assert caught.value.retryable is False
    assert caught.value.code == "image_decode_failed"
    assert not (tmp_path / "results" / "job_1.png").exists()


def test_capability_not_served(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    grey_gradient().save(source)
    engine = PreviewEngine(capabilities=["colorize.person"])

    assert engine.capabilities() == frozenset({"colorize.person"})
    with pytest.raises(WorkflowError):
        run(engine, job(tmp_path, source, capability="colorize.building"), FakeProgress())


def test_run_before_start_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    grey_gradient().save(source)

    with pytest.raises(WorkerUnavailableError):
        asyncio.run(PreviewEngine().run(job(tmp_path, source), progress=FakeProgress()))


def test_cancel_stops_the_job_and_leaves_no_result(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    grey_gradient().save(source)
    engine = PreviewEngine()

    async def cancel_at_first_progress(fraction: float, message: str) -> None:
        await engine.cancel("job_1")
        await engine.cancel("someone_else")  # not running: a no-op

    with pytest.raises(JobCancelledError):
        run(engine, job(tmp_path, source), cancel_at_first_progress)
    assert not (tmp_path / "results").exists()


def test_timeout_stops_the_job(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    grey_gradient().save(source)

    async def slow_listener(fraction: float, message: str) -> None:
        await asyncio.sleep(10)

    with pytest.raises(JobTimeoutError):
        run(PreviewEngine(), job(tmp_path, source, timeout_s=0.05), slow_listener)
    assert not (tmp_path / "results").exists()


def test_two_jobs_run_concurrently_on_one_engine(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    grey_gradient().save(source)
    engine = PreviewEngine(max_workers=2)

    async def scenario() -> list[EngineResult]:
        await engine.start()
        try:
            return list(
                await asyncio.gather(
                    *(
                        engine.run(job(tmp_path, source, f"job_{n}"), progress=FakeProgress())
                        for n in range(4)
                    )
                )
            )
        finally:
            await engine.close()

    results = asyncio.run(scenario())
    assert sorted(r.output_path.name for r in results) == [f"job_{n}.png" for n in range(4)]
