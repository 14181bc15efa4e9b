"""A headless Chromium driven over the DevTools protocol, for the web pages' tests.

Just enough of the protocol for them: open a page, run JavaScript in it, wait for
something to show, and give a file input a file. ``chromium()`` is None where no
Chromium is installed (the tests that need one skip).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class ProtocolError(Exception):
    """The browser answered a command with an error."""


class Page:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command; its result (``ProtocolError`` if the browser refused it)."""
        sent = next(self._ids)
        self._socket.send(json.dumps({"id": sent, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while True:
            message = json.loads(self._socket.recv(timeout=max(deadline - time.monotonic(), 0)))
            if message.get("id") == sent:
                if "error" in message:
                    raise ProtocolError(message["error"])
                result: dict[str, Any] = message["result"]
                return result

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def run(self, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited if it is a promise)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def reload(self) -> None:
        """Reload the page, and wait until the new document has loaded (not the old
        one still showing)."""
        self.run("window.leaving = true; location.reload()")
        self.wait_for("window.leaving === undefined && document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy (one that throws, as it may while
        the page loads, is not yet); its value."""
        deadline = time.monotonic() + timeout_s
        guarded = f"(() => {{ try {{ return ({expression}); }} catch {{ return null; }} }})()"
        while True:
            try:
                if value := self.run(guarded):
                    return value
            except ProtocolError:  # the page's context went with a navigation
                pass
            assert time.monotonic() < deadline, f"never true in the page: {expression}"
            time.sleep(0.05)

    def choose_file(self, selector: str, path: Path) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(path)])


@contextmanager
def page(binary: str) -> Iterator[Page]:
    """A fresh headless browser (its own profile) and its one page; closed after."""
    # The browser's helper processes may still be writing the profile as it is
    # removed: what they leave is not the test's concern.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port = _debugging_port(Path(profile), process)
            targets = _targets(port)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            with connect(url, max_size=None) as socket:
                opened = Page(socket)
                for domain in ("Page", "Runtime", "DOM"):
                    opened.call(f"{domain}.enable")
                yield opened
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the browser and every process it started (its own session's group)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _debugging_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it took to ``DevToolsActivePort`` in its profile."""
    deadline = time.monotonic() + 30
    marker = profile / "DevToolsActivePort"
    while not (marker.exists() and marker.read_text().strip()):
        assert process.poll() is None, "chromium exited"
        assert time.monotonic() < deadline, "chromium did not open its debugging port"
        time.sleep(0.05)
    return int(marker.read_text().split()[0])


def _targets(port: int) -> list[dict[str, Any]]:
    import httpx

    deadline = time.monotonic() + 10
    while True:
        try:
            targets: list[dict[str, Any]] = httpx.get(f"http://127.0.0.1:{port}/json").json()
            if any(t["type"] == "page" for t in targets):
                return targets
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "chromium has no page"
        time.sleep(0.05)
