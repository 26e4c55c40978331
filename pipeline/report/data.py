"""What the report shows, read once from the ledger, the registry and the run artifacts.

Reading is kept apart from rendering: the pages are pure functions of a `Snapshot`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.backends import Publisher
from pipeline.build import sbom_diff
from pipeline.ledger import pointers as envs
from pipeline.ledger.db import Ledger, TestRun, Version, test_runs
from pipeline.ledger.pointers import Event, Pointer
from pipeline.pipelines.records import PipelineRun, listing
from pipeline.publish import tags as publish

log = logging.getLogger(__name__)

RUN_LIMIT = 200  # pipeline runs and test runs shown, newest first


@dataclass(frozen=True, kw_only=True)
class Environment:
    pointer: Pointer
    drift: str | None  # None: in sync; missing, moved, unknown
    tag_digest: str | None
    signoffs: list[dict[str, Any]] | None  # None: the ledger has no sign-offs yet


@dataclass(frozen=True, kw_only=True)
class Diff:
    old: str
    new: str
    old_sha: str
    new_sha: str
    result: sbom_diff.SbomDiff


@dataclass(kw_only=True)
class Snapshot:
    """Everything one report shows, read at `taken_at`."""

    taken_at: datetime
    registry: str
    environments: list[Environment]
    history: dict[str, list[Event]]  # environment ID -> events, oldest first
    pipeline_runs: list[PipelineRun]
    test_runs: list[TestRun]
    diffs: list[Diff] = field(default_factory=list)
    signoffs_known: bool = False
    artifacts_dir: Path | None = None  # local run folders, `<artifacts_dir>/<run id>`

    def images(self) -> list[str]:
        return sorted({e.pointer.image for e in self.environments} | {r.image for r in self.test_runs})

    def runs_of_digest(self, image: str, digest: str | None) -> list[TestRun]:
        return [r for r in self.test_runs if r.image == image and r.digest == digest]


def all_test_runs(ledger: Ledger, limit: int = RUN_LIMIT) -> list[TestRun]:
    """The newest test runs of every image, newest first."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(test_runs).order_by(test_runs.c.id.desc()).limit(limit)).all()
    return [TestRun.from_row(r) for r in rows]


def runs_of_digests(ledger: Ledger, wanted: dict[str, set[str]]) -> list[TestRun]:
    """Every test run of the given digests (image -> digests), however old: one query per image.

    The newest `RUN_LIMIT` runs miss the evidence of a version that has been in production
    for long; its environment and history still link to the runs of its digest.
    """
    found: list[TestRun] = []
    with ledger.engine.connect() as conn:
        for image, digests in sorted(wanted.items()):
            if not digests:
                continue
            rows = conn.execute(
                sa.select(test_runs)
                .where(test_runs.c.image == image, test_runs.c.digest.in_(sorted(digests)))
                .order_by(test_runs.c.id.desc())
            ).all()
            found.extend(TestRun.from_row(r) for r in rows)
    return found


def _with(recent: list[TestRun], more: list[TestRun]) -> list[TestRun]:
    """`recent` (newest first), then the runs of `more` it lacks, newest first."""
    seen = {r.run_id for r in recent}
    extra: dict[str, TestRun] = {r.run_id: r for r in more if r.run_id not in seen}
    return recent + sorted(extra.values(), key=lambda r: r.started_at, reverse=True)


def signoffs(ledger: Ledger, pointer: Pointer) -> list[dict[str, Any]] | None:
    """Sign-offs of the version an environment names, when the ledger has a `signoffs` table.

    The table is read by whichever of its columns exist: rows of the pointer's image and
    digest (or SHA); None when there is no such table.
    """
    with ledger.engine.connect() as conn:
        if not sa.inspect(conn).has_table("signoffs"):
            return None
        table = sa.Table("signoffs", sa.MetaData(), autoload_with=conn)
        columns = table.c
        query = sa.select(table)
        if "image" in columns:
            query = query.where(columns.image == pointer.image)
        if "digest" in columns:
            query = query.where(columns.digest == pointer.digest)
        elif "sha" in columns:
            query = query.where(columns.sha == pointer.sha)
        else:
            return []
        if "id" in columns:
            query = query.order_by(columns.id)
        rows = conn.execute(query).mappings().all()
    return [dict(r) for r in rows]


def _diffs(ledger: Ledger, pointers: list[Pointer]) -> list[Diff]:
    """Per image: production -> staging (what a merge would bring) and fallback -> production."""
    by_env: dict[tuple[str, str], Pointer] = {(p.image, p.stage): p for p in pointers if p.sha}
    found: list[Diff] = []
    for image in sorted({p.image for p in pointers}):
        for old, new in (("production", "staging"), ("fallback", "production")):
            before, after = by_env.get((image, old)), by_env.get((image, new))
            if before is None or after is None or before.sha is None or after.sha is None:
                continue
            old_version = ledger.get_version(image, before.sha)
            new_version = ledger.get_version(image, after.sha)
            if old_version is None or new_version is None:
                continue
            found.append(_diff(image, old, new, old_version, new_version))
    return found


def _diff(image: str, old: str, new: str, before: Version, after: Version) -> Diff:
    return Diff(
        old=f"{image}.{old}",
        new=f"{image}.{new}",
        old_sha=before.sha,
        new_sha=after.sha,
        result=sbom_diff.diff(before, after),
    )


def collect(
    ledger: Ledger, publisher: Publisher, now: datetime, *, artifacts_dir: Path | None = None
) -> Snapshot:
    """Read the ledger, and each environment's tag from the registry (drift `unknown` if it is down).

    `artifacts_dir` is where run folders are kept locally: a run whose artifacts went to
    Cloud Storage (`gs://…`) is shown from `<artifacts_dir>/<run id>` while that still exists.
    """
    pointers = envs.pointers(ledger)
    reachable = publisher.ping()
    environments: list[Environment] = []
    signoffs_known = False
    for pointer in pointers:
        if reachable:
            state = publish.tag_state(publisher, pointer)
        else:
            state = publish.TagState(pointer, None, "unknown" if pointer.digest else None)
        signed = signoffs(ledger, pointer)
        signoffs_known = signoffs_known or signed is not None
        environments.append(
            Environment(pointer=pointer, drift=state.drift, tag_digest=state.tag_digest, signoffs=signed)
        )
    history: dict[str, list[Event]] = {}
    digests: dict[str, set[str]] = {}
    for pointer in pointers:
        if pointer.digest:
            digests.setdefault(pointer.image, set()).add(pointer.digest)
    for image in sorted({p.image for p in pointers}):
        for event in envs.history(ledger, image):
            history.setdefault(f"{event.image}.{event.stage}", []).append(event)
            if event.to_digest:
                digests.setdefault(image, set()).add(event.to_digest)
    return Snapshot(
        taken_at=now,
        registry=publisher.host,
        environments=environments,
        history=history,
        pipeline_runs=listing(ledger, RUN_LIMIT),
        test_runs=_with(all_test_runs(ledger), runs_of_digests(ledger, digests)),
        diffs=_diffs(ledger, pointers),
        signoffs_known=signoffs_known,
        artifacts_dir=artifacts_dir,
    )


def read_text(path: Path, limit: int = 2_000_000) -> str | None:
    """A log or artifact as text (its last `limit` bytes), or None when it can't be read."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return None
    return data.decode("utf-8", "replace")


def read_notebook(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
