"""Ledger facts the tests set up directly (a pointer moved, a test run), the ledgers a move runs on,
and a fake Artifact Registry's settings."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run
from pipeline.ledger.lite import LiteLedger
from pipeline.ledger.pointers import Change, MoveLedger, Stage, Who, compare_and_swap


def numbered_version(image: str, n: int) -> Version:
    """Version number `n` of `image`: SHA, digest, build key and size all made of `n`."""
    digest = f"sha256:{n:064d}"
    return Version(
        image=image,
        sha=f"{n:040d}",
        tree="0" * 40,
        inputs_key="k",
        build_key=f"b{n}",
        digest=digest,
        image_ref=f"localhost:5000/{image}@{digest}",
        size=n,
        reused_from=None,
        labels={},
        sbom={},
        created_at=now(),
    )


def move(ledger: Ledger, image: str, stage: Stage, sha: str, digest: str, *, actor: str = "tester") -> None:
    """Point `stage` of `image` at (`sha`, `digest`), recorded as a promotion by `actor`."""
    who = Who(actor=actor)
    compare_and_swap(
        ledger,
        image,
        lambda seen: [Change(expected=seen[stage], sha=sha, digest=digest, action="promote", who=who)],
    )


def record_run(ledger: Ledger, version: Version, passed: bool = True, test_key: str | None = None) -> str:
    """Record a test run of `version` that `passed` (or not), just now; its run id."""
    run_id = uuid.uuid4().hex
    record_test_run(
        ledger,
        TestRun(
            run_id=run_id,
            image=version.image,
            sha=version.sha,
            digest=version.digest,
            passed=passed,
            summary={},
            artifacts="",
            started_at=now(),
            finished_at=now(),
            test_key=test_key,
        ),
    )
    return run_id


def artifact_registry_env(endpoint: str, registry: str, state: Path) -> dict[str, str]:
    """ENVCTL_* of the gcp backend whose Artifact Registry client talks to the fake at `endpoint`."""
    return {
        "ENVCTL_BACKEND": "gcp",
        "ENVCTL_REGISTRY": registry,
        "ENVCTL_GCP_ENDPOINTS": f"artifactregistry={endpoint}",
        "ENVCTL_GCP_TIMEOUT": "5",
        "ENVCTL_GCP_RETRY": "0",
        "ENVCTL_STATE_DIR": str(state),
    }


#: The ledgers a move runs on: (database, this command's ledger, the other writer's ledger).
MOVE_LEDGERS = [
    "sqlite-sqlalchemy",
    "sqlite-lite",
    "sqlite-lite-vs-sqlalchemy",
    "sqlite-sqlalchemy-vs-lite",
    "postgresql-sqlalchemy",
]


def move_ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[MoveLedger, MoveLedger]:
    """Two ledgers on one new database as `MOVE_LEDGERS` names them (`request.param`).

    `lite`: `LiteLedger` (the standard library's sqlite3, as `promote` opens a SQLite
    ledger); `sqlalchemy`: `Ledger`. The second races the first in the tests.
    """
    kind: str = request.param
    if kind.startswith("postgresql"):
        url: str = request.getfixturevalue("postgres_url")
        return Ledger.open(url), Ledger.open(url)
    url = f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    Ledger.open(url)  # creates it at the current schema

    def one(name: str) -> MoveLedger:
        if name == "sqlalchemy":
            return Ledger.open(url)
        lite = LiteLedger.open(url)
        assert lite is not None, "an existing SQLite ledger at the current schema opens as LiteLedger"
        return lite

    first, _, second = kind.removeprefix("sqlite-").partition("-vs-")
    return one(first), one(second or first)
