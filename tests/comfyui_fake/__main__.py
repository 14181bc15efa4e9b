"""Run the fake ComfyUI as its own process: ``python -m tests.comfyui_fake --job-s 1``.

Prints its URL on the first line of stdout, then serves until stdin closes (so the
parent, e.g. ``bench/bench_comfyui.py``, never leaves it behind).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.comfyui_fake import FakeBehaviour, FakeComfyUI


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-s", type=float, default=1.0, help="model node duration")
    parser.add_argument("--steps", type=int, default=20, help="progress events per job")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fake-comfyui-") as root:
        behaviour = FakeBehaviour(job_s=args.job_s, progress_steps=args.steps)
        with FakeComfyUI(Path(root), behaviour=behaviour, port=args.port) as fake:
            print(fake.url, flush=True)
            sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    main()
