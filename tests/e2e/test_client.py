"""``comfygate.client`` against a real gateway over a socket (uvicorn in a thread, the
preview engine running the jobs): the seed's worked example, a retried submission
paying once, refusals as ``ApiError``; and, on httpx's ``MockTransport``, retries,
a resumed progress stream and the SSE parser."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfygate import bootstrap
from comfygate.client import ApiError, Client, Event, parse_sse
from tests.jobs_support import new_customer, png_bytes


def test_the_worked_example_through_the_client(
    served: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    """50 tokens, an 800x600 portrait: quoted 11, charged 11, 39 left, the result back."""
    container, url = served
    customer = new_customer(container, tokens=50)
    photo = tmp_path / "grandma.png"
    photo.write_bytes(png_bytes((800, 600)))
    with Client(url, customer.api_key) as client:
        offered = client.capabilities()
        assert [c["name"] for c in offered["capabilities"]] == [
            "colorize.person", "colorize.building",
        ]  # fmt: skip
        quote = client.quote(photo, capability="colorize.person")
        assert quote["tokens"] == 11
        job = client.submit(photo, capability="colorize.person", quote_id=quote["quote_id"])
        assert (job["state"], job["tokens"]) == ("queued", 11)
        kinds = [event.kind for event in client.events(job["id"])]
        assert kinds[0] == "queued" and kinds[-1] == "succeeded"
        done = client.wait(job["id"])  # the stream is over: answered at once
        assert (done["state"], done["tokens_charged"]) == ("succeeded", 11)
        saved = client.save_result(done["id"], tmp_path / "colorized.png")
        with Image.open(saved) as result:
            assert result.size == (800, 600)
        assert client.balance()["available"] == 39
        assert [j["id"] for j in client.jobs()] == [job["id"]]
        (line,) = client.usage()
        assert line["tokens_charged"] == 11


def test_a_resubmission_with_its_key_pays_once_and_refusals_raise(
    served: tuple[bootstrap.Container, str],
) -> None:
    container, url = served
    customer = new_customer(container, tokens=15)
    image = png_bytes((800, 600), seed=4)
    with Client(url, customer.api_key, language="zh-Hans") as client:
        first = client.submit(image, capability="colorize.person", idempotency_key="order-7")
        again = client.submit(image, capability="colorize.person", idempotency_key="order-7")
        assert again["id"] == first["id"]
        client.wait(first["id"])
        assert client.balance()["available"] == 4
        with pytest.raises(ApiError) as refused:
            client.submit(png_bytes((800, 600), seed=5), capability="colorize.person")
        assert (refused.value.status, refused.value.code) == (402, "insufficient_balance")
        assert "余额" in refused.value.detail or "余额" in refused.value.body.get("title", "")
        with pytest.raises(ApiError) as unknown:
            client.quote(image, capability="colorize.cat")
        assert unknown.value.code == "unknown_capability"
        order = client.order("topup-500", idempotency_key="buy-1")
        assert client.order("topup-500", idempotency_key="buy-1")["id"] == order["id"]
        assert order["state"] == "pending"
    with Client(url, "cg_key_nope.nope") as stranger, pytest.raises(ApiError) as denied:
        stranger.balance()
    assert denied.value.status == 401


def _mock(handler: Any, **kwargs: Any) -> tuple[Client, list[float]]:
    slept: list[float] = []
    client = Client(
        "http://gateway.test", "cg_key_x.y", transport=httpx.MockTransport(handler),
        sleep=slept.append, **kwargs,
    )  # fmt: skip
    return client, slept


def test_reads_and_keyed_submissions_are_retried_with_backoff() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("Idempotency-Key")))
        if len(seen) < 3:
            return httpx.Response(503, json={"code": "unavailable", "detail": "busy"})
        return httpx.Response(202, json={"id": "job_1", "state": "queued"})

    client, slept = _mock(handler)
    assert client.submit(b"png", capability="colorize.person")["id"] == "job_1"
    keys = {key for _, key in seen}
    assert len(seen) == 3 and len(keys) == 1 and None not in keys  # one key, every try
    assert slept == [0.25, 0.5]
    seen.clear()
    assert client.order("topup-500")["id"] == "job_1"
    keys = {key for _, key in seen}
    assert [path for path, _ in seen] == ["/v1/orders"] * 3 and len(keys) == 1 and None not in keys


def test_retries_give_up_and_a_cancel_is_never_retried() -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"code": "unavailable", "detail": "busy"})

    client, slept = _mock(busy, retries=2)
    with pytest.raises(ApiError) as gave_up:
        client.balance()
    assert gave_up.value.status == 503 and len(slept) == 2
    slept.clear()
    with pytest.raises(ApiError):
        client.cancel("job_1")
    assert slept == []


def test_a_dropped_progress_stream_resumes_after_its_last_event() -> None:
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        if len(asked) == 1:
            return httpx.Response(200, stream=_Broken(b"id: 1\nevent: queued\ndata: {}\n\n"))
        body = (
            b'id: 2\nevent: progress\ndata: {"value": 5}\n\nid: 3\nevent: succeeded\ndata: {}\n\n'
        )
        return httpx.Response(200, content=body)

    client, _ = _mock(handler)
    events = list(client.events("job_1"))
    assert [(e.id, e.kind) for e in events] == [
        ("1", "queued"),
        ("2", "progress"),
        ("3", "succeeded"),
    ]
    assert asked == [None, "1"]


def test_a_stream_refused_for_now_or_ended_early_is_resumed_a_few_times() -> None:
    answers = [
        httpx.Response(503, json={"code": "unavailable", "detail": "restarting"}),
        httpx.Response(200, content=b"id: 1\nevent: queued\ndata: {}\n\n"),  # no end
        httpx.Response(200, content=b"id: 2\nevent: failed\ndata: {}\n\n"),
    ]
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        return answers[len(asked) - 1]

    client, slept = _mock(handler)
    assert [e.kind for e in client.events("job_1")] == ["queued", "failed"]
    assert asked == [None, None, "1"] and len(slept) == 2

    silent, _ = _mock(lambda request: httpx.Response(200, content=b": keep-alive\n\n"))
    with pytest.raises(ApiError) as lost:
        list(silent.events("job_1"))
    assert lost.value.code == "stream_lost"


def test_a_stream_that_is_over_answers_nothing_more() -> None:
    client, _ = _mock(lambda request: httpx.Response(204))
    assert list(client.events("job_1", after="9")) == []


class _Broken(httpx.SyncByteStream):
    """A response body that sends ``head`` and then loses the connection."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection lost")


def test_sse_frames() -> None:
    text = ': keep-alive\n\nid: 4\nevent: progress\ndata: {"a":\ndata: 1}\n\nevent: x\ndata: {}\n\n'
    assert list(parse_sse(io.StringIO(text).read().split("\n"))) == [
        Event("4", "progress", {"a": 1}),
        Event("4", "x", {}),
    ]
