"""The paid path over HTTP: submit, progress, settle, result, usage; duplicates,
idempotency keys, locked quotes, and a corrupt file failing at the worker."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfygate import bootstrap
from comfygate.adapters.db.sql_identity import SqlAuditStore
from tests.jobs_support import (
    CAPABILITY,
    FakeEngine,
    build,
    corrupt_png,
    finished,
    job_rows,
    new_customer,
    png_bytes,
    run,
    running_app,
    sse_events,
    submit,
)


def test_worked_example_on_the_preview_engine(container: bootstrap.Container) -> None:
    """800x600 person photo, 50 tokens: 11 charged, 39 left, a preview result."""
    customer = new_customer(container, tokens=50)

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            response = await submit(client, customer, png_bytes((800, 600)))
            assert response.status_code == 202, response.text
            accepted = response.json()
            assert accepted["state"] == "queued"
            assert (accepted["tokens"], accepted["list_tokens"]) == (11, 11)
            job = await finished(client, customer, accepted["id"])
            events = await client.get(f"/v1/jobs/{job['id']}/events", headers=customer.headers)
            result = await client.get(f"/v1/jobs/{job['id']}/result", headers=customer.headers)
            balance = await client.get("/v1/balance", headers=customer.headers)
            usage = await client.get("/v1/usage", headers=customer.headers)
            return {
                "job": job,
                "events": sse_events(events.text),
                "result": result,
                "balance": balance.json(),
                "usage": usage.json(),
            }

    out = run(scenario)
    job = out["job"]
    assert job["state"] == "succeeded" and job["tokens_charged"] == 11
    assert job["engine"] == "preview" and job["result"]["engine"] == "preview"
    assert (job["image"]["width"], job["image"]["height"]) == (800, 600)
    assert out["balance"]["available"] == 39 and out["balance"]["held"] == 0
    result = out["result"]
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert result.headers["x-comfygate-engine"] == "preview"
    assert Image.open(io.BytesIO(result.content)).size == (800, 600)
    kinds = [kind for kind, _ in out["events"]]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "succeeded"
    assert "progress" in kinds
    assert out["events"][-1][1]["tokens_charged"] == 11
    (line,) = out["usage"]["items"]
    assert line["outcome"] == "succeeded" and line["tokens_charged"] == 11
    assert line["list_tokens"] == 11 and line["megapixels"] == 0.48
    assert line["engine"] == "preview" and line["price_book_version"] == "default-1"
    assert line["queue_wait_s"] is not None and line["inference_s"] is not None
    actions = [e.action for e in SqlAuditStore(container.engine).entries(
        account_id=customer.account_id, limit=50, before=None
    ) if e.target == job["id"]]  # fmt: skip
    assert sorted(actions) == ["jobs.capture", "jobs.hold"]
    assert container.accounts.reconcile().ok


def test_a_last_event_id_that_is_not_a_number_replays_every_event(
    container: bootstrap.Container,
) -> None:
    """A ``Last-Event-ID`` this stream never sent (``²``, which ``str.isdigit`` takes
    and ``int`` refuses; 5,000 digits) once answered 500: it replays from the start."""
    customer = new_customer(container, tokens=50)

    async def scenario() -> list[list[str]]:
        async with running_app(container) as client:
            accepted = (await submit(client, customer, png_bytes((800, 600)))).json()
            await finished(client, customer, accepted["id"])
            streams = []
            for last in ("\u00b2".encode("latin-1"), b"9" * 5000, b"2"):
                response = await client.get(
                    f"/v1/jobs/{accepted['id']}/events",
                    headers={**customer.headers, "Last-Event-ID": last},
                )
                assert response.status_code == 200, response.text
                streams.append([kind for kind, _ in sse_events(response.text)])
            return streams

    superscript, long, after_two = run(scenario)
    assert superscript == long and superscript[:2] == ["queued", "started"]
    assert after_two == superscript[2:]


def test_a_last_event_id_past_a_running_jobs_events_replays_them_to_the_end(
    tmp_path: Path,
) -> None:
    """A ``Last-Event-ID`` above every number of a running job (counted in a life of
    the job lost in a crash) once skipped every later event, the end included: the
    stream sent keep-alives forever. It replays from the start and ends with the job."""
    engine = FakeEngine()
    engine.default = "hang"
    container = build(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", engines=[engine])
    customer = new_customer(container, tokens=100)

    async def scenario() -> list[httpx.Response]:
        async with running_app(container) as client:
            job_id = (await submit(client, customer, png_bytes(seed=3))).json()["id"]
            while job_id not in engine.started:
                await asyncio.sleep(0.01)
            streams = [
                asyncio.create_task(
                    client.get(
                        f"/v1/jobs/{job_id}/events",
                        headers={**customer.headers, "Last-Event-ID": last},
                    )
                )
                for last in ("100", "2")
            ]
            await asyncio.sleep(0.1)
            engine.release(job_id)
            return list(await asyncio.wait_for(asyncio.gather(*streams), timeout=30))

    try:
        ahead, behind = run(scenario)
        assert ahead.status_code == 200 and behind.status_code == 200
        kinds = [kind for kind, _ in sse_events(ahead.text)]
        assert kinds == ["queued", "started", "progress", "succeeded"]
        assert [kind for kind, _ in sse_events(behind.text)] == kinds[2:]
    finally:
        container.close()


def test_a_stream_asked_for_what_follows_the_end_answers_204_and_one_before_it_the_rest(
    container: bootstrap.Container,
) -> None:
    """An EventSource reconnects after the stream ends, with the terminal event's
    number: that once answered 200 with an empty body, and the browser reconnected
    every few seconds for ever. A 204 stops it; a number before the end still gets
    the rest, the end included."""
    customer = new_customer(container, tokens=50)

    async def scenario() -> list[httpx.Response]:
        async with running_app(container) as client:
            accepted = (await submit(client, customer, png_bytes((800, 600)))).json()
            await finished(client, customer, accepted["id"])
            url = f"/v1/jobs/{accepted['id']}/events"
            everything = await client.get(url, headers=customer.headers)
            last = _sse_ids(everything.text)[-1]
            return [everything] + [
                await client.get(url, headers={**customer.headers, "Last-Event-ID": str(seq)})
                for seq in (last, last - 1)
            ]

    everything, at_the_end, before_the_end = run(scenario)
    assert at_the_end.status_code == 204 and at_the_end.content == b""
    assert before_the_end.status_code == 200
    assert sse_events(before_the_end.text) == sse_events(everything.text)[-1:]
    assert sse_events(before_the_end.text)[0][0] == "succeeded"


def _sse_ids(text: str) -> list[int]:
    return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]


def test_a_file_corrupt_inside_fails_at_the_worker_and_is_released(
    container: bootstrap.Container,
) -> None:
    customer = new_customer(container, tokens=50)

    async def scenario() -> tuple[dict[str, Any], httpx.Response, dict[str, Any]]:
        async with running_app(container) as client:
            accepted = await submit(client, customer, corrupt_png())
            assert accepted.status_code == 202, accepted.text
            job = await finished(client, customer, accepted.json()["id"])
            again = await submit(client, customer, corrupt_png())
            usage = (await client.get("/v1/usage", headers=customer.headers)).json()
            await finished(client, customer, again.json()["id"])
            return job, again, usage

    job, again, usage = run(scenario)
    assert job["state"] == "failed" and job["tokens_charged"] == 0
    assert job["failure"]["code"] == "image_decode_failed"
    assert job["result"] is None
    balance = container.accounts.balance(account_id=customer.account_id)
    assert (balance.available, balance.held) == (50, 0)
    assert usage["items"][0]["outcome"] == "failed"
    # A failed job cost nothing, at any price: its list price is no discount given.
    totals = usage["totals"]  # (the retry below may have failed too by then)
    assert totals["jobs"] >= 1 and totals["succeeded"] == 0
    assert totals["tokens_charged"] == totals["list_tokens"] == 0
    # A failed job does not block a retry of the same bytes.
    assert again.status_code == 202 and again.json()["duplicate_of"] is None
    assert again.json()["id"] != job["id"]
    assert container.accounts.reconcile().ok


def test_same_image_again_returns_the_earlier_job_and_charges_nothing(tmp_path: Path) -> None:
    engine = FakeEngine()
    container = build(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", engines=[engine])
    customer = new_customer(container, tokens=100)
    image = png_bytes(seed=7)

    async def scenario() -> list[httpx.Response]:
        async with running_app(container) as client:
            first = await submit(client, customer, image)
            queued_dup = await submit(client, customer, image)
            await finished(client, customer, first.json()["id"])
            done_dup = await submit(client, customer, image)
            other_cap = await submit(client, customer, image, capability="colorize.building")
            other_opt = await submit(client, customer, image, upscale="2")
            same_opt = await submit(client, customer, image, upscale="1")  # the default
            for r in (other_cap, other_opt):
                await finished(client, customer, r.json()["id"])
            return [first, queued_dup, done_dup, other_cap, other_opt, same_opt]

    try:
        first, queued_dup, done_dup, other_cap, other_opt, same_opt = run(scenario)
        first_id = first.json()["id"]
        for dup in (queued_dup, done_dup, same_opt):
            assert dup.status_code == 200
            assert dup.json()["duplicate_of"] == first_id and dup.json()["id"] == first_id
        assert other_cap.status_code == 202 and other_opt.status_code == 202
        assert job_rows(container, customer.account_id) == 3
        # 64x48: person 10, building 15, person with upscale 10 + 5 = 15.
        balance = container.accounts.balance(account_id=customer.account_id)
        assert (balance.available, balance.held) == (100 - 10 - 15 - 15, 0)
    finally:
        container.close()


def test_dedup_window_expires_for_succeeded_jobs(tmp_path: Path) -> None:
    from tests.fakes import FakeClock

    clock = FakeClock()
    container = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path / "data",
        clock=clock,
        engines=[FakeEngine()],
        dedup_window_s=60,
    )
    customer = new_customer(container, tokens=100)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with running_app(container) as client:
            first = await submit(client, customer, png_bytes(seed=3))
            await finished(client, customer, first.json()["id"])
            clock.advance(seconds=61)
            return first, await submit(client, customer, png_bytes(seed=3))

    try:
        first, later = run(scenario)
        assert later.status_code == 202 and later.json()["id"] != first.json()["id"]
    finally:
        container.close()


def test_idempotency_key_replays_the_first_answer(tmp_path: Path) -> None:
    container = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", engines=[FakeEngine()]
    )
    customer = new_customer(container, tokens=100)
    key = {"Idempotency-Key": "order-42"}

    async def scenario() -> list[httpx.Response]:
        async with running_app(container) as client:
            first = await submit(client, customer, png_bytes(seed=1), headers=key)
            retry = await submit(client, customer, png_bytes(seed=1), headers=key, upscale="1.0")
            other = await submit(client, customer, png_bytes(seed=2), headers=key)
            # Once a silent replay of the first (upscale 1, 10 tokens): other options.
            upscaled = await submit(client, customer, png_bytes(seed=1), headers=key, upscale="4")
            await finished(client, customer, first.json()["id"])
            return [first, retry, other, upscaled]

    try:
        first, retry, other, upscaled = run(scenario)
        assert first.status_code == 202 and retry.status_code == 202
        assert retry.json()["id"] == first.json()["id"]  # upscale 1.0 is the default, 1
        for refused in (other, upscaled):
            assert refused.status_code == 409
            assert refused.json()["code"] == "idempotency_conflict"
        assert job_rows(container, customer.account_id) == 1
        balance = container.accounts.balance(account_id=customer.account_id)
        assert balance.available == 90
    finally:
        container.close()


def test_a_retry_after_a_failed_submit_holds_and_pays_afresh(tmp_path: Path) -> None:
    """Once, the retry replayed the failed attempt's released hold: a free job."""
    container = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", engines=[FakeEngine()]
    )
    customer = new_customer(container, tokens=100)
    key = {"Idempotency-Key": "order-43"}
    store = container.jobs.submission._store
    add, failures = store.add, [RuntimeError("the database went away")]

    def add_once_failing(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return add(*args, **kwargs)

    store.add = add_once_failing  # type: ignore[method-assign]

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            with pytest.raises(RuntimeError):  # the test client re-raises the app's error
                await submit(client, customer, png_bytes(seed=1), headers=key)
            assert container.accounts.balance(account_id=customer.account_id).held == 0
            retry = await submit(client, customer, png_bytes(seed=1), headers=key)
            assert retry.status_code == 202, retry.text
            return await finished(client, customer, retry.json()["id"])

    try:
        done = run(scenario)
        assert not failures
        assert done["state"] == "succeeded" and done["tokens_charged"] == 10
        balance = container.accounts.balance(account_id=customer.account_id)
        assert (balance.available, balance.held) == (90, 0)
        assert container.accounts.reconcile().ok
    finally:
        container.close()


def test_a_locked_quote_charges_exactly_the_quoted_amount(tmp_path: Path) -> None:
    container = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", engines=[FakeEngine()]
    )
    customer = new_customer(container, tokens=100)
    quote = container.pricing.quotes.quote(
        capability=CAPABILITY, width=64, height=48, account_id=customer.account_id
    )
    assert quote.tokens == 10
    doc = {
        "version": "pricier-1",
        "capabilities": {
            CAPABILITY: {"base": 30, "minimum": 10, "coefficients": {"megapixels": "2.0"}}
        },
    }
    container.pricing.price_books.activate(doc)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with running_app(container) as client:
            locked = await submit(client, customer, png_bytes(seed=1), quote_id=quote.quote_id)
            assert locked.status_code == 202, locked.text
            unlocked = await submit(client, customer, png_bytes(seed=2))
            return (
                await finished(client, customer, locked.json()["id"]),
                await finished(client, customer, unlocked.json()["id"]),
            )

    try:
        locked, unlocked = run(scenario)
        assert locked["tokens_charged"] == 10 and locked["quote_id"] == quote.quote_id
        assert locked["price_book_version"] == "default-1"
        assert unlocked["tokens_charged"] == 30 and unlocked["price_book_version"] == "pricier-1"
        assert container.accounts.balance(account_id=customer.account_id).available == 60
    finally:
        container.close()
