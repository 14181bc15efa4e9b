"""What the web pages' tests share: the package's web files, and node to run a
page's script (its pure helpers load without a DOM)."""

from __future__ import annotations

import os
import re
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


def assert_no_outside_url(name: str) -> None:
    """The web file ``name`` names no address outside the gateway: the pages work
    offline, and the Content-Security-Policy allows the gateway only."""
    text = WEB.joinpath(name).read_text("utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"[\"'(=] ?//", text)  # nor one relative to the scheme
    assert "@import" not in text and "url(" not in text
