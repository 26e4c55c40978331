"""A SQLite ledger opens while another process creates it (two hooks that start together)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pipeline.ledger.db import MIGRATIONS, Ledger


def test_a_new_ledger_opens_while_another_process_holds_its_write_lock(tmp_path: Path) -> None:
    # Another process has just created the file and holds its write lock, before its
    # schema exists. Entering WAL mode then answers "database is locked" at once, without
    # the busy handler (a read lock upgraded to a write lock); CI saw one of two pipeline
    # runs started together fail so. The open waits for the lock instead.
    path = tmp_path / "ledger.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, other.execute, args=("ROLLBACK",))
    release.start()
    try:
        ledger = Ledger.open(f"sqlite:///{path}")
    finally:
        release.join()
        other.close()
    assert ledger.version() == len(MIGRATIONS)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
