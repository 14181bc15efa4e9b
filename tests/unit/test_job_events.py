"""Per-job event streams: history replay, then live events, no gap, no repeat."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from comfygate.services.events import JobEvents
from comfygate.services.job_ports import JobEvent
from tests.fakes import FakeClock


class FakeEventStore:
    """Only the event part of ``JobStore``."""

    def __init__(self) -> None:
        self.rows: list[JobEvent] = []

    def add_events(self, events: list[JobEvent]) -> None:
        self.rows.extend(events)

    def events(self, job_id: str, *, after_seq: int) -> list[JobEvent]:
        return sorted(
            (e for e in self.rows if e.job_id == job_id and e.seq > after_seq),
            key=lambda e: e.seq,
        )

    def last_event_seq(self, job_id: str) -> int:
        return max((e.seq for e in self.rows if e.job_id == job_id), default=0)


def _events() -> tuple[JobEvents, FakeEventStore]:
    store = FakeEventStore()
    return JobEvents(store=store, clock=FakeClock()), store  # type: ignore[arg-type]


async def _collect(events: JobEvents, job_id: str, **kw: Any) -> list[tuple[int, str]]:
    out = []
    async for event in events.stream(job_id, **kw):
        if event is not None:
            out.append((event.seq, event.kind))
    return out


def test_a_late_subscriber_replays_the_history() -> None:
    events, _ = _events()
    for kind in ("queued", "started", "progress", "succeeded"):
        events.record("job_a", kind, {})
    assert asyncio.run(_collect(events, "job_a")) == [
        (1, "queued"),
        (2, "started"),
        (3, "progress"),
        (4, "succeeded"),
    ]
    assert asyncio.run(_collect(events, "job_a", after_seq=2)) == [
        (3, "progress"),
        (4, "succeeded"),
    ]


def test_live_events_follow_the_history_without_gaps_or_repeats() -> None:
    events, _ = _events()
    events.record("job_b", "queued", {})

    async def scenario() -> list[tuple[int, str]]:
        reader = asyncio.create_task(_collect(events, "job_b"))
        await asyncio.sleep(0.05)
        # From another thread, as the submit path and the dispatcher's threads do.
        writer = threading.Thread(
            target=lambda: [events.record("job_b", k, {}) for k in ("started", "failed")]
        )
        writer.start()
        await asyncio.to_thread(writer.join)
        return await reader

    assert asyncio.run(scenario()) == [(1, "queued"), (2, "started"), (3, "failed")]


def test_silence_yields_keepalives_and_other_jobs_are_not_mixed_in() -> None:
    events, _ = _events()

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        async for event in events.stream("job_c", keepalive_s=0.01):
            seen.append(event if event is None else (event.job_id, event.kind))
            if seen.count(None) == 2:
                events.record("job_other", "queued", {})
                events.record("job_c", "canceled", {})
        return seen

    seen = asyncio.run(scenario())
    assert seen[:2] == [None, None]
    assert seen[-1] == ("job_c", "canceled")
    assert ("job_other", "queued") not in seen


def test_a_stream_follows_a_job_that_another_process_runs_to_its_end() -> None:
    """Two gateways share a database: one streams while the other runs the job. Once,
    the stream heard only its own process's announcements and never ended."""
    here, store = _events()
    there = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    there.record("job_x", "queued", {})

    async def scenario() -> list[tuple[int, str]]:
        reader = asyncio.create_task(_collect(here, "job_x", poll_s=0.01))
        await asyncio.sleep(0.05)
        there.record("job_x", "started", {})
        there.progress("job_x", {"fraction": 0.5})  # stored with the next state event
        await asyncio.sleep(0.05)
        there.record("job_x", "succeeded", {})
        return await asyncio.wait_for(reader, timeout=10)

    assert asyncio.run(scenario()) == [
        (1, "queued"),
        (2, "started"),
        (3, "progress"),
        (4, "succeeded"),
    ]


def test_a_client_back_after_the_end_gets_an_ended_stream_not_one_left_open() -> None:
    """A browser's EventSource reconnects when the stream closes, with the terminal
    event's number as Last-Event-ID: that stream once stayed open (and polled) forever.
    A number past the end was counted in another life of the job: everything again."""
    events, _ = _events()
    for kind in ("queued", "started", "succeeded"):
        events.record("job_y", kind, {})

    async def scenario() -> list[list[tuple[int, str]]]:
        return [
            await asyncio.wait_for(_collect(events, "job_y", after_seq=seq, poll_s=0.01), 10)
            for seq in (3, 7)
        ]

    assert asyncio.run(scenario()) == [[], [(1, "queued"), (2, "started"), (3, "succeeded")]]


def test_a_job_has_ended_for_a_client_that_had_its_terminal_event_only() -> None:
    events, _ = _events()
    events.record("job_w", "queued", {})
    events.record("job_w", "started", {})
    assert not events.ended("job_w", after_seq=2)  # running
    events.record("job_w", "canceled", {})
    assert [events.ended("job_w", after_seq=seq) for seq in (0, 2, 3, 4)] == [
        False,
        False,
        True,
        False,  # counted in another life of the job: it replays everything
    ]


def test_a_client_that_counted_in_a_lost_life_of_the_job_replays_it_to_the_end() -> None:
    """After a crash the job's unstored progress is gone and its retry numbers on from
    the last stored event: a browser that saw #5 comes back to a job whose retry ends
    at #5. That stream once skipped every event as seen, the end included, and stayed
    open forever."""
    lost, store = _events()
    lost.record("job_r", "queued", {})
    lost.record("job_r", "started", {})
    for fraction in (0.25, 0.5, 0.75):  # 3-5, announced and never stored
        lost.progress("job_r", {"fraction": fraction})
    retry = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    retry.record("job_r", "started", {"attempt": 2})

    async def scenario() -> list[tuple[int, str]]:
        reader = asyncio.create_task(_collect(retry, "job_r", after_seq=5, poll_s=0.01))
        await asyncio.sleep(0.05)
        retry.progress("job_r", {"fraction": 0.5})
        retry.record("job_r", "succeeded", {})
        return await asyncio.wait_for(reader, timeout=10)

    assert asyncio.run(scenario()) == [
        (1, "queued"),
        (2, "started"),
        (3, "started"),
        (4, "progress"),
        (5, "succeeded"),
    ]


def test_a_stored_event_wins_over_an_unstored_one_of_the_same_number() -> None:
    """A process taken for lost still holds the job's progress #3, never stored; the
    retry elsewhere stored #3, the end. That process's streams once passed on the
    progress as #3, skipped the end as seen, and stayed open."""
    lost, store = _events()
    lost.record("job_l", "queued", {})
    lost.record("job_l", "started", {})
    lost.progress("job_l", {"fraction": 0.5})
    retry = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    retry.record("job_l", "failed", {"reason": "worker_lost"})

    streamed = asyncio.run(asyncio.wait_for(_collect(lost, "job_l", poll_s=0.01), timeout=10))
    assert streamed == [(1, "queued"), (2, "started"), (3, "failed")]


def test_all_of_a_jobs_streams_hear_what_one_of_them_reads_and_a_failed_read_is_no_news() -> None:
    here, store = _events()
    there = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    there.record("job_z", "queued", {})
    reads = store.events
    failing = {"on": False}

    def events_or_failure(job_id: str, *, after_seq: int) -> list[JobEvent]:
        if failing["on"]:
            raise ConnectionError("database went away")
        return reads(job_id, after_seq=after_seq)

    store.events = events_or_failure  # type: ignore[method-assign]

    async def scenario() -> list[list[tuple[int, str]]]:
        early = asyncio.create_task(_collect(here, "job_z", poll_s=0.01))
        await asyncio.sleep(0.05)
        there.record("job_z", "started", {})
        late = asyncio.create_task(_collect(here, "job_z", poll_s=0.01))
        await asyncio.sleep(0.05)
        failing["on"] = True
        await asyncio.sleep(0.05)
        failing["on"] = False
        there.record("job_z", "succeeded", {})
        return list(await asyncio.wait_for(asyncio.gather(early, late), timeout=10))

    every = [(1, "queued"), (2, "started"), (3, "succeeded")]
    assert asyncio.run(scenario()) == [every, every]


def test_a_jobs_streams_share_one_read_of_the_stored_history() -> None:
    """Three streams of a job another process runs: one of them reads, the others
    hear what it read (the reads are throttled to one per ``poll_s``, an hour here)."""
    here, store = _events()
    there = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    there.record("job_s", "queued", {})
    reads = []
    events_of = store.events

    def counted(job_id: str, *, after_seq: int) -> list[JobEvent]:
        reads.append(after_seq)
        return events_of(job_id, after_seq=after_seq)

    store.events = counted  # type: ignore[method-assign]

    async def scenario() -> list[list[tuple[int, str]]]:
        streams = [
            asyncio.create_task(_collect(here, "job_s", poll_s=3600, keepalive_s=0.01))
            for _ in range(3)
        ]
        while len(reads) < 3:  # each has read the history once
            await asyncio.sleep(0.01)
        there.record("job_s", "started", {})
        there.record("job_s", "succeeded", {})
        return list(await asyncio.wait_for(asyncio.gather(*streams), timeout=10))

    every = [(1, "queued"), (2, "started"), (3, "succeeded")]
    assert asyncio.run(scenario()) == [every, every, every]
    assert reads == [0, 0, 0, 1]  # three histories, then one read for all three


def test_numbering_continues_after_a_restart_and_first_event_is_one() -> None:
    events, store = _events()
    first = events.first_event("job_d", "queued", {"tokens": 3})
    store.add_events([first])
    events.record("job_d", "started", {})
    restarted = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    assert first.seq == 1
    assert restarted.record("job_d", "progress", {}).seq == 3


def test_progress_is_announced_at_once_and_stored_with_the_next_state_event() -> None:
    events, store = _events()
    events.record("job_e", "started", {})
    events.progress("job_e", {"fraction": 0.5})
    assert [e.kind for e in store.rows] == ["started"]
    assert [(e.seq, e.kind) for e in events.history("job_e")] == [(1, "started"), (2, "progress")]
    events.record("job_e", "succeeded", {})
    assert [(e.seq, e.kind) for e in store.rows] == [
        (1, "started"),
        (2, "progress"),
        (3, "succeeded"),
    ]
    assert asyncio.run(_collect(events, "job_e", after_seq=1)) == [
        (2, "progress"),
        (3, "succeeded"),
    ]
