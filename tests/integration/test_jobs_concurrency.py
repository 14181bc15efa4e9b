"""Parallel submissions on the last tokens, on every backend.

Several containers on one database play several gateway processes; each submits from
many threads at once. Exactly the affordable jobs are accepted, the rest are refused
with ``insufficient_balance``, the balance never goes negative and the ledger
reconciles.
"""

from __future__ import annotations

import functools
import io
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfygate import bootstrap
from comfygate.adapters.images import receive_upload_sync
from comfygate.domain.errors import ConcurrencyLimitError, InsufficientBalanceError
from comfygate.services.identity_types import Principal, Role
from comfygate.services.jobs import SubmitOutcome, SubmitRequest
from tests.jobs_support import CAPABILITY, FakeEngine, build, job_rows, png_bytes, stored_files

GATEWAYS = 3
SUBMISSIONS = 12
E = TypeVar("E", bound=Exception)
PRICE = 10  # 64x48 person photo: the minimum
BALANCE = 4 * PRICE + 5  # affords exactly four


def _submit_the_photo(container: bootstrap.Container, principal: Principal) -> SubmitOutcome:
    """``principal`` submits the same photo as every other call."""
    upload = receive_upload_sync(
        io.BytesIO(png_bytes(seed=7)), dest_dir=container.jobs.upload_dir, max_bytes=10**6
    )
    return container.jobs.submission.submit(
        principal=principal, upload=upload, request=SubmitRequest(CAPABILITY)
    )


def _submit_at_once(
    containers: list[Any], principal: Principal, refusal: type[E]
) -> list[SubmitOutcome | E]:
    """SUBMISSIONS different images submitted at the same moment, spread over the
    gateways; each result is the outcome or the ``refusal`` it met."""
    barrier = threading.Barrier(SUBMISSIONS)

    def attempt(i: int) -> SubmitOutcome | E:
        container = containers[i % GATEWAYS]
        upload = receive_upload_sync(
            io.BytesIO(png_bytes(seed=i)), dest_dir=container.jobs.upload_dir, max_bytes=10**6
        )
        barrier.wait()
        try:
            return container.jobs.submission.submit(
                principal=principal, upload=upload, request=SubmitRequest(CAPABILITY)
            )
        except refusal as exc:
            return exc

    with ThreadPoolExecutor(SUBMISSIONS) as pool:
        return list(pool.map(attempt, range(SUBMISSIONS)))


@pytest.mark.timeout(240)
def test_parallel_submits_accept_exactly_the_affordable_ones(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    containers = [build(database_url, data_dir, engines=[FakeEngine()]) for _ in range(GATEWAYS)]
    first = containers[0]
    account_id = first.ledger.open_account(name="race")
    first.ledger.grant(
        account_id=account_id, amount=BALANCE, source="promotion", idempotency_key="race-grant"
    )
    principal = Principal(account_id, "user_race", Role.ADMIN, "key_race")
    try:
        results = _submit_at_once(containers, principal, InsufficientBalanceError)
        accepted = [r for r in results if isinstance(r, SubmitOutcome)]
        refused = [r for r in results if isinstance(r, InsufficientBalanceError)]
        assert len(accepted) == BALANCE // PRICE
        assert len(refused) == SUBMISSIONS - len(accepted)
        assert all(r.available < PRICE for r in refused)
        assert len({o.job.hold_id for o in accepted}) == len(accepted)
        balance = first.accounts.balance(account_id=account_id)
        assert balance.available == BALANCE - PRICE * len(accepted) >= 0
        assert balance.held == PRICE * len(accepted)
        assert first.accounts.reconcile().ok
        assert job_rows(first, account_id) == len(accepted)
        # Refused uploads left nothing; accepted ones live in their job folders.
        assert all(p.parent.parent.name == "jobs" for p in stored_files(data_dir))
        assert len(stored_files(data_dir)) == len(accepted)
    finally:
        for container in containers:
            container.close()


@pytest.mark.timeout(240)
def test_parallel_submits_of_one_image_make_one_job(database_url: str, tmp_path: Path) -> None:
    """Through several gateways: each once checked for a duplicate under a lock of its
    own process only, and the same photo was charged once per gateway."""
    data_dir = tmp_path / "data"
    containers = [build(database_url, data_dir, engines=[FakeEngine()]) for _ in range(GATEWAYS)]
    container = containers[0]
    account_id = container.ledger.open_account(name="dup")
    container.ledger.grant(
        account_id=account_id, amount=100, source="promotion", idempotency_key="dup-grant"
    )
    principal = Principal(account_id, "user_dup", Role.ADMIN, "key_dup")
    image = png_bytes(seed=99)
    barrier = threading.Barrier(SUBMISSIONS)

    def attempt(i: int) -> SubmitOutcome:
        gateway = containers[i % GATEWAYS]
        upload = receive_upload_sync(
            io.BytesIO(image), dest_dir=gateway.jobs.upload_dir, max_bytes=10**6
        )
        barrier.wait()
        return gateway.jobs.submission.submit(
            principal=principal, upload=upload, request=SubmitRequest(CAPABILITY)
        )

    try:
        with ThreadPoolExecutor(SUBMISSIONS) as pool:
            outcomes = list(pool.map(attempt, range(SUBMISSIONS)))
        (original,) = [o for o in outcomes if o.duplicate_of is None]
        assert all(o.duplicate_of == original.job.id for o in outcomes if o is not original)
        assert job_rows(container, account_id) == 1
        balance = container.accounts.balance(account_id=account_id)
        assert (balance.available, balance.held) == (100 - PRICE, PRICE)
        assert container.accounts.reconcile().ok
        assert list((data_dir / "tmp").iterdir()) == []
        assert len(stored_files(data_dir)) == 1
    finally:
        for gateway in containers:
            gateway.close()


@pytest.mark.timeout(240)
def test_parallel_vip_submits_through_several_gateways_keep_the_fair_use_limit(
    database_url: str, tmp_path: Path
) -> None:
    """Each gateway counted the active jobs and then inserted: 3 or 4 ran under a limit
    of 2. The count is now taken under the account's lock, with the insert."""
    data_dir = tmp_path / "data"
    containers = [build(database_url, data_dir, engines=[FakeEngine()]) for _ in range(GATEWAYS)]
    first = containers[0]
    account_id = first.ledger.open_account(name="vip race")
    first.plans.subscribe(account_id=account_id, plan="vip")
    entitlement = first.plans.entitlement(account_id=account_id)
    assert entitlement is not None
    principal = Principal(account_id, "user_vip", Role.ADMIN, "key_vip")
    try:
        results = _submit_at_once(containers, principal, ConcurrencyLimitError)
        accepted = [r for r in results if isinstance(r, SubmitOutcome)]
        assert len(accepted) == entitlement.max_concurrent_jobs
        assert job_rows(first, account_id) == len(accepted)
        balance = first.accounts.balance(account_id=account_id)
        assert (balance.available, balance.held) == (0, 0)  # unlimited: holds of 0
        assert first.accounts.reconcile().ok
        assert len(stored_files(data_dir)) == len(accepted)
    finally:
        for container in containers:
            container.close()


def test_a_user_key_is_never_handed_another_users_job_as_a_duplicate(
    database_url: str, tmp_path: Path
) -> None:
    """Bob once got Alice's job (which he may not see) for the same photo, and was
    blocked for the whole window. An admin key sees, and so dedups against, both."""
    container = build(database_url, tmp_path / "data", engines=[FakeEngine()])
    account_id = container.ledger.open_account(name="two users")
    container.ledger.grant(account_id=account_id, amount=100, source="promotion",
                           idempotency_key="g")  # fmt: skip
    alice = Principal(account_id, "user_alice", Role.USER, "key_alice")
    bob = Principal(account_id, "user_bob", Role.USER, "key_bob")
    admin = Principal(account_id, "user_admin", Role.ADMIN, "key_admin")

    submit = functools.partial(_submit_the_photo, container)

    try:
        first = submit(alice)
        own = submit(bob)
        assert own.duplicate_of is None and own.job.user_id == "user_bob"
        assert submit(bob).duplicate_of == own.job.id
        assert submit(admin).duplicate_of in {first.job.id, own.job.id}
        assert container.accounts.balance(account_id=account_id).held == 2 * PRICE
    finally:
        container.close()


def test_a_repeat_is_a_duplicate_behind_any_number_of_colleagues_jobs(
    database_url: str, tmp_path: Path
) -> None:
    """The store read the 20 newest jobs of the image and filtered by user after: once
    21 colleagues had sent the same photo, Alice's repeat of her queued job was held
    and charged a second time."""
    container = build(database_url, tmp_path / "data", engines=[FakeEngine()])
    account_id = container.ledger.open_account(name="a team")
    container.ledger.grant(account_id=account_id, amount=1000, source="promotion",
                           idempotency_key="g")  # fmt: skip

    submit = functools.partial(_submit_the_photo, container)

    try:
        alice = Principal(account_id, "user_alice", Role.USER, "key_alice")
        first = submit(alice)
        for n in range(21):
            colleague = Principal(account_id, f"user_{n}", Role.USER, f"key_{n}")
            assert submit(colleague).duplicate_of is None
        assert container.accounts.balance(account_id=account_id).held == 22 * PRICE

        again = submit(alice)

        assert again.duplicate_of == first.job.id
        assert container.accounts.balance(account_id=account_id).held == 22 * PRICE
        assert job_rows(container) == 22
        assert container.accounts.reconcile().ok
    finally:
        container.close()


_WHO = {
    "alice": Role.USER,
    "bob": Role.USER,
    "admin": Role.ADMIN,
}


@pytest.mark.timeout(600)
def test_a_submission_is_held_exactly_when_nothing_it_may_see_blocks_it(
    database_url: str, tmp_path: Path
) -> None:
    """The duplicate rule, as a model over random submissions and cancels: a key is
    answered with an earlier job exactly when a queued or running one of the same
    photo is its own (a user's) or its account's (an admin's); every other submission
    is a new job, held in full, and a cancel gives its hold back."""
    container = build(database_url, tmp_path / "data", engines=[FakeEngine()])
    accounts = itertools.count()

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        steps=st.lists(
            st.one_of(
                st.tuples(st.just("submit"), st.sampled_from(sorted(_WHO)), st.integers(0, 1)),
                st.tuples(st.just("cancel"), st.integers(0, 7), st.just(0)),
            ),
            min_size=1,
            max_size=8,
        )
    )
    def check(steps: list[tuple[str, Any, int]]) -> None:
        account_id = container.ledger.open_account(name=f"dedup{next(accounts)}")
        container.ledger.grant(account_id=account_id, amount=1000, source="promotion",
                               idempotency_key="g")  # fmt: skip
        made: list[tuple[str, int, Any]] = []  # (user, photo, job) of every new job
        active: set[str] = set()
        for step, who, photo in steps:
            if step == "cancel":
                if made:
                    _, _, job = made[who % len(made)]
                    if job.id in active and container.jobs.lifecycle.cancel(job):
                        active.discard(job.id)
                continue
            principal = Principal(account_id, f"user_{who}", _WHO[who], f"key_{who}")
            upload = receive_upload_sync(
                io.BytesIO(png_bytes(seed=photo)), dest_dir=container.jobs.upload_dir,
                max_bytes=10**6,
            )  # fmt: skip
            outcome = container.jobs.submission.submit(
                principal=principal, upload=upload, request=SubmitRequest(CAPABILITY)
            )
            blocking = {
                job.id for user, seen, job in made
                if job.id in active and seen == photo and who in ("admin", user)
            }  # fmt: skip
            if blocking:
                assert outcome.duplicate_of in blocking, (steps, outcome)
            else:
                assert outcome.duplicate_of is None, (steps, outcome)
                made.append((who, photo, outcome.job))
                active.add(outcome.job.id)
        balance = container.accounts.balance(account_id=account_id)
        assert balance.held == PRICE * len(active)
        assert balance.available == 1000 - balance.held

    try:
        check()
        assert container.accounts.reconcile().ok
    finally:
        container.close()
