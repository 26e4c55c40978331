"""Quick reads of a SQLite ledger with the standard library's sqlite3, without SQLAlchemy.

`status` and shell completion start in a few tens of milliseconds this way (SQLAlchemy
takes about 0.25 s to import). Each function returns None when it can't answer
exactly as `pipeline.ledger.db` would: a URL that is not a plain `sqlite:///PATH`, a
schema at another version than `model.SCHEMA_VERSION` (SQLAlchemy then migrates it or
says to upgrade), any sqlite3 error (SQLAlchemy then reports it). A ledger file that
does not exist yet is an empty ledger; these reads never create it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.ledger.model import SCHEMA_VERSION, Pointer, by_image_and_stage, distinct_people


class _Absent(Exception):
    """The ledger file does not exist: an empty ledger."""


class _NotHere(Exception):
    """The quick path can't answer this one exactly; SQLAlchemy does."""


def sqlite_path(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL, else None."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        return None
    return Path(path)


class Row:
    __slots__ = ("_values",)

    def __init__(self, cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> None:
        self._values = {d[0]: v for d, v in zip(cursor.description, values, strict=True)}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError as e:
            raise AttributeError(name) from e


def stored_datetime(value: Any) -> datetime | None:
    """A DateTime column as SQLAlchemy's SQLite dialect returns it (stored naive, as text)."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


SQLITE_BUSY_MS = 30_000  # how long a ledger command waits for another's write lock


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the existing ledger file `path` (never created here), rows as `Row`.

    Autocommit (no implicit transactions): a writer says BEGIN IMMEDIATE itself.
    """
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode=rw", uri=True, timeout=SQLITE_BUSY_MS / 1000, isolation_level=None
    )
    conn.row_factory = Row
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    return conn


@contextmanager
def _connect(url: str) -> Iterator[sqlite3.Connection]:
    path = sqlite_path(url)
    if path is None:
        raise _NotHere
    if not path.exists():
        raise _Absent
    try:
        conn = connect(path)
    except sqlite3.Error as e:
        raise _NotHere from e
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None or row.version != SCHEMA_VERSION:
            raise _NotHere
        yield conn
    except sqlite3.Error as e:
        raise _NotHere from e
    finally:
        conn.close()


def pointers(url: str, image: str | None = None) -> list[Pointer] | None:
    """`pointers.pointers(ledger, image)`, or None when only SQLAlchemy can say."""
    try:
        with _connect(url) as conn:
            if image is None:
                rows = conn.execute("SELECT * FROM environments").fetchall()
            else:
                rows = conn.execute("SELECT * FROM environments WHERE image = ?", (image,)).fetchall()
            found = []
            for row in rows:
                row._values["updated_at"] = stored_datetime(row.updated_at)
                found.append(Pointer.from_row(row))
    except _Absent:
        return []
    except _NotHere:
        return None
    return by_image_and_stage(found)


def known_images(url: str) -> list[str] | None:
    """`pointers.known_images(ledger)`, or None when only SQLAlchemy can say."""
    try:
        with _connect(url) as conn:
            names = {r.image for r in conn.execute("SELECT DISTINCT image FROM versions")}
            names |= {r.image for r in conn.execute("SELECT DISTINCT image FROM environments")}
    except _Absent:
        return []
    except _NotHere:
        return None
    return sorted(names)


def signers(url: str, named: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[str]] | None:
    """The distinct people who signed each (image, digest) of `named`, as `signoffs.people` of
    `signoffs.for_digest` says; None when only SQLAlchemy can say."""
    wanted = sorted(set(named))
    try:
        with _connect(url) as conn:
            found = {}
            for image, digest in wanted:
                rows = conn.execute(
                    "SELECT actor FROM signoffs WHERE image = ? AND digest = ? ORDER BY id", (image, digest)
                )
                found[image, digest] = distinct_people(r.actor for r in rows)
    except _Absent:
        return {key: [] for key in wanted}
    except _NotHere:
        return None
    return found


def run_ids(url: str, limit: int = 200) -> list[str] | None:
    """The newest pipeline run IDs (for completion), or None when only SQLAlchemy can say."""
    try:
        with _connect(url) as conn:
            rows = conn.execute("SELECT run_id FROM pipeline_runs ORDER BY id DESC LIMIT ?", (limit,))
            return [r.run_id for r in rows]
    except _Absent:
        return []
    except _NotHere:
        return None
