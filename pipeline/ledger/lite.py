"""A SQLite ledger through the standard library's sqlite3: what `promote` and `rollback` need.

Importing SQLAlchemy takes about a quarter of a second, half of what a promotion costs
on top of its two registry calls (bench/promote.py). `LiteLedger` reads and writes a
SQLite ledger the way `pipeline.ledger.db.Ledger` does through SQLAlchemy: the same
rows (times stored as SQLAlchemy's SQLite dialect stores them, naive UTC text; booleans
as 0 and 1; JSON text), the same compare-and-swap in one `BEGIN IMMEDIATE` transaction
(`pointers.MoveLedger`), the same errors. `for_moves` picks it only for a plain
`sqlite:///PATH` ledger that exists at this envctl's schema; anything else (PostgreSQL,
a new or older ledger that SQLAlchemy creates or migrates) opens the SQLAlchemy ledger.
tests/unit/test_ledger_lite.py runs the same moves on both and compares the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import Unavailable
from pipeline.ledger import quick
from pipeline.ledger.model import (
    SCHEMA_VERSION,
    STAGES,
    Event,
    Pointer,
    Stage,
    TestRun,
    Version,
    by_image_and_stage,
    distinct_people,
    now,
)
from pipeline.ledger.pointers import Change, Conflict, MoveLedger, Who, conflict, pruned_meanwhile

if TYPE_CHECKING:
    from pipeline.settings import Settings

#: The DateTime columns of the tables read here (SQLAlchemy returns them as datetimes).
_TIMES = frozenset({"created_at", "pruned_at", "started_at", "finished_at", "updated_at", "at"})


def for_moves(settings: Settings) -> MoveLedger:
    """The ledger of `settings` for a move: `LiteLedger` when it can answer, else SQLAlchemy's."""
    lite = LiteLedger.open(settings.ledger_url, password=settings.ledger_password)
    if lite is not None:
        return lite
    from pipeline.ledger.db import Ledger

    return Ledger.for_settings(settings)


def stored(at: datetime) -> str:
    """A time as SQLAlchemy's SQLite dialect stores a DateTime: naive UTC, microseconds."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class LiteLedger:
    """An existing SQLite ledger at the current schema; open with `LiteLedger.open(url)`."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    def __repr__(self) -> str:
        return f"LiteLedger({self.url!r})"

    @classmethod
    def open(cls, url: str, *, password: str = "") -> LiteLedger | None:
        """The ledger at `url`, or None when only SQLAlchemy can open it exactly as asked."""
        path = quick.sqlite_path(url)
        if path is None or password or not path.is_file():
            return None  # a password on SQLite is refused by `Ledger.open`, with its message
        try:
            conn = quick.connect(path)
            try:
                row = conn.execute("SELECT version FROM schema_version").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return None  # SQLAlchemy says what is wrong (or creates what is missing)
        if row is None or row.version != SCHEMA_VERSION:
            return None
        return cls(path, url)

    def _unavailable(self, e: sqlite3.Error) -> Unavailable:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        return Unavailable(
            f"the ledger at {self.url} is unavailable: ({type(e).__module__}.{type(e).__name__}) {first}; "
            "check ENVCTL_LEDGER_URL and that the database runs"
        )

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = quick.connect(self.path)
        except sqlite3.Error as e:
            raise self._unavailable(e) from e
        try:
            yield conn
        except sqlite3.Error as e:
            raise self._unavailable(e) from e
        finally:
            conn.close()

    def _rows(self, sql: str, *args: Any) -> list[quick.Row]:
        with self._reading() as conn:
            rows: list[quick.Row] = conn.execute(sql, args).fetchall()
        for row in rows:
            for name in _TIMES.intersection(row._values):
                row._values[name] = quick.stored_datetime(row._values[name])
        return rows

    # reads ---------------------------------------------------------------------

    def known_images(self) -> list[str]:
        rows = self._rows("SELECT image FROM versions UNION SELECT image FROM environments")
        return sorted(r.image for r in rows)

    def get_version(self, image: str, sha: str) -> Version | None:
        rows = self._rows("SELECT * FROM versions WHERE image = ? AND sha = ?", image, sha)
        return Version.from_row(rows[0]) if rows else None

    def list_versions(self, image: str) -> list[Version]:
        return [
            Version.from_row(r)
            for r in self._rows("SELECT * FROM versions WHERE image = ? ORDER BY id", image)
        ]

    def test_runs(self, image: str, digest: str) -> list[TestRun]:
        rows = self._rows("SELECT * FROM test_runs WHERE image = ? AND digest = ? ORDER BY id", image, digest)
        return [TestRun.from_row(r) for r in rows]

    def pointers(self, image: str | None = None) -> list[Pointer]:
        if image is None:
            rows = self._rows("SELECT * FROM environments")
        else:
            rows = self._rows("SELECT * FROM environments WHERE image = ?", image)
        return by_image_and_stage([Pointer.from_row(r) for r in rows])

    def snapshot(self, image: str) -> dict[Stage, Pointer]:
        found = {p.stage: p for p in self.pointers(image)}
        return {stage: found.get(stage) or Pointer.empty(image, stage) for stage in STAGES}

    def history(self, image: str, stage: Stage | None = None) -> list[Event]:
        if stage is None:
            rows = self._rows("SELECT * FROM events WHERE image = ? ORDER BY id", image)
        else:
            rows = self._rows("SELECT * FROM events WHERE image = ? AND stage = ? ORDER BY id", image, stage)
        return [Event.from_row(r) for r in rows]

    def signers(self, image: str, digest: str) -> list[str]:
        rows = self._rows(
            "SELECT actor FROM signoffs WHERE image = ? AND digest = ? ORDER BY id", image, digest
        )
        return distinct_people(r.actor for r in rows)

    # the write -------------------------------------------------------------------

    def apply(self, image: str, changes: list[Change]) -> list[Change]:
        """`MoveLedger.apply`: the moves in one BEGIN IMMEDIATE transaction, or none of them."""
        with self._reading() as conn:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")  # the database's write lock: writers of every image wait
            try:
                digests = [c.digest for c in changes]
                marks = ", ".join("?" for _ in digests)
                pruned = conn.execute(
                    f"SELECT sha, digest FROM versions WHERE image = ? AND digest IN ({marks}) "
                    "AND pruned_at IS NOT NULL",
                    (image, *digests),
                ).fetchone()
                if pruned is not None:
                    raise pruned_meanwhile(image, pruned.sha, pruned.digest)
                done = []
                for c in changes:
                    _swap(conn, c.expected, c.sha, c.digest)
                    event_id, at = _event(conn, c, c.who)
                    done.append(replace(c, event_id=event_id, at=at))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return done


def _swap(conn: sqlite3.Connection, expected: Pointer, sha: str, digest: str) -> None:
    """`pointers._swap` in SQL: write the pointer only if its generation is still the one read."""
    generation, at = expected.generation + 1, stored(now())
    if expected.generation == 0:
        try:
            conn.execute(
                "INSERT INTO environments (image, stage, sha, digest, generation, pinned, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 0, ?)",
                (expected.image, expected.stage, sha, digest, generation, at),
            )
        except sqlite3.IntegrityError as e:
            raise Conflict(conflict(expected)) from e
        return
    updated = conn.execute(
        "UPDATE environments SET sha = ?, digest = ?, generation = ?, updated_at = ? "
        "WHERE image = ? AND stage = ? AND generation = ?",
        (sha, digest, generation, at, expected.image, expected.stage, expected.generation),
    )
    if updated.rowcount != 1:
        raise Conflict(conflict(expected))


def _event(conn: sqlite3.Connection, c: Change, who: Who) -> tuple[int, datetime]:
    """`pointers._event` in SQL: append the event; its id and time."""
    at = now()
    p = c.expected
    added = conn.execute(
        "INSERT INTO events (at, image, stage, action, from_sha, to_sha, from_digest, to_digest, "
        "actor, ci_run_id, reason, forced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stored(at),
            p.image,
            p.stage,
            c.action,
            p.sha,
            c.sha,
            p.digest,
            c.digest,
            who.actor,
            who.ci_run_id or None,
            who.reason,
            int(who.forced),
        ),
    )
    if added.lastrowid is None:
        raise Unavailable("the ledger recorded the event but gave back no id for it")
    return int(added.lastrowid), at
