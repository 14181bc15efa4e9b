"""An async client for one ComfyUI server: HTTP with httpx, progress over websockets.

Every transport failure (refused, reset, timed out, proxy 502/503/504) becomes
``WorkerUnavailableError`` so the pool can take the instance out and retry elsewhere;
workflow problems become ``WorkflowError``; an upload refused for the file itself
(400/413/415) becomes ``UploadRefusedError``. The optional headers (e.g. an
``Authorization`` for a server behind a proxy) go on HTTP and websocket requests alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from comfygate.adapters.comfyui.protocol import (
    FileRef,
    PromptHistory,
    parse_history,
    submit_failure,
)
from comfygate.domain.errors import UploadRefusedError, WorkerUnavailableError

WS_MAX_FRAME_BYTES = 64 * 1024 * 1024  # preview frames can be large; we skip them anyway
UPLOAD_REFUSED_STATUSES = frozenset({400, 413, 415})
"""Answers to ``/upload/image`` that refuse the file itself (too large, unreadable), not
the instance's fault: the job fails, the instance stays in."""


class ComfyUIClient:
    """HTTP + websocket access to one ComfyUI base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self._connect_timeout_s = connect_timeout_s
        timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise WorkerUnavailableError(
                f"{self.base_url} unreachable: {type(exc).__name__}: {exc}", instance=self.base_url
            ) from exc
        except RuntimeError as exc:
            if not self._http.is_closed:
                raise
            # httpx says so with a RuntimeError: shutdown closed us under a running job.
            raise WorkerUnavailableError(
                f"{self.base_url}: the client is closed (shutting down)", instance=self.base_url
            ) from exc
        if response.status_code in (401, 403, 502, 503, 504):
            raise WorkerUnavailableError(
                f"{self.base_url} answered HTTP {response.status_code} to {method} {path}",
                instance=self.base_url,
            )
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._body(await self._request(method, path, **kwargs), method, path)

    def _body(self, response: httpx.Response, method: str, path: str) -> Any:
        if response.status_code >= 400:
            raise WorkerUnavailableError(
                f"{self.base_url} answered HTTP {response.status_code} to {method} {path}",
                instance=self.base_url,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise WorkerUnavailableError(
                f"{self.base_url} sent non-JSON to {method} {path}", instance=self.base_url
            ) from exc

    # --- server state ------------------------------------------------------------

    async def system_stats(self) -> Mapping[str, Any]:
        body = await self._json("GET", "/system_stats")
        return body if isinstance(body, Mapping) else {}

    async def object_info(self, node_class: str) -> Mapping[str, Any] | None:
        """The node's description, or None if the class is not installed."""
        body = await self._json("GET", f"/object_info/{node_class}")
        info = body.get(node_class) if isinstance(body, Mapping) else None
        return info if isinstance(info, Mapping) else None

    async def queue_remaining(self) -> int:
        body = await self._json("GET", "/prompt")
        try:
            return int(body["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError):
            return 0

    async def queued_prompt_ids(self) -> set[str]:
        """Prompt ids running or pending on the server."""
        body = await self._json("GET", "/queue")
        ids: set[str] = set()
        for key in ("queue_running", "queue_pending"):
            for item in body.get(key, []) if isinstance(body, Mapping) else []:
                if isinstance(item, list) and len(item) > 1:
                    ids.add(str(item[1]))
        return ids

    # --- one job -------------------------------------------------------------------

    async def upload_image(
        self,
        data: bytes,
        filename: str,
        *,
        subfolder: str = "",
        kind: str = "input",
        overwrite: bool = False,
    ) -> FileRef:
        """Upload; the answer's name wins (ComfyUI renames to ``x (1).png`` on clashes)."""
        fields = {
            "type": kind,
            "subfolder": subfolder,
            "overwrite": "true" if overwrite else "false",
        }
        files = {"image": (filename, data, "application/octet-stream")}
        response = await self._request("POST", "/upload/image", data=fields, files=files)
        if response.status_code in UPLOAD_REFUSED_STATUSES:
            raise UploadRefusedError(
                f"{self.base_url} refused the upload of {filename} ({len(data)} bytes) with "
                f"HTTP {response.status_code}: {response.text[:200]}",
                instance=self.base_url,
                status=response.status_code,
            )
        body = self._body(response, "POST", "/upload/image")
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            raise WorkerUnavailableError(f"{self.base_url}: unexpected upload answer {body!r}")
        return FileRef(
            body["name"], str(body.get("subfolder", subfolder)), str(body.get("type", kind))
        )

    async def submit(self, prompt: Mapping[str, Any], *, prompt_id: str, client_id: str) -> None:
        """Queue ``prompt`` under our ``prompt_id``; raise ``WorkflowError`` if rejected."""
        payload = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        response = await self._request("POST", "/prompt", json=payload)
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = {}
            if not (isinstance(body, Mapping) and body.get("node_errors")):
                return
        raise submit_failure(response.status_code, response.text)

    async def history(self, prompt_id: str) -> PromptHistory | None:
        return parse_history(prompt_id, await self._json("GET", f"/history/{prompt_id}"))

    async def view(self, ref: FileRef) -> bytes:
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        response = await self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise WorkerUnavailableError(
                f"{self.base_url}: /view {ref.filename} gave HTTP {response.status_code}"
            )
        return response.content

    async def delete_history(self, prompt_id: str) -> None:
        await self._request("POST", "/history", json={"delete": [prompt_id]})

    async def cancel(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` whether queued or running.

        Newer servers have ``/api/jobs/{id}/cancel``; otherwise take it off the queue and
        interrupt it (``/interrupt`` with a prompt_id only acts if that prompt runs).
        """
        response = await self._request("POST", f"/api/jobs/{prompt_id}/cancel")
        if response.status_code < 400:
            return
        await self._request("POST", "/queue", json={"delete": [prompt_id]})
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def websocket(self, client_id: str) -> connect:
        """``async with client.websocket(cid) as ws`` follows prompts submitted with ``cid``."""
        scheme, rest = self.base_url.split("://", 1)
        url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"
        return connect(
            url,
            additional_headers=self.headers or None,
            max_size=WS_MAX_FRAME_BYTES,
            # Unbounded: with a bounded queue, frames we stopped reading (after the end)
            # pause the reader, the server's close frame is never seen and close() hangs.
            max_queue=None,
            close_timeout=2.0,
            open_timeout=self._connect_timeout_s,
            ping_interval=None,  # ComfyUI may not answer pings while busy; history is our check
        )


__all__ = ["ClientConnection", "ComfyUIClient"]
