"""The job state machine, the duplicate rule, hold lifetimes and the fair queue."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfygate.domain.errors import JobStateError
from comfygate.domain.jobs import (
    MAX_ATTEMPTS,
    TIMEOUT_GRACE_S,
    DedupCandidate,
    FairQueue,
    JobState,
    QueueEntry,
    Tier,
    blocks_resubmission,
    can_transition,
    check_transition,
    hold_ttl_s,
    options_key,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
Q, R, S, F, C = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELED,
)


@pytest.mark.parametrize(
    ("current", "target"),
    [(Q, R), (Q, C), (Q, F), (R, S), (R, F), (R, C), (R, Q)],
)
def test_allowed_transitions(current: JobState, target: JobState) -> None:
    assert can_transition(current, target)
    check_transition("job_x", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(Q, S), (Q, Q), (R, R), (S, F), (S, C), (S, Q), (F, Q), (F, S), (C, R), (C, S)],
)
def test_refused_transitions(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)
    with pytest.raises(JobStateError) as info:
        check_transition("job_x", current, target)
    assert info.value.code == "invalid_job_state"
    assert info.value.details["state"] == current.value


def test_terminal_states_never_change() -> None:
    for state in (S, F, C):
        assert state.is_terminal and not state.is_active
        assert all(not can_transition(state, t) for t in JobState)
    assert Q.is_active and R.is_active


def _earlier(state: JobState, age_s: float, *, result: bool = True) -> DedupCandidate:
    return DedupCandidate(state, NOW - timedelta(seconds=age_s), result)


def test_in_flight_jobs_always_block_a_resubmission() -> None:
    for state in (Q, R):
        assert blocks_resubmission(_earlier(state, 10**7), now=NOW, window_s=60)


def test_a_succeeded_job_blocks_within_the_window_only() -> None:
    assert blocks_resubmission(_earlier(S, 59), now=NOW, window_s=60)
    assert blocks_resubmission(_earlier(S, 60), now=NOW, window_s=60)
    assert not blocks_resubmission(_earlier(S, 61), now=NOW, window_s=60)


def test_a_succeeded_job_whose_result_is_gone_does_not_block() -> None:
    assert not blocks_resubmission(_earlier(S, 1, result=False), now=NOW, window_s=60)


def test_failed_and_canceled_jobs_never_block_a_retry() -> None:
    for state in (F, C):
        assert not blocks_resubmission(_earlier(state, 0), now=NOW, window_s=86_400)


def test_options_key_ignores_order_but_not_values() -> None:
    assert options_key({"a": 1, "upscale": 2}) == options_key({"upscale": 2, "a": 1})
    assert options_key({"upscale": 2}) != options_key({"upscale": 1})


def test_hold_outlives_every_attempt_and_the_queue_allowance() -> None:
    ttl = hold_ttl_s(job_timeout_s=300, queue_allowance_s=3600)
    assert ttl > 300 * MAX_ATTEMPTS
    # Each attempt may run its guard's grace past the timeout: a hold that expired in
    # it was released under a running job, which then succeeded for nothing.
    assert ttl >= (300 + TIMEOUT_GRACE_S) * MAX_ATTEMPTS + 3600


def _drain(queue: FairQueue) -> list[str]:
    out = []
    while (entry := queue.pop()) is not None:
        out.append(entry.job_id)
    return out


def test_vip_jobs_run_before_standard_ones() -> None:
    queue = FairQueue()
    queue.push(QueueEntry("s1", "acct_a", Tier.STANDARD))
    queue.push(QueueEntry("s2", "acct_b", Tier.STANDARD))
    queue.push(QueueEntry("v1", "acct_c", Tier.VIP))
    assert _drain(queue) == ["v1", "s1", "s2"]


def test_accounts_take_turns_within_a_tier() -> None:
    queue = FairQueue()
    for i in range(3):
        queue.push(QueueEntry(f"a{i}", "acct_a", Tier.STANDARD))
    queue.push(QueueEntry("b0", "acct_b", Tier.STANDARD))
    queue.push(QueueEntry("c0", "acct_c", Tier.STANDARD))
    assert _drain(queue) == ["a0", "b0", "c0", "a1", "a2"]


def test_remove_and_duplicates() -> None:
    queue = FairQueue()
    queue.push(QueueEntry("a0", "acct_a", Tier.STANDARD))
    queue.push(QueueEntry("a0", "acct_a", Tier.STANDARD))
    queue.push(QueueEntry("a1", "acct_a", Tier.STANDARD))
    assert len(queue) == 2 and "a0" in queue
    assert queue.remove("a0") and not queue.remove("a0")
    assert _drain(queue) == ["a1"]
    assert queue.pop() is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(list(Tier))),
        max_size=40,
    )
)
def test_fair_queue_properties(pushes: list[tuple[str, Tier]]) -> None:
    """Every job comes out once; tiers in order; per account FIFO; and no account
    gets two turns in a tier while another account of that tier is waiting."""
    queue = FairQueue()
    entries = [QueueEntry(f"job{i}", acct, tier) for i, (acct, tier) in enumerate(pushes)]
    for entry in entries:
        queue.push(entry)
    popped: list[QueueEntry] = []
    while (entry := queue.pop()) is not None:
        popped.append(entry)
    assert sorted(e.job_id for e in popped) == sorted(e.job_id for e in entries)
    assert [e.tier for e in popped] == sorted(e.tier for e in popped)
    for account in {e.account_id for e in entries}:
        for tier in Tier:
            mine = [e.job_id for e in popped if (e.account_id, e.tier) == (account, tier)]
            pushed = [e.job_id for e in entries if (e.account_id, e.tier) == (account, tier)]
            assert mine == pushed
    for tier in Tier:
        order = [e.account_id for e in popped if e.tier == tier]
        remaining = {a: order.count(a) for a in order}
        for previous, current in itertools.pairwise(order):
            remaining[previous] -= 1
            if current == previous:  # a second turn in a row: nobody else may be waiting
                assert all(n == 0 for a, n in remaining.items() if a != current)
