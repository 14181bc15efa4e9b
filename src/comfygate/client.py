"""A Python client for comfygate's HTTP API: price a photo, submit it, follow it,
fetch the result, and read the account.

    from comfygate.client import Client

    with Client("http://127.0.0.1:8000", api_key) as gateway:
        quote = gateway.quote("photo.jpg", capability="colorize.person")
        job = gateway.submit("photo.jpg", capability="colorize.person",
                             quote_id=quote["quote_id"])
        done = gateway.wait(job["id"])
        gateway.save_result(done["id"], "colorized.png")

Answers are the API's JSON documents, as dicts (the OpenAPI schema at ``/docs`` has
their fields). A refusal raises ``ApiError`` with the status, the stable ``code`` and
the detail, in the language asked for.

Money is safe to retry: a submission always carries an ``Idempotency-Key`` (made here
unless given), so a retry after a lost answer gets the first job back instead of
paying twice. The client itself retries reads and keyed submissions a few times, with
backoff, when the connection fails or the gateway answers 502, 503 or 504.

The module needs httpx and nothing else of comfygate, so it can be copied into a
customer's project alone.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ApiError", "Client", "Event"]

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
RETRY_STATUSES = frozenset({502, 503, 504})


class ApiError(Exception):
    """The gateway refused a request (problem+json): ``status``, ``code``, ``detail``."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body


@dataclass(frozen=True, slots=True)
class Event:
    """One progress event of a job: ``kind`` is ``queued``, ``started``, ``progress``,
    ``succeeded``, ``failed`` or ``canceled``; ``id`` resumes the stream after it."""

    id: str
    kind: str
    data: dict[str, Any]


Image = str | Path | bytes


class Client:
    """One gateway, one API key. ``transport`` is httpx's (a test's ``MockTransport``
    or ``ASGITransport``); ``language`` picks English or ``zh-Hans`` error details."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        language: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        if language:
            headers["Accept-Language"] = language
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._retries = retries
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- pricing and jobs ---------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        """What the account can ask for: each capability's terms and options, and the
        price book they come from."""
        return self._json("GET", "/v1/capabilities", retry=True)

    def quote(
        self, image: Image, *, capability: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Price ``image`` (read from its header by the gateway) and lock the price."""
        files = {"image": _file(image)}
        data = _form(capability, options)
        return self._json("POST", "/v1/quotes", files=files, data=data, retry=True)

    def submit(
        self,
        image: Image,
        *,
        capability: str,
        options: dict[str, Any] | None = None,
        quote_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Hold the price and queue the job; the job (``duplicate_of`` set when the
        same photo is already being done). A quote's id charges exactly its price.
        To retry a submission that finally failed, pass the same ``idempotency_key``
        again (give your own: the one made here is not kept)."""
        data = _form(capability, options)
        if quote_id:
            data["quote_id"] = quote_id
        key = idempotency_key or f"client-{uuid.uuid4()}"
        return self._json(
            "POST", "/v1/jobs", files={"image": _file(image)}, data=data,
            headers={"Idempotency-Key": key}, retry=True,
        )  # fmt: skip

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}", retry=True)

    def jobs(self, *, state: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every job the key may see, newest first, page after page."""
        return self._pages("/v1/jobs", {"state": state, "limit": page_size})

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; its hold is released. (Not retried: a second
        cancel of a canceled job is refused, which would hide that the first worked.)"""
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def events(self, job_id: str, *, after: str | None = None) -> Iterator[Event]:
        """The job's progress events, from the first (or after ``after``) to its end.
        A stream that drops, goes silent past twice the gateway's keep-alive, ends
        early, or meets a 502, 503 or 504 (a proxy, a restart) is resumed where it
        broke, a few times in a row at most."""
        last = after
        failures = 0
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self._http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=_STREAM
                ) as response:
                    if response.status_code == 204:  # the stream is over
                        return
                    if response.status_code not in RETRY_STATUSES:
                        _raise_for(response, read=True)
                        for event in parse_sse(response.iter_lines()):
                            last, failures = event.id, 0
                            yield event
                            if event.kind in TERMINAL:
                                return
            except httpx.TransportError:
                pass
            failures += 1  # dropped, refused for now, or ended before the end
            if failures > self._retries:
                raise ApiError(0, "stream_lost", f"lost the progress of job {job_id}", {})
            self._sleep(_backoff(failures))

    def wait(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Follow the job to its end; the job as it ended. ``TimeoutError`` once
        ``timeout_s`` has passed, checked as each event arrives (the gateway itself
        ends a job at its own timeout)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for _ in self.events(job_id):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout_s} s")
        return self.job(job_id)

    def result(self, job_id: str) -> bytes:
        """The result image's bytes (PNG)."""
        response = self._send("GET", f"/v1/jobs/{job_id}/result", retry=True)
        return response.content

    def save_result(self, job_id: str, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.result(job_id))
        return target

    # ---- the account --------------------------------------------------------------

    def balance(self) -> dict[str, Any]:
        return self._json("GET", "/v1/balance", retry=True)

    def order(
        self, plan: str, *, provider: str = "manual", idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Order ``plan`` (pending until paid); retried on a lost answer with one
        ``Idempotency-Key``, so one order is placed (give your own key to retry it
        later)."""
        key = idempotency_key or f"client-{uuid.uuid4()}"
        return self._json(
            "POST", "/v1/orders", json={"plan": plan, "provider": provider},
            headers={"Idempotency-Key": key}, retry=True,
        )  # fmt: skip

    def plans(self) -> list[dict[str, Any]]:
        plans: list[dict[str, Any]] = self._send("GET", "/v1/plans", retry=True).json()
        return plans

    def usage(self, *, page_size: int = 1000, **filters: str) -> Iterator[dict[str, Any]]:
        """Usage lines (one per settled job), newest first; ``since``, ``until``,
        ``account_id`` filter them."""
        return self._pages("/v1/usage", {**filters, "limit": page_size})

    def usage_report(self, **params: str) -> dict[str, Any]:
        """The usage report (admins and operators): ``since``, ``until``, ``bucket``,
        ``tz``, ``account_id``."""
        return self._json("GET", "/v1/reports/usage", params=params, retry=True)

    # ---- plumbing -----------------------------------------------------------------

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self._json("GET", path, params=query, retry=True)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self._send(method, path, **kwargs).json()
        return body

    def _send(
        self, method: str, path: str, *, retry: bool = False, **kwargs: Any
    ) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if not retry or attempt > self._retries:
                    raise
            else:
                if (
                    not (retry and response.status_code in RETRY_STATUSES)
                    or attempt > self._retries
                ):
                    _raise_for(response)
                    return response
            self._sleep(_backoff(attempt))


_STREAM = httpx.Timeout(30.0, read=60.0)
"""A job may run for minutes between events, but the gateway sends a keep-alive every
15 s: a minute of silence is a connection gone."""


def _backoff(attempt: int) -> float:
    return min(0.25 * 2.0 ** (attempt - 1), 4.0)


def _raise_for(response: httpx.Response, *, read: bool = False) -> None:
    if response.is_success:
        return
    if read:
        response.read()
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code") or "error"
    raise ApiError(response.status_code, code, body.get("detail") or response.reason_phrase, body)


def _file(image: Image) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


def _form(capability: str, options: dict[str, Any] | None) -> dict[str, str]:
    form = {"capability": capability}
    if options:
        form["options"] = json.dumps(options)
    return form


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Server-Sent Events from a stream's lines: ``id``, ``event`` and ``data`` fields
    (several ``data`` lines joined), a blank line ending each; comments skipped."""
    event_id, kind, data = "", "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield Event(event_id, kind, json.loads("\n".join(data)))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)
