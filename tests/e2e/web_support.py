"""What the web pages' tests share: the package's web files, and node to run a
page's script (its pure helpers load without a DOM)."""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

WEB = resources.files("comfygate.entrypoints.web")
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH")


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``node ARGS web/NAME``, in Shanghai time (helpers that show the browser's
    zone then answer the same everywhere)."""
    script = Path(str(WEB.joinpath(name)))
    env = {**os.environ, "TZ": "Asia/Shanghai"}
    return subprocess.run(
        [NODE or "node", *args, str(script)], check=False, capture_output=True, text=True, env=env
    )
