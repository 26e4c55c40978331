"""Retention: delete from the registry the versions nothing references; the ledger keeps them.

A version's digest is referenced by a pointer (staging, production, fallback; a pin
holds its pointer's), by an instance created from it, or by being one of the last
`keep` targets of an environment's history. A digest none of whose versions was tested
yet stays for `UNTESTED_GRACE` (it may be awaiting its test or promotion). Everything
else older than `older_than` (default one day) is pruned. Per digest, under the
image's ledger lock (the one every pointer move takes, `pointers.lock_image`), no
pointer may hold it and the ledger marks every version of it pruned; only then are its
tags and manifest deleted through the publisher (which refuses a digest that any other
tag names; the mark is then cleared). A promote or rollback re-reads the mark under the
same lock and refuses. `envctl build IMAGE --rev SHA` rebuilds a pruned version and
clears the mark. Each image is also pruned under its pipeline lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline import output
from pipeline.backends import Publisher
from pipeline.errors import Refused
from pipeline.ledger import pointers as envs
from pipeline.ledger.db import Ledger, Version, now, test_runs_for
from pipeline.pipelines.flows import image_lock
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = timedelta(days=1)
UNTESTED_GRACE = timedelta(days=7)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One digest of an image that nothing references, and the versions (commits) it is."""

    image: str
    digest: str
    shas: list[str]
    created_at: datetime

    def tags(self) -> list[str]:
        """The tags envctl made for it: `<sha>` and a rebuild's scratch tag."""
        return sorted({*self.shas, *(f"envctl-rebuild-{sha}" for sha in self.shas)})


@dataclass
class ImagePlan:
    image: str
    kept: dict[str, list[str]] = field(default_factory=dict)  # digest -> why
    prune: list[Candidate] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # digest -> why it stayed after all

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "kept": self.kept,
            "candidates": [
                {"digest": c.digest, "shas": c.shas, "created_at": c.created_at.isoformat()}
                for c in self.prune
            ],
            "pruned": self.pruned,
            "skipped": self.skipped,
        }


def references(ledger: Ledger, image: str, keep: int, in_use: dict[str, str]) -> dict[str, list[str]]:
    """Every digest of `image` something references, with what: pointers, pins, instances, history."""
    found: dict[str, list[str]] = {}
    for pointer in envs.pointers(ledger, image):
        if pointer.digest:
            what = f"{image}.{pointer.stage}" + (" (pinned)" if pointer.pinned else "")
            found.setdefault(pointer.digest, []).append(what)
    for stage in envs.STAGES:
        recent: list[str] = []
        for event in reversed(envs.history(ledger, image, stage)):
            if len(recent) >= keep:
                break
            if event.to_digest and event.to_digest not in recent:
                recent.append(event.to_digest)
        for digest in recent:
            found.setdefault(digest, []).append(f"last {keep} of {image}.{stage}")
    for digest, instance in in_use.items():
        found.setdefault(digest, []).append(f"instance {instance}")
    return found


def plan_image(
    ledger: Ledger, image: str, *, keep: int, older_than: timedelta | None, in_use: dict[str, str]
) -> ImagePlan:
    plan = ImagePlan(image=image, kept=references(ledger, image, keep, in_use))
    by_digest: dict[str, list[Version]] = {}
    for version in ledger.list_versions(image):
        if version.pruned_at is None:
            by_digest.setdefault(version.digest, []).append(version)
    at = now()
    for digest, versions in by_digest.items():
        if digest in plan.kept:
            continue
        newest = max(v.created_at for v in versions)
        if older_than is not None and newest > at - older_than:
            plan.kept.setdefault(digest, []).append(f"newer than {_days(older_than)}")
            continue
        if newest > at - UNTESTED_GRACE and not test_runs_for(ledger, image, digest):
            plan.kept.setdefault(digest, []).append(f"not tested yet (kept {_days(UNTESTED_GRACE)})")
            continue
        plan.prune.append(
            Candidate(image=image, digest=digest, shas=[v.sha for v in versions], created_at=newest)
        )
    return plan


def prune(
    settings: Settings,
    ledger: Ledger,
    publisher: Publisher,
    images: Iterable[str],
    *,
    keep: int,
    older_than: timedelta | None,
    in_use: dict[str, str],
    dry_run: bool,
) -> list[ImagePlan]:
    """Plan (and unless `dry_run`, delete) per image, under the image's pipeline lock."""
    plans = []
    for image in images:
        with image_lock(settings, ledger, image):
            plan = plan_image(ledger, image, keep=keep, older_than=older_than, in_use=in_use)
            if not dry_run:
                _delete(ledger, publisher, plan)
        plans.append(plan)
    return plans


def _days(span: timedelta) -> str:
    return f"{span.days} day{'s' if span.days != 1 else ''}" if span.days else str(span)


def claim(ledger: Ledger, candidate: Candidate) -> str | None:
    """Mark the candidate pruned under the image's ledger lock; why not, when a pointer now holds it."""
    import sqlalchemy as sa

    from pipeline.ledger.db import environments, versions

    with ledger.transaction() as conn:
        envs.lock_image(conn, candidate.image)
        held: Iterable[str] = conn.execute(
            sa.select(environments.c.stage).where(
                environments.c.image == candidate.image, environments.c.digest == candidate.digest
            )
        ).scalars()
        stages = sorted(set(held))
        if stages:
            return f"{candidate.image}.{stages[0]} points at {candidate.digest[:19]} now; kept"
        conn.execute(
            versions.update()
            .where(versions.c.image == candidate.image, versions.c.digest == candidate.digest)
            .values(pruned_at=now())
        )
    return None


def _delete(ledger: Ledger, publisher: Publisher, plan: ImagePlan) -> None:
    if plan.prune:
        publisher.require()
    for candidate in plan.prune:
        why = claim(ledger, candidate)
        if why is not None:
            plan.skipped[candidate.digest] = why
            output.warn(why)
            continue
        try:
            gone = not publisher.delete(candidate.image, candidate.digest, candidate.tags())
        except Refused as e:
            ledger.set_pruned(candidate.image, candidate.digest, None)
            plan.skipped[candidate.digest] = str(e)
            output.warn(str(e))
            continue
        except BaseException:
            ledger.set_pruned(candidate.image, candidate.digest, None)
            raise
        plan.pruned.append(candidate.digest)
        note = " (already gone from the registry)" if gone else ""
        output.info(
            f"pruned {publisher.image_ref(candidate.image, candidate.digest)}{note}: "
            f"{', '.join(sha[:12] for sha in candidate.shas)}"
        )
