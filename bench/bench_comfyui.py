"""What comfygate adds per job over driving the same ComfyUI with a minimal client.

Same run, same server, jobs alternated (direct, comfygate, direct, ...): the direct
client uploads, submits, follows the websocket to ``executing`` null, reads the
history and fetches the output, and nothing else; comfygate's engine does the same
plus parameter resolution, progress mapping and result metadata; its cleanup (history
delete, file truncation) runs after the result is returned, as in production, and is
awaited between jobs so it never slows the next direct job.

    .venv/bin/python bench/bench_comfyui.py                 # fake ComfyUI, 1 s jobs
    .venv/bin/python bench/bench_comfyui.py --url http://127.0.0.1:8188   # a real one

The fake runs in its own process so the two clients do not share its GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comfygate.adapters.comfyui import ComfyUIEngine, InstanceConfig  # noqa: E402
from comfygate.adapters.comfyui.packs import load_packs  # noqa: E402
from comfygate.domain.workflows import build_prompt, resolve_params  # noqa: E402
from comfygate.services.engines import EngineJob  # noqa: E402


async def direct_job(
    http: httpx.AsyncClient, url: str, prompt: dict[str, Any], data: bytes
) -> float:
    """The minimal client: what anyone driving ComfyUI by hand has to do."""
    started = time.perf_counter()
    client_id = uuid.uuid4().hex
    ws_url = url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    files = {"image": (f"direct-{uuid.uuid4().hex}.png", data, "image/png")}
    # Connect and upload at once, as comfygate does: the baseline gets the same trick.
    ws_ready = asyncio.ensure_future(connect(ws_url, max_queue=None))
    upload = await http.post("/upload/image", files=files, data={"subfolder": "bench"})
    async with await ws_ready as ws:
        up = upload.json()
        prompt["1"]["inputs"]["image"] = f"{up['subfolder']}/{up['name']}"
        prompt_id = str(uuid.uuid4())
        await http.post(
            "/prompt", json={"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        )
        async for frame in ws:
            if isinstance(frame, str) and '"node": null' in frame and prompt_id in frame:
                break
        entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    image = entry["outputs"]["5"]["images"][0]
    (await http.get("/view", params=image)).raise_for_status()
    return time.perf_counter() - started


async def _noop(fraction: float, message: str) -> None:
    return None


async def run(url: str, jobs: int, source: Path, out: Path) -> dict[str, list[float]]:
    packs = load_packs()
    pack = packs["colorize.person"]
    engine = ComfyUIEngine(packs=packs, pools={"colorize.person": [InstanceConfig(url)]})
    await engine.start()  # warm-up: not measured
    data = source.read_bytes()
    prompt = build_prompt(
        pack, image_name="x", params=resolve_params(pack, {}), output_prefix="bench/direct"
    )
    times: dict[str, list[float]] = {"direct": [], "comfygate": []}
    async with httpx.AsyncClient(base_url=url) as http:
        await direct_job(http, url, prompt, data)  # warm the direct client too
        for i in range(jobs):
            times["direct"].append(await direct_job(http, url, prompt, data))
            job = EngineJob(
                job_id=f"bench_{i}", capability="colorize.person", input_path=source, output_dir=out
            )
            started = time.perf_counter()
            await engine.run(job, progress=_noop)
            times["comfygate"].append(time.perf_counter() - started)
            await engine.wait_cleanups()  # off the job's path; kept out of the next direct job
    await engine.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running ComfyUI (default: start the fake)")
    parser.add_argument("--job-s", type=float, default=1.0, help="fake job duration")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="input image side (px)")
    args = parser.parse_args()
    fake = None
    url = args.url
    if url is None:
        cmd = [sys.executable, "-m", "tests.comfyui_fake", "--job-s", str(args.job_s)]
        fake = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "in.png"
            Image.linear_gradient("L").resize((args.size, args.size * 3 // 4)).save(source)
            times = asyncio.run(run(url, args.jobs, source, Path(tmp) / "out"))
    finally:
        if fake is not None:
            assert fake.stdin is not None
            fake.stdin.close()
            fake.wait(timeout=30)
    report(url if fake is None else f"fake ComfyUI, {args.job_s:g} s jobs", times)


def report(server: str, times: dict[str, list[float]]) -> None:
    direct, ours = times["direct"], times["comfygate"]
    pairs = [c - d for d, c in zip(direct, ours, strict=True)]
    med_direct, med_ours = statistics.median(direct), statistics.median(ours)
    print(f"server: {server}; {len(direct)} jobs each, alternated")
    for name, values in times.items():
        med, mean = statistics.median(values) * 1000, statistics.mean(values) * 1000
        print(f"  {name:9s} median {med:8.1f} ms  mean {mean:8.1f} ms")
    overhead_ms = (med_ours - med_direct) * 1000
    paired_ms = statistics.median(pairs) * 1000
    print(f"  overhead  {overhead_ms:+.1f} ms (median of paired differences {paired_ms:+.1f} ms)")
    print(f"  ratio     comfygate / direct = {med_ours / med_direct:.4f}")


if __name__ == "__main__":
    main()
