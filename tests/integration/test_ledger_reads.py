"""Reads never wait for writers: `history`, `status`, `describe` and `diff` answer while
another process holds a write transaction open for 20 s, on SQLite and on PostgreSQL.

The writer is a real child process inside `Ledger.transaction()`: on SQLite it holds
the database's write lock (BEGIN IMMEDIATE); on PostgreSQL the image's advisory lock,
the ledger's migration lock and a written pointer row. Each read must answer within
2 s more than it takes with no writer (the interpreter's start-up on a busy shared
machine is not what is measured), and before the writer lets go. Before reads stopped
migrating a current schema, each waited for the writer: about 20 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.ledger.db import Ledger, Version, now
from pipeline.ledger.pointers import Stage, Who, move, read
from tests.helpers import cli_env, envctl

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg"]

IMAGE = "test.reads"
HOLD = 20.0
HOLDER = """
import sys, time
import sqlalchemy as sa
from pipeline.ledger import pointers as envs
from pipeline.ledger.db import MIGRATION_LOCK, Ledger

ledger = Ledger.open(sys.argv[1])
with ledger.transaction() as conn:
    envs.lock_image(conn, sys.argv[2])
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    pointer = envs.read(conn, sys.argv[2], "staging")
    envs.set_pin(conn, pointer, True, envs.Who(actor="holder", reason="a long write"))
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _versions(ledger: Ledger) -> None:
    for name, numpy in (("a", "1.26.4"), ("b", "2.0.0")):
        digest = "sha256:" + name * 64
        ledger.record_version(
            Version(
                image=IMAGE,
                sha=name * 40,
                tree="0" * 40,
                inputs_key=name,
                build_key=name,
                digest=digest,
                image_ref=f"127.0.0.1:1/{IMAGE}@{digest}",
                size=None,
                reused_from=None,
                labels={},
                sbom={"pip": [{"name": "numpy", "version": numpy}]},
                created_at=now(),
            )
        )

        with ledger.transaction() as conn:
            stage: Stage = "staging" if name == "a" else "production"
            move(conn, read(conn, IMAGE, stage), name * 40, digest, "promote", Who(actor="tester"))


READS = [
    ("history", IMAGE, "--json"),
    ("status", IMAGE, "--json"),
    ("describe", f"{IMAGE}.staging", "--json"),
    ("diff", f"{IMAGE}.staging", f"{IMAGE}.production"),
]


def _timed(
    args: tuple[str, ...], env: dict[str, str], cwd: Path
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = envctl(*args, cwd=cwd, env=env, timeout=60)
    return time.monotonic() - started, result


def test_reads_answer_while_a_write_is_held(ledger_url: str, tmp_path: Path) -> None:
    _versions(Ledger.open(ledger_url))
    # No registry answers here: status says so (exit 3) and still prints the ledger's view.
    env = {
        "ENVCTL_LEDGER_URL": ledger_url,
        "ENVCTL_REGISTRY": "127.0.0.1:1",
        "ENVCTL_STATE_DIR": str(tmp_path),
    }
    # The slower of two runs with no writer: what a read takes on this machine now.
    baseline = {args[0]: max(_timed(args, env, tmp_path)[0] for _ in range(2)) for args in READS}

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ledger_url, IMAGE, str(HOLD)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding", holder.stderr
        for args in READS:
            seconds, result = _timed(args, env, tmp_path)
            assert holder.poll() is None, "the writer let go before the read answered"
            assert seconds < baseline[args[0]] + 2.0, (args, seconds, baseline[args[0]], result.stderr)
            assert "Traceback" not in result.stderr
            assert result.returncode == (3 if args[0] == "status" else 0), (args, result.stderr)
            if args[0] == "history":
                assert [e["to_sha"] for e in json.loads(result.stdout)] == ["a" * 40, "b" * 40]
            if args[0] == "status":
                rows = {row["stage"]: row for row in json.loads(result.stdout)}
                assert rows["staging"]["sha"] == "a" * 40 and rows["staging"]["pinned"] is False
            if args[0] == "describe":
                assert json.loads(result.stdout)["version"]["sha"] == "a" * 40
            if args[0] == "diff":
                assert "numpy" in result.stdout
    finally:
        holder.terminate()
        holder.wait(timeout=30)
