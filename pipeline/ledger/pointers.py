"""Environments: pointers from `<image>.<stage>` to one version, moved by compare-and-swap.

Reads work on their own and never wait for writers. A move is decided outside any
transaction (rules, git ancestry, registry reads) on pointers read without a lock, then
written by `compare_and_swap`: one short transaction after `lock_image()` (SQLite:
BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock) that writes only if
every pointer is still at the generation that was read. A lost race decides again on
fresh pointers. Every move appends an event; events are never updated or deleted.

The move commands work on a `MoveLedger`: the SQLAlchemy `Ledger` (any database), or
`pipeline.ledger.lite.LiteLedger`, the same reads and the same transaction over a SQLite
file with the standard library (`promote` and `rollback` start without SQLAlchemy's
quarter of a second). This module imports SQLAlchemy only inside the functions that take
a SQLAlchemy connection.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pipeline.errors import Refused, Unavailable
from pipeline.ledger.model import STAGES as STAGES
from pipeline.ledger.model import EnvId as EnvId
from pipeline.ledger.model import Event as Event
from pipeline.ledger.model import Pointer as Pointer
from pipeline.ledger.model import Stage as Stage
from pipeline.ledger.model import TestRun, Version, now, unknown_image
from pipeline.ledger.model import check_image_name as check_image_name
from pipeline.ledger.model import parse_env_id as parse_env_id

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Action = Literal["promote", "rollback", "pin", "unpin", "sync"]
ATTEMPTS = 8  # decisions per command when other writers keep moving the pointers
BACKOFF = 0.05  # seconds; a loser waits a random while, up to this doubled per loss, before deciding again
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Who:
    """Who moves a pointer and why; recorded on every event."""

    actor: str
    ci_run_id: str | None = None
    reason: str | None = None
    forced: bool = False


class Conflict(Refused):
    """A compare-and-swap lost: the pointer moved since it was read (exit 1, with what moved)."""


# reads -------------------------------------------------------------------------


def current(ledger: MoveLedger, image: str, stage: Stage) -> Pointer | None:
    """Where `<image>.<stage>` points now, or None when it was never set."""
    pointer = ledger.snapshot(image)[stage]
    return pointer if pointer.digest else None


def read(conn: Connection, image: str, stage: Stage) -> Pointer:
    """One pointer, read on a SQLAlchemy connection (inside a transaction: under its lock)."""
    import sqlalchemy as sa

    from pipeline.ledger.db import environments

    row = conn.execute(
        sa.select(environments).where(environments.c.image == image, environments.c.stage == stage)
    ).first()
    return Pointer.from_row(row) if row else Pointer.empty(image, stage)


def pointers(ledger: MoveLedger, image: str | None = None) -> list[Pointer]:
    """Every environment that was ever set (or pinned), by image then stage order."""
    return ledger.pointers(image)


def known_images(ledger: MoveLedger) -> list[str]:
    return ledger.known_images()


def require_known(ledger: MoveLedger, image: str) -> None:
    """A `UsageError` naming the known images when the ledger never heard of `image`."""
    known = known_images(ledger)
    if image not in known:
        raise unknown_image(image, known)


def history(ledger: MoveLedger, image: str, stage: Stage | None = None) -> list[Event]:
    """Every event of an image (or one environment), oldest first."""
    return ledger.history(image, stage)


# writes (inside one transaction) -----------------------------------------------


def lock_image(conn: Connection, image: str) -> None:
    """Serialise writers of one image until the transaction ends."""
    import sqlalchemy as sa

    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"envctl:{image}".encode()).digest()[:8], "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    # SQLite: the transaction already holds the database write lock (BEGIN IMMEDIATE).


def refuse_pruned(conn: Connection, image: str, digests: list[str]) -> None:
    """`Refused` when `envctl prune` marked one of `digests` pruned (read under the image's lock).

    Retention marks a digest pruned under the same lock before it deletes it, so a move
    either lands first (and retention then sees the pointer) or sees the mark here.
    """
    import sqlalchemy as sa

    from pipeline.ledger.db import versions

    row = conn.execute(
        sa.select(versions.c.sha, versions.c.digest, versions.c.pruned_at).where(
            versions.c.image == image, versions.c.digest.in_(digests), versions.c.pruned_at.is_not(None)
        )
    ).first()
    if row is not None:
        raise pruned_meanwhile(image, row.sha, row.digest)


def pruned_meanwhile(image: str, sha: str, digest: str) -> Refused:
    return Refused(
        f"{image} {sha[:12]} ({digest[:19]}) was pruned from the registry meanwhile; "
        f"rebuild it with `envctl build {image} --rev {sha}` and try again; nothing was changed"
    )


def _swap(conn: Connection, expected: Pointer, values: dict[str, Any]) -> None:
    """Write the pointer only if its generation is still the one read; else `Conflict`."""
    from sqlalchemy.exc import IntegrityError

    from pipeline.ledger.db import environments

    values = {**values, "generation": expected.generation + 1, "updated_at": now()}
    if expected.generation == 0:
        try:
            conn.execute(environments.insert().values(image=expected.image, stage=expected.stage, **values))
        except IntegrityError as e:
            raise Conflict(conflict(expected)) from e
        return
    result = conn.execute(
        environments.update()
        .where(
            environments.c.image == expected.image,
            environments.c.stage == expected.stage,
            environments.c.generation == expected.generation,
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise Conflict(conflict(expected))


def conflict(expected: Pointer) -> str:
    return f"{expected.image}.{expected.stage} moved while this command ran; run it again"


@dataclass(frozen=True, kw_only=True)
class Change:
    """One pointer move a command decided on: from `expected` (as read) to (sha, digest)."""

    expected: Pointer
    sha: str
    digest: str
    action: Action
    who: Who
    event_id: int | None = None  # the ledger event that recorded it, once committed
    at: datetime | None = None


Decide = Callable[[dict[Stage, Pointer]], list[Change]]


class MoveLedger(Protocol):
    """What the move commands read from a ledger and the one write they make."""

    def known_images(self) -> list[str]: ...
    def get_version(self, image: str, sha: str) -> Version | None: ...
    def list_versions(self, image: str) -> list[Version]: ...
    def test_runs(self, image: str, digest: str) -> list[TestRun]:
        """Every test run of one digest, oldest first."""
        ...

    def snapshot(self, image: str) -> dict[Stage, Pointer]:
        """Every environment of `image`, read without a lock (unset ones as empty pointers)."""
        ...

    def pointers(self, image: str | None = None) -> list[Pointer]: ...
    def history(self, image: str, stage: Stage | None = None) -> list[Event]: ...
    def signers(self, image: str, digest: str) -> list[str]:
        """The distinct people who signed off `digest` of `image`, in the order they signed."""
        ...

    def apply(self, image: str, changes: list[Change]) -> list[Change]:
        """One transaction: lock `image`, refuse a digest pruned meanwhile, then move each
        pointer by compare-and-swap with its event (`Conflict` when one moved since it was
        read). The changes with their event ids and times."""
        ...


def snapshot(ledger: MoveLedger, image: str) -> dict[Stage, Pointer]:
    """Every environment of `image`, read without a lock (unset ones as empty pointers)."""
    return ledger.snapshot(image)


def apply_on(conn: Connection, image: str, changes: list[Change]) -> list[Change]:
    """`MoveLedger.apply` inside a SQLAlchemy transaction."""
    lock_image(conn, image)
    refuse_pruned(conn, image, [c.digest for c in changes])
    done = []
    for c in changes:
        event_id, at = move(conn, c.expected, c.sha, c.digest, c.action, c.who)
        done.append(replace(c, event_id=event_id, at=at))
    return done


def compare_and_swap(
    ledger: MoveLedger,
    image: str,
    decide: Decide,
    *,
    attempts: int = ATTEMPTS,
    on_read: Callable[[], None] | None = None,
) -> list[Change]:
    """Decide on pointers read without a lock, then write the changes only if none moved.

    `decide` runs outside any transaction (it may call git or the registry) and returns
    the changes, `[]` for nothing to do, or raises `Refused`. When another writer moved
    one of the pointers in between, the swap loses, and `decide` runs again on fresh
    pointers: the move goes on if it is still valid; else its `Refused` says which
    pointer moved, from what to what. `on_read` runs after each read (tests use it to
    lose a race on purpose).
    """
    lost: list[str] = []
    for _ in range(attempts):
        seen = snapshot(ledger, image)
        if on_read is not None:
            on_read()
        try:
            changes = decide(seen)
        except Refused as e:
            if lost:
                raise Refused(f"{lost[-1]} while this command ran, and now {e}") from e
            raise
        if not changes:
            return []
        try:
            return ledger.apply(image, changes)
        except Conflict:
            lost.append(_what_moved(seen, snapshot(ledger, image), [c.expected.stage for c in changes]))
            log.info("%s while this command ran; deciding again", lost[-1])
            # Writers that lost together would read and collide together again: a random
            # wait spreads them out (ten commands at once on one image lost 5 times in a row).
            time.sleep(random.uniform(0, min(BACKOFF * 2 ** len(lost), 1.0)))
    raise Conflict(f"{lost[-1]} while this command ran, {attempts} times in a row; run it again")


def _what_moved(before: dict[Stage, Pointer], after: dict[Stage, Pointer], stages: list[Stage]) -> str:
    said = []
    for stage in stages:
        old, new = before[stage], after[stage]
        if old.generation == new.generation:
            continue
        name = f"{old.image}.{stage}"
        if (old.sha, old.digest) != (new.sha, new.digest):
            said.append(f"{name} moved from {_short(old.sha)} to {_short(new.sha)}")
        elif old.pinned != new.pinned:
            said.append(f"{name} was {'pinned' if new.pinned else 'unpinned'}")
        else:
            said.append(f"{name} changed")
    return "; ".join(said) or f"{before[stages[0]].image} changed"


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "(none)"


def _event(
    conn: Connection, pointer: Pointer, action: Action, sha: str | None, digest: str | None, who: Who
) -> tuple[int, datetime]:
    """Append the event; its id and time."""
    from pipeline.ledger.db import events

    at = now()
    result = conn.execute(
        events.insert().values(
            at=at,
            image=pointer.image,
            stage=pointer.stage,
            action=action,
            from_sha=pointer.sha,
            to_sha=sha,
            from_digest=pointer.digest,
            to_digest=digest,
            actor=who.actor,
            ci_run_id=who.ci_run_id or None,
            reason=who.reason,
            forced=who.forced,
        )
    )
    key = result.inserted_primary_key
    if key is None:
        raise Unavailable("the ledger recorded the event but gave back no id for it")
    return int(key[0]), at


def move(
    conn: Connection, expected: Pointer, sha: str, digest: str, action: Action, who: Who
) -> tuple[int, datetime]:
    """Point the environment at (sha, digest) by compare-and-swap and record the event (its id, time)."""
    _swap(conn, expected, {"sha": sha, "digest": digest})
    return _event(conn, expected, action, sha, digest, who)


def set_pin(conn: Connection, expected: Pointer, pinned: bool, who: Who) -> tuple[int, datetime]:
    _swap(
        conn,
        expected,
        {
            "sha": expected.sha,
            "digest": expected.digest,
            "pinned": pinned,
            "pin_reason": who.reason if pinned else None,
            "pinned_by": who.actor if pinned else None,
        },
    )
    return _event(conn, expected, "pin" if pinned else "unpin", expected.sha, expected.digest, who)
