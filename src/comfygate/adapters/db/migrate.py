"""Create or upgrade a database to the newest schema with Alembic, and compare the
database's schema with the code's.

Each area of the schema (ledger, pricing, identity, jobs) is its own Alembic branch, so
``upgrade heads`` brings all of them up; a migration that needs another area's tables
says so with ``depends_on``. Revision ids are ``<branch>_<NNNN>`` (a test holds every
revision to it): a revision the code does not know, applied by a newer comfygate, is
put in its branch by its name alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import Engine

from comfygate.domain.errors import SchemaAheadError, SchemaOutOfDateError

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "comfygate db upgrade"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The code's revisions, read once per process (they do not change under it)."""
    return ScriptDirectory(str(MIGRATIONS))


@dataclass(frozen=True)
class BranchStatus:
    """One area of the schema: its revision in the database (None: none applied), the
    code's newest (None: a branch only a newer comfygate has), and the code's revisions
    not applied yet, oldest first."""

    name: str
    current: str | None
    head: str | None
    pending: tuple[str, ...]


@dataclass(frozen=True)
class SchemaStatus:
    """The database's schema against the code's, branch by branch (sorted by name)."""

    branches: tuple[BranchStatus, ...]
    unknown: tuple[str, ...]
    """Revisions in the database that the code does not know (a newer comfygate's)."""

    @property
    def heads(self) -> tuple[str, ...]:
        """The code's newest revision of each branch."""
        return tuple(b.head for b in self.branches if b.head is not None)

    @property
    def pending(self) -> tuple[str, ...]:
        """Revisions to apply, branch by branch, each branch's oldest first."""
        return tuple(r for b in self.branches for r in b.pending)

    @property
    def state(self) -> str:
        """``ahead`` (the database has revisions the code does not know), ``behind``
        (revisions are pending) or ``current``."""
        if self.unknown:
            return "ahead"
        return "behind" if self.pending else "current"

    def revisions(self) -> dict[str, str | None]:
        """Each branch's revision in the database."""
        return {b.name: b.current for b in self.branches}


@dataclass(frozen=True)
class Upgrade:
    """What ``upgrade`` found and left."""

    before: SchemaStatus
    after: SchemaStatus

    @property
    def applied(self) -> tuple[str, ...]:
        """Revisions pending before and not after, branch by branch, oldest first."""
        left = set(self.after.pending)
        return tuple(r for r in self.before.pending if r not in left)


def status(engine: Engine) -> SchemaStatus:
    """How the database's schema stands against the code's (reads, changes nothing)."""
    with engine.connect() as conn:
        in_database = MigrationContext.configure(conn).get_current_heads()
    return compare(in_database)


def compare(in_database: tuple[str, ...]) -> SchemaStatus:
    """The status of a database whose version table holds ``in_database``."""
    script = scripts()
    oldest_first: list[Script] = list(script.walk_revisions())[::-1]
    known = {r.revision for r in oldest_first}
    unknown = sorted(r for r in in_database if r not in known)
    applied = _applied(script, [r for r in in_database if r in known])
    by_branch: dict[str, list[str]] = {}
    for revision in oldest_first:
        by_branch.setdefault(_branch_of(revision), []).append(revision.revision)
    ahead = {_named_branch(r): r for r in unknown}
    branches = []
    for name in sorted(by_branch.keys() | ahead.keys()):
        revisions = by_branch.get(name, [])
        head = revisions[-1] if revisions else None
        if name in ahead:
            branches.append(BranchStatus(name, ahead[name], head, ()))
            continue
        done = [r for r in revisions if r in applied]
        todo = tuple(r for r in revisions if r not in applied)
        branches.append(BranchStatus(name, done[-1] if done else None, head, todo))
    return SchemaStatus(tuple(branches), tuple(unknown))


def _applied(script: ScriptDirectory, heads: list[str]) -> set[str]:
    """``heads`` and every revision under them, dependencies included (Alembic applies
    a revision's ``depends_on`` first, and records only the dependent)."""
    applied: set[str] = set()
    while heads:
        revision = script.get_revision(heads.pop())
        if revision is None or revision.revision in applied:
            continue
        applied.add(revision.revision)
        for below in (revision.down_revision, revision.dependencies):
            heads.extend([below] if isinstance(below, str) else below or ())
    return applied


def _branch_of(revision: Script) -> str:
    labels = revision.branch_labels  # Alembic carries a base's label up its branch
    return min(labels) if labels else _named_branch(revision.revision)


def _named_branch(revision: str) -> str:
    return revision.rpartition("_")[0] or revision


def refuse_mismatch(found: SchemaStatus) -> None:
    """Raise ``SchemaAheadError`` or ``SchemaOutOfDateError`` unless ``found`` is current."""
    if found.unknown:
        unknown = ", ".join(found.unknown)
        raise SchemaAheadError(
            f"the database schema is ahead of this comfygate: it has revisions this code"
            f" does not know ({unknown}), applied by a newer comfygate; run that version"
            " or a later one",
            unknown=found.unknown,
        )
    if found.pending:
        raise SchemaOutOfDateError(
            f"the database schema is behind this comfygate: {revisions(len(found.pending))}"
            f" pending ({', '.join(found.pending)}); run `{UPGRADE_COMMAND}`",
            pending=found.pending,
        )


def revisions(count: int) -> str:
    """``1 revision``, ``2 revisions``."""
    return f"{count} revision{'' if count == 1 else 's'}"


def check(engine: Engine) -> SchemaStatus:
    """The status, when the schema is the code's; else ``SchemaMismatchError``."""
    found = status(engine)
    refuse_mismatch(found)
    return found


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to every head; a no-op when it is current.

    Refuses (``SchemaAheadError``) a database with revisions the code does not know,
    which Alembic could not place.
    """
    before = status(engine)
    if before.unknown:  # Alembic would stop on them with "Can't locate revision"
        refuse_mismatch(before)
    if not before.pending:
        return Upgrade(before, before)
    command.upgrade(alembic_config(engine), "heads")
    return Upgrade(before, status(engine))
