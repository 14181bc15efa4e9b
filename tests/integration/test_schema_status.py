"""How a database's recorded revisions compare with the code's (``migrate.compare``):
pending revisions per branch, dependencies counted as applied, and revisions only a
newer comfygate knows put in their branch by name."""

from __future__ import annotations

import re

from comfygate.adapters.db import migrate

HEADS = tuple(sorted(migrate.scripts().get_heads()))
"""The code's newest revision of each branch, in the branches' order."""


def test_every_revision_is_named_after_its_branch() -> None:
    """``compare`` places a revision it does not know by its name: hold the code to it."""
    for revision in migrate.scripts().walk_revisions():
        (label,) = revision.branch_labels
        assert re.fullmatch(rf"{label}_\d{{4}}", revision.revision), revision.revision


def test_a_database_at_the_heads_is_current() -> None:
    found = migrate.compare(HEADS)
    assert (found.state, found.pending, found.unknown, found.heads) == ("current", (), (), HEADS)


def test_an_empty_database_has_every_revision_pending_in_order() -> None:
    found = migrate.compare(())
    assert found.state == "behind"
    assert found.revisions() == dict.fromkeys(["identity", "jobs", "ledger", "pricing"])
    assert found.pending[:3] == ("identity_0001", "identity_0002", "identity_0003")
    assert found.pending[-2:] == ("pricing_0001", "pricing_0002")
    assert len(found.pending) == len(list(migrate.scripts().walk_revisions()))


def test_a_dependency_counts_as_applied_though_alembic_records_only_its_dependent() -> None:
    """identity_0001 depends on ledger_0001; Alembic records identity_0001 alone."""
    found = migrate.compare(("identity_0001",))
    assert found.revisions()["ledger"] == "ledger_0001"
    assert "ledger_0001" not in found.pending and "ledger_0002" in found.pending


def test_unknown_revisions_make_the_schema_ahead_in_their_branch_or_a_new_one() -> None:
    found = migrate.compare(("identity_0003", "jobs_0099", "ledger_0006", "payments_0001"))
    assert (found.state, found.unknown) == ("ahead", ("jobs_0099", "payments_0001"))
    by_name = {b.name: b for b in found.branches}
    assert (by_name["jobs"].current, by_name["jobs"].pending) == ("jobs_0099", ())
    assert (by_name["payments"].current, by_name["payments"].head) == ("payments_0001", None)
    assert by_name["pricing"].pending == ("pricing_0001", "pricing_0002")
