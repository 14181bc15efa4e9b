"""Upload metering and built-in engines on photo-sized images.

Measured in the same run, each against a baseline:

- ``inspect_image`` (header + structure walk) vs. a full Pillow decode of the same file:
  what metering saves by never decoding on the request path;
- ``receive_upload_sync`` (write + SHA-256 + MD5) vs. reading the file with SHA-256 only;
- the ``preview`` and ``ddcolor-onnx`` engines (the latter with a tiny 1x1-convolution
  model, so the figure is the pipeline's own cost, not DDColor's network) vs. the I/O
  floor every engine pays: decode the input and write a PNG.

Prints median milliseconds and ratios. Usage:

    .venv/bin/python bench/bench_images.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from comfygate.adapters.engines.ddcolor_onnx import DdcolorOnnxEngine
from comfygate.adapters.engines.local import LocalEngine
from comfygate.adapters.engines.pixels import load_rgb, save_png
from comfygate.adapters.engines.preview import PreviewEngine
from comfygate.adapters.images import inspect_image, receive_upload_sync
from comfygate.services.engines import EngineJob


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def photo(width: int, height: int) -> Image.Image:
    """A smooth grey scene with noise: compresses like a scanned photo, not like noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = 128 + 60 * np.sin(x / 97) * np.cos(y / 61) + rng.normal(0, 6, (height, width))
    return Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8), mode="L")


def tiny_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["ab"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "S", "S"])],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, [1, 2, "S", "S"])],
        [
            numpy_helper.from_array(np.full((2, 3, 1, 1), 5.0, np.float32), "w"),
            numpy_helper.from_array(np.array([-7.0, 3.0], np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def bench_metering(work: Path, repeat: int) -> None:
    print("metering (per upload)")
    for name, fmt, size in [("1080p", "JPEG", (1920, 1080)), ("24 MP", "JPEG", (6000, 4000)),
                            ("1080p", "PNG", (1920, 1080))]:  # fmt: skip
        path = work / f"upload.{fmt.lower()}"
        photo(*size).convert("RGB").save(path, format=fmt)

        def full_decode(p: Path = path) -> None:
            with Image.open(p) as image:
                image.load()

        ours = median_ms(lambda p=path: inspect_image(p), repeat)
        base = median_ms(full_decode, repeat)
        print(f"  inspect {name} {fmt:4}: {ours:8.2f} ms  full decode {base:8.2f} ms"
              f"  ratio {ours / base:.3f}")  # fmt: skip
        data = path.read_bytes()
        receive = median_ms(
            lambda d=data: receive_upload_sync(
                io.BytesIO(d), dest_dir=work / "tmp", max_bytes=len(d)
            ).path.unlink(),
            repeat,
        )
        sha_only = median_ms(lambda d=data: hashlib.sha256(d).hexdigest(), repeat)
        print(f"  receive {name} {fmt:4}: {receive:8.2f} ms  sha256 only {sha_only:8.2f} ms"
              f"  ratio {receive / sha_only:.2f}  ({len(data) / 1e6:.1f} MB)")  # fmt: skip


async def _engine_ms(engine: LocalEngine, job: EngineJob, repeat: int) -> float:
    async def progress(fraction: float, message: str) -> None:
        return None

    await engine.start()
    try:
        await engine.run(job, progress=progress)  # warm caches
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await engine.run(job, progress=progress)
            samples.append(time.perf_counter() - started)
    finally:
        await engine.close()
    return statistics.median(samples) * 1000


def bench_engines(work: Path, repeat: int) -> None:
    source = work / "photo.jpg"
    photo(1920, 1080).save(source, quality=90)
    floor = median_ms(lambda: save_png(load_rgb(source), work / "floor.png", text={}), repeat)
    print(f"engines on 1920x1080 (decode + PNG write floor {floor:.1f} ms)")
    job = EngineJob("job_bench", "colorize.person", source, work / "out")
    preview = PreviewEngine()
    ddcolor = DdcolorOnnxEngine(model_path=tiny_model(work / "tiny.onnx"))
    for label, engine in [("preview", preview), ("ddcolor-onnx, tiny model, S=512", ddcolor)]:
        elapsed = asyncio.run(_engine_ms(engine, job, repeat))
        print(f"  {label}: {elapsed:8.1f} ms  ratio to floor {elapsed / floor:.2f}")
    assert ddcolor.cold_start_s is not None
    print(f"  ddcolor-onnx cold start (load + warm-up): {ddcolor.cold_start_s * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with TemporaryDirectory() as directory:
        work = Path(directory)
        bench_metering(work, args.repeat)
        bench_engines(work, args.repeat)


if __name__ == "__main__":
    main()
