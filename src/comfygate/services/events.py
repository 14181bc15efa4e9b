"""Per-job event streams: in-process publish/subscribe over a persisted history.

State events (``queued``, ``started``, ``succeeded`` ...) are written to the job store
before subscribers hear of them, usually in the same transaction as the state change
they report. Progress events are announced at once but kept in memory and written
with the job's next state event: progress is frequent and worthless after a crash,
so it costs no database write of its own.

A subscriber that arrives late (or reconnects with ``Last-Event-ID``) replays the
history (stored events plus progress not yet stored) and then follows live events,
with no gap and no repeat: it subscribes first, replays, then skips live events it
has already seen. A client's ``Last-Event-ID`` may come from an earlier life of the
job: its unstored progress dies with its process and the retry numbers on from the
last stored event, so a number above any the job has replays from the start, and a
terminal event ends a stream whatever its number.

Everything here may be called from any thread (the submit path runs in a thread
pool); subscribers live on the event loop and are woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from comfygate.services.clock import Clock
from comfygate.services.job_ports import JobEvent, JobStore

KEEPALIVE_S = 15.0
"""Silence after which a stream yields ``None`` so the transport can send a ping."""
POLL_S = 2.0
"""How often a job's quiet streams read its stored history: another process sharing
the database (a gateway, a worker) may be running the job, and only its stored events
(state changes, with the progress before them) reach this one. One of the job's
streams reads, for all of them in this process."""

log = logging.getLogger(__name__)


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, last: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.last = last  # the number of the last event it has passed on


class JobEvents:
    """Numbers, records and streams job events."""

    def __init__(self, *, store: JobStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._next_seq: dict[str, int] = {}
        self._unstored: dict[str, list[JobEvent]] = {}
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._polled_at: dict[str, float] = {}  # per job with subscribers (monotonic)

    def _next(self, job_id: str, kind: str, data: Mapping[str, Any], stored: int) -> JobEvent:
        """Under ``self._lock``: the job's next numbered event, after both the last one
        stored (``stored``: another gateway may have written events for the job, a
        cancel or a start) and the last this process numbered (its progress is stored
        only with the next state event)."""
        seq = max(self._next_seq.get(job_id, 0), stored + 1)
        self._next_seq[job_id] = seq + 1
        return JobEvent(job_id, seq, kind, dict(data), self._clock.now())

    def first_event(self, job_id: str, kind: str, data: Mapping[str, Any]) -> JobEvent:
        """Event number 1 of a new job (stored by the caller together with the job)."""
        with self._lock:
            self._next_seq[job_id] = 2
        return JobEvent(job_id, 1, kind, dict(data), self._clock.now())

    def batch(self, job_id: str, kind: str, data: Mapping[str, Any]) -> list[JobEvent]:
        """The job's unstored progress followed by a new ``kind`` event: for callers
        that store them in their own transaction and then ``announce`` the last."""
        stored = self._store.last_event_seq(job_id)  # (read outside the lock)
        with self._lock:
            pending = self._unstored.pop(job_id, [])
            return [*pending, self._next(job_id, kind, data, stored)]

    def progress(self, job_id: str, data: Mapping[str, Any]) -> JobEvent:
        """Announce a progress event now; it is stored with the next state event."""
        with self._lock:
            # Only the runner writes progress, after its own start event, so its count
            # is current: the store is read only for a job it has not numbered yet.
            known = self._next_seq.get(job_id)
        stored = self._store.last_event_seq(job_id) if known is None else 0
        with self._lock:
            event = self._next(job_id, "progress", data, stored)
            self._unstored.setdefault(job_id, []).append(event)
        self.announce(event)
        return event

    def forget(self, job_id: str) -> None:
        """Drop what this process keeps of a job it no longer runs (another gateway
        does): its count and its progress not stored, numbered after its own events."""
        with self._lock:
            self._next_seq.pop(job_id, None)
            self._unstored.pop(job_id, None)

    def announce(self, event: JobEvent) -> None:
        """Tell live subscribers about an event."""
        with self._lock:
            subscribers = list(self._subscribers.get(event.job_id, ()))
            if event.is_terminal:
                self._next_seq.pop(event.job_id, None)
                self._unstored.pop(event.job_id, None)
        for sub in subscribers:
            sub.loop.call_soon_threadsafe(sub.queue.put_nowait, event)

    def record(self, job_id: str, kind: str, data: Mapping[str, Any]) -> JobEvent:
        """Store the next event of ``job_id`` (and its unstored progress), then
        announce it. Blocking (one insert)."""
        events = self.batch(job_id, kind, data)
        self._store.add_events(events)
        self.announce(events[-1])
        return events[-1]

    def history(self, job_id: str, *, after_seq: int = 0) -> list[JobEvent]:
        """Events of ``job_id`` after ``after_seq``, in order. A stored event wins
        over an unstored one of the same number (progress this process announced for
        a life of the job that another process has since numbered over)."""
        with self._lock:  # read before the store: a batch stored meanwhile is in both
            unstored = list(self._unstored.get(job_id, ()))
        events = {e.seq: e for e in self._store.events(job_id, after_seq=after_seq)}
        for event in unstored:
            if event.seq > after_seq:
                events.setdefault(event.seq, event)
        return [events[seq] for seq in sorted(events)]

    async def stream(
        self,
        job_id: str,
        *,
        after_seq: int = 0,
        keepalive_s: float = KEEPALIVE_S,
        poll_s: float = POLL_S,
    ) -> AsyncIterator[JobEvent | None]:
        """The job's events after ``after_seq``: history, then live (announced in this
        process, or stored by another and read every ``poll_s`` of quiet), until a
        terminal event, whatever its number. Yields ``None`` after ``keepalive_s`` of
        silence. An ``after_seq`` above every number the job has replays from the
        start; a stream asked for what follows the terminal event (a client
        reconnecting after the end) ends at once."""
        loop = asyncio.get_running_loop()
        sub = _Subscriber(loop, after_seq)
        with self._lock:
            self._subscribers.setdefault(job_id, set()).add(sub)
        try:
            start = await asyncio.to_thread(self._start, job_id, after_seq)
            if start is None:
                return
            sub.last, news = start
            ping_at = loop.time() + keepalive_s
            while True:
                for event in news:
                    # The end whatever its number: a process taken for lost may
                    # have numbered past the life of the job that ended.
                    if event.seq <= sub.last and not event.is_terminal:
                        continue  # replayed already, or heard twice
                    sub.last, ping_at = event.seq, loop.time() + keepalive_s
                    yield event
                    if event.is_terminal:
                        return
                wait = max(0.0, min(poll_s, ping_at - loop.time()))
                try:  # (asyncio.timeout: 3.11's wait_for can swallow a cancel)
                    async with asyncio.timeout(wait):
                        news = [await sub.queue.get()]
                except TimeoutError:
                    news = await self._poll(job_id, poll_s)
                    if not news and loop.time() >= ping_at:
                        ping_at = loop.time() + keepalive_s
                        yield None
        finally:
            with self._lock:
                subs = self._subscribers.get(job_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subscribers[job_id]
                        self._polled_at.pop(job_id, None)

    async def _poll(self, job_id: str, every_s: float) -> list[JobEvent]:
        """The job's stored events after the last one each of its streams here has,
        read at most once per ``every_s``; the other streams hear them as live events.
        A failed read is no news (the next one may work)."""
        now = time.monotonic()
        with self._lock:
            subs = list(self._subscribers.get(job_id, ()))
            if not subs or now - self._polled_at.get(job_id, -every_s) < every_s:
                return []
            self._polled_at[job_id] = now
        after = min(sub.last for sub in subs)
        try:
            events = await asyncio.to_thread(self.history, job_id, after_seq=after)
        except Exception:
            log.warning("reading job %s events failed", job_id, exc_info=True)
            return []
        for sub in subs:
            for event in events:
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, event)
        return events

    def _start(self, job_id: str, after_seq: int) -> tuple[int, list[JobEvent]] | None:
        """Where a stream after ``after_seq`` starts and the history it replays first:
        ``(0, everything)`` when ``after_seq`` is above every number the job has (the
        client counted in an earlier life of the job), None when the client has had
        the terminal event."""
        news = self.history(job_id, after_seq=after_seq)
        if news or not after_seq:
            return after_seq, news
        with self._lock:
            numbered = self._next_seq.get(job_id, 1) - 1
        if after_seq > max(numbered, self._store.last_event_seq(job_id)):
            return 0, self.history(job_id)
        if self.ended(job_id, after_seq=after_seq):
            return None  # the stream's caller checked first: it ended meanwhile
        return after_seq, []

    def ended(self, job_id: str, *, after_seq: int) -> bool:
        """Whether a client that has had event ``after_seq`` has had the job's end:
        the job's last stored event is terminal and numbered ``after_seq``. Its stream
        would be empty; a transport can say so before opening one. Blocking."""
        last = self._store.last_event_seq(job_id)
        if last != after_seq or last == 0:
            return False
        final = self._store.events(job_id, after_seq=last - 1)
        return bool(final) and final[-1].is_terminal
