"""One job on one ComfyUI instance: upload, submit, follow, read history, fetch, clean up.

The websocket is opened (with a fresh ``client_id``) while the image uploads, so no
message of our prompt can be missed; ``executing`` with ``node: null`` ends it, and
``/history/{id}`` (written before that message) is the source of truth. If the socket
drops, the runner polls the history instead: ComfyUI never replays missed frames, and
a new socket would not get our prompt's messages anyway (they go to the client_id that
submitted it). Outcomes are told apart by exception type: ``WorkflowError`` (the
workflow failed, never retried), ``WorkerUnavailableError`` (the instance failed, try
another), ``JobTimeoutError`` (cancelled on the server first), ``JobCancelledError``.
A prompt that turns out to have succeeded when the timeout stops it (it ended right at
the deadline, or fetching its output was what ran late) still delivers its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from comfygate.adapters.comfyui.client import ComfyUIClient
from comfygate.adapters.comfyui.progress import ProgressTracker
from comfygate.adapters.comfyui.protocol import FileRef, PromptHistory, parse_ws_text
from comfygate.domain.errors import (
    JobCancelledError,
    JobTimeoutError,
    WorkerError,
    WorkerUnavailableError,
    WorkflowError,
)
from comfygate.domain.jobs import TIMEOUT_GRACE_S
from comfygate.domain.workflows import WorkflowPack, build_prompt
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback

UPLOAD_SUBFOLDER = "comfygate"
HISTORY_FAILURE_WINDOW_S = 2.0
"""How long history reads may keep failing before the instance counts as gone: a proxy's
hiccup (one 502) must not move a job, and its running prompt, to another instance."""
MISSING_READS = 2
"""Reads in a row that find our prompt neither queued nor in the history before it
counts as lost (an operator's "Clear queue", a restart): the job goes elsewhere."""
STOP_GRACE_S = TIMEOUT_GRACE_S / 2
"""How long a timed-out prompt may take to stop: well inside the dispatcher's guard, so
the runner, not the guard, decides whether the instance still runs our prompt."""


class PromptRunner:
    """Runs one job attempt on one instance. Use once."""

    def __init__(
        self,
        client: ComfyUIClient,
        pack: WorkflowPack,
        job: EngineJob,
        params: Mapping[str, Any],
        *,
        progress: ProgressCallback,
        timeout_s: float,
        poll_interval_s: float = 0.25,
        idle_check_s: float = 1.0,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.client, self.pack, self.job, self.params = client, pack, job, params
        self.prompt_id = str(uuid.uuid4())
        self.client_id = uuid.uuid4().hex
        self.timeout_s = timeout_s
        self.submitted = False
        self.stopped = True
        """False from submit until the prompt is seen finished, gone or cancelled: while
        False the instance may still be running our prompt."""
        self.uploaded: FileRef | None = None
        self.outputs: list[FileRef] = []
        self._progress = progress
        self._poll_interval_s = poll_interval_s
        self._idle_check_s = idle_check_s
        self._stop_grace_s = stop_grace_s
        self._cancel_reason: str | None = None
        self._history_failing_since: float | None = None
        self._missing_reads = 0
        self._started_at = time.perf_counter()

    async def run(self) -> EngineResult:
        """Run to a result or raise a ``WorkerError`` subclass."""
        self._started_at = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s) as scope:
                return await self._attempt()
        except TimeoutError:
            if not scope.expired():
                raise
            self._cancel_reason = self._cancel_reason or "timed out"
            grace_ends = time.monotonic() + self._stop_grace_s
            if not self.stopped:  # (one that ended, its output in transit, needs none)
                self.stopped = await self._stop()
            if self.stopped:
                late = await self._late_result(grace_ends - time.monotonic())
                if late is not None:
                    return late
            state = "cancelled" if self.stopped else "still running"
            raise JobTimeoutError(
                f"job {self.job.job_id} ran past its {self.timeout_s:g} s timeout on "
                f"{self.client.base_url}; prompt {state}",
                prompt_id=self.prompt_id,
                instance=self.client.base_url,
                stopped=self.stopped,
            ) from None
        except asyncio.CancelledError:
            if not self.stopped:
                self.stopped = await self._stop()
            raise
        except WorkerUnavailableError:
            # The job moves to another instance: our prompt must not run on here as well.
            if not self.stopped:
                self.stopped = await self._stop()
            raise

    async def cancel(self, reason: str = "cancelled") -> None:
        """Ask for the job to stop; ``run`` then raises ``JobCancelledError``."""
        self._cancel_reason = reason
        if self.submitted:
            with contextlib.suppress(WorkerError):
                await self.client.cancel(self.prompt_id)

    async def _late_result(self, budget_s: float) -> EngineResult | None:
        """The result of a prompt the timeout stopped after it succeeded, if it did and
        its output can be fetched within ``budget_s`` (what is left of the stop grace,
        so the dispatcher's guard still does not fire)."""
        if budget_s <= 0:
            return None
        try:
            async with asyncio.timeout(budget_s):
                history = await self.client.history(self.prompt_id)
                if history is None or history.outcome != "success":
                    return None
                return await self._finish(history, wall_s=time.perf_counter() - self._started_at)
        except (TimeoutError, WorkerError):
            return None

    async def _attempt(self) -> EngineResult:
        started = self._started_at
        await self._progress(0.0, "uploading")
        data = self.job.input_path.read_bytes()
        suffix = self.job.input_path.suffix.lower() or ".png"
        name = f"{self.job.job_id}-{uuid.uuid4().hex[:8]}{suffix}"  # unique: no cached replay
        ws = await self._upload_with_ws(data, name)
        try:
            history = await self._submit_and_follow(ws)
            self.stopped = True  # ComfyUI writes the history entry once the prompt ended
        finally:
            if ws is not None:
                await ws.close()
        return await self._finish(history, wall_s=time.perf_counter() - started)

    async def _upload_with_ws(self, data: bytes, name: str) -> ClientConnection | None:
        """Upload the input while the websocket opens; the socket, or None without one."""
        connecting = asyncio.ensure_future(self._open_ws())
        try:
            self.uploaded = await self.client.upload_image(data, name, subfolder=UPLOAD_SUBFOLDER)
            return await connecting
        except BaseException:  # failed, timed out or cancelled: the socket must not leak
            await _close_when_open(connecting)
            raise

    async def _open_ws(self) -> ClientConnection | None:
        try:
            return await self.client.websocket(self.client_id)
        except (OSError, WebSocketException, TimeoutError):
            return None  # no progress, but history polling still finds the result

    async def _submit_and_follow(self, ws: ClientConnection | None) -> PromptHistory:
        if self._cancel_reason:
            raise JobCancelledError(f"job {self.job.job_id} {self._cancel_reason} before submit")
        assert self.uploaded is not None
        prompt = build_prompt(
            self.pack,
            image_name=self.uploaded.load_image_value(),
            params=self.params,
            output_prefix=f"{UPLOAD_SUBFOLDER}/{self.job.job_id}",
        )
        tracker = ProgressTracker(prompt, self._progress)
        # set first: a 200 with node_errors has already queued it
        self.submitted, self.stopped = True, False
        try:
            await self.client.submit(prompt, prompt_id=self.prompt_id, client_id=self.client_id)
        except WorkflowError as rejected:
            # Only a prompt the server queued is taken off: on a server whose /interrupt
            # ignores the prompt id, cancelling a refused one stopped someone else's.
            queued = rejected.details.get("queued", True)
            self.stopped = await self._stop() if queued else True
            raise
        await tracker.report(0.1, "queued")
        if ws is not None:
            history = await self._follow(ws, tracker)
            if history is not None:
                return history
        return await self._poll_history()

    async def _follow(self, ws: ClientConnection, tracker: ProgressTracker) -> PromptHistory | None:
        """Follow our prompt's events to its end; None if the socket dropped."""
        while True:
            await self._check_cancelled()
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow a cancel that
                # lands as the frame arrives, and a customer's cancel was lost.
                async with asyncio.timeout(self._idle_check_s):
                    frame = await ws.recv()
            except TimeoutError:
                # Quiet socket: a lost end message must not hang us.
                history = await self._read_history()
                if history is not None:
                    return history
                await self._check_still_there()
                continue
            except ConnectionClosed:
                return None
            event = parse_ws_text(frame) if isinstance(frame, str) else None
            if event is None or event.prompt_id not in (self.prompt_id, None):
                continue
            if event.prompt_id is None and event.type != "progress":
                continue  # status broadcasts and the like
            if event.type == "executing" and event.data.get("node") is None:
                return await self._poll_history()
            await tracker.on_event(event)

    async def _check_cancelled(self) -> None:
        if (
            self._cancel_reason
            and self.prompt_id not in await self.client.queued_prompt_ids()
            and await self.client.history(self.prompt_id) is None  # left the queue unrun
        ):
            self.stopped = True
            raise JobCancelledError(f"job {self.job.job_id} {self._cancel_reason}")

    async def _poll_history(self) -> PromptHistory:
        """Read the history until our prompt is in it (normally the first read)."""
        delay = 0.02
        while True:
            history = await self._read_history()
            if history is not None:
                return history
            await self._check_cancelled()
            await self._check_still_there()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._poll_interval_s)

    async def _check_still_there(self) -> None:
        """Raise ``WorkerUnavailableError`` once ``MISSING_READS`` looks in a row found
        our prompt neither queued nor in the history (the queue is read first: a prompt
        that ends in between is in the history by the second read)."""
        if self._history_failing_since is not None:
            return  # the server does not answer: the history reads decide
        try:
            queued = self.prompt_id in await self.client.queued_prompt_ids()
        except WorkerUnavailableError:
            return
        if queued or await self._read_history() is not None:
            self._missing_reads = 0
            return
        self._missing_reads += 1
        if self._missing_reads >= MISSING_READS:
            self.stopped = True  # gone: nothing of ours runs there
            raise WorkerUnavailableError(
                f"prompt {self.prompt_id} vanished from {self.client.base_url}: neither "
                f"queued nor in the history {self._missing_reads} times in a row",
                instance=self.client.base_url,
            )

    async def _read_history(self) -> PromptHistory | None:
        """Our prompt's history entry; a failed read is None until reads have failed for
        ``HISTORY_FAILURE_WINDOW_S`` in a row, then ``WorkerUnavailableError``."""
        try:
            history = await self.client.history(self.prompt_id)
        except WorkerUnavailableError:
            now = time.monotonic()
            if self._history_failing_since is None:
                self._history_failing_since = now
            if now - self._history_failing_since >= HISTORY_FAILURE_WINDOW_S:
                raise
            return None
        self._history_failing_since = None
        return history

    async def _stop(self) -> bool:
        """Cancel our prompt on the server; True once it is neither queued nor running.

        Gives up (False) after ``stop_grace_s`` all told, requests included: ComfyUI
        only looks at interrupts between nodes, so a long node runs on regardless.
        """
        if not self.submitted:
            return True
        try:
            async with asyncio.timeout(self._stop_grace_s):
                await self.client.cancel(self.prompt_id)
                while self.prompt_id in await self.client.queued_prompt_ids():
                    await asyncio.sleep(0.05)
        except (TimeoutError, WorkerError):
            return False
        return True

    async def _finish(self, history: PromptHistory, *, wall_s: float) -> EngineResult:
        if history.outcome == "interrupted":
            if self._cancel_reason:
                raise JobCancelledError(f"job {self.job.job_id} {self._cancel_reason}")
            raise WorkerUnavailableError(
                f"prompt {self.prompt_id} was interrupted on {self.client.base_url}",
                instance=self.client.base_url,
            )
        if history.outcome == "error":
            raise WorkflowError(
                history.error_text(), prompt_id=self.prompt_id, instance=self.client.base_url
            )
        images = history.output_images(self.pack.output_node)
        if not images:
            raise WorkflowError(
                f"output node {self.pack.output_node} produced no image", prompt_id=self.prompt_id
            )
        data = await self.client.view(images[0])
        self.outputs = images
        return self._result(history, data, Path(images[0].filename).suffix or ".png", wall_s)

    def _result(
        self, history: PromptHistory, data: bytes, suffix: str, wall_s: float
    ) -> EngineResult:
        self.job.output_dir.mkdir(parents=True, exist_ok=True)
        output_path = self.job.output_dir / f"{self.job.job_id}{suffix}"
        output_path.write_bytes(data)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        report = history.report(self.pack.report_node) or {}
        execution_s = history.execution_s()
        node_s = report.get("inference_s")
        peak = report.get("gpu_peak_mb")
        inference_s = (
            execution_s
            if execution_s is not None
            else node_s
            if isinstance(node_s, float)
            else wall_s
        )
        return EngineResult(
            output_path=output_path,
            engine="comfyui",
            width=width,
            height=height,
            inference_s=float(inference_s),
            gpu_peak_mb=int(peak) if isinstance(peak, int | float) else None,
            instance=self.client.base_url,
            metadata={
                "prompt_id": self.prompt_id,
                "input_file": self.uploaded.load_image_value() if self.uploaded else None,
                "output_files": [f"{r.subfolder}/{r.filename}".lstrip("/") for r in self.outputs],
                "pack": self.pack.name,
                "params": dict(self.params),
                "execution_s": execution_s,
                "node_inference_s": node_s,
                "device": report.get("device"),
                "cached_nodes": history.cached_nodes(),
                "wall_s": round(wall_s, 6),
            },
        )

    async def cleanup(self) -> None:
        """Free what the job left on the server; best effort, never raises.

        ComfyUI has no API to delete input or output files; the only write it offers
        is ``/upload/image`` with ``overwrite``, so we overwrite ours with empty files
        (the bytes are freed; empty names remain for an operator's cron to sweep).
        """
        with contextlib.suppress(WorkerError):
            if self.submitted:
                await self.client.delete_history(self.prompt_id)
            for ref in [r for r in (self.uploaded, *self.outputs) if r is not None]:
                await self.client.upload_image(
                    b"", ref.filename, subfolder=ref.subfolder, kind=ref.type, overwrite=True
                )


async def _close_when_open(connecting: asyncio.Future[ClientConnection | None]) -> None:
    """Stop ``connecting``; close the socket if it opened all the same."""
    connecting.cancel()
    await asyncio.wait([connecting])
    if connecting.cancelled() or connecting.exception() is not None:
        return
    ws = connecting.result()
    if ws is not None:
        await ws.close()
