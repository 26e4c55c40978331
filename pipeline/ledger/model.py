"""The ledger's record types and names, importable without SQLAlchemy.

Environment IDs, stages, pointers, events, versions and test runs as the commands see them. The database
code (`pipeline.ledger.db`, `pipeline.ledger.pointers`) and the quick SQLite reads
(`pipeline.ledger.quick`) both build these, so a read command answers the same either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pipeline.errors import UsageError, shown
from pipeline.spec import names

Stage = Literal["staging", "production", "fallback"]
STAGES: tuple[Stage, ...] = get_args(Stage)

#: The schema version the quick reads understand: equal to `len(db.MIGRATIONS)`
#: (tests/unit/test_ledger_quick.py checks). A ledger at any other version is read
#: through SQLAlchemy, which migrates it or says to upgrade envctl.
SCHEMA_VERSION = 8


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _valid_image(image: str) -> bool:
    try:
        names.check_image_name(image)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class EnvId:
    image: str
    stage: Stage

    def __str__(self) -> str:
        return f"{self.image}.{self.stage}"


def parse_env_id(text: str) -> EnvId:
    """`nlp.keras-batch.production` into (image, stage); a bad ID is a `UsageError`."""
    image, _, stage = text.rpartition(".")
    if not image or not _valid_image(image):
        raise UsageError(
            f"{shown(text)} is not an environment ID; write IMAGE.STAGE, e.g. nlp.keras-batch.production"
        )
    for known in STAGES:
        if stage == known:
            return EnvId(image, known)
    raise UsageError(f"unknown stage {shown(stage)} in {shown(text)}; the stages are {', '.join(STAGES)}")


def check_image_name(image: str) -> str:
    if not _valid_image(image):
        raise UsageError(f"{shown(image)} is not an image name (TEAM.TASK, e.g. nlp.keras-batch)")
    return image


def unknown_image(image: str, known: list[str]) -> UsageError:
    """The error for an image the ledger never heard of, naming the known ones."""
    listed = ", ".join(known) if known else "none yet; build one with `envctl build IMAGE --rev REV`"
    return UsageError(f"unknown image {image!r}; images in the ledger: {listed}")


@dataclass(frozen=True, kw_only=True)
class Pointer:
    """Where one environment points now; `generation` counts its writes (0: never set)."""

    image: str
    stage: Stage
    sha: str | None
    digest: str | None
    generation: int
    pinned: bool
    pin_reason: str | None
    pinned_by: str | None
    updated_at: datetime | None

    @classmethod
    def empty(cls, image: str, stage: Stage) -> Pointer:
        return cls(
            image=image,
            stage=stage,
            sha=None,
            digest=None,
            generation=0,
            pinned=False,
            pin_reason=None,
            pinned_by=None,
            updated_at=None,
        )

    @classmethod
    def from_row(cls, row: Any) -> Pointer:
        stage = parse_env_id(f"{row.image}.{row.stage}").stage
        return cls(
            image=row.image,
            stage=stage,
            sha=row.sha,
            digest=row.digest,
            generation=int(row.generation),
            pinned=bool(row.pinned),
            pin_reason=row.pin_reason,
            pinned_by=row.pinned_by,
            updated_at=_aware(row.updated_at) if row.updated_at else None,
        )


def distinct_people(actors: Iterable[str]) -> list[str]:
    """The distinct people of `actors` (names compared without case), in the order they first came."""
    seen: dict[str, str] = {}
    for actor in actors:
        seen.setdefault(actor.strip().casefold(), actor.strip())
    return list(seen.values())


def by_image_and_stage(found: list[Pointer]) -> list[Pointer]:
    return sorted(found, key=lambda p: (p.image, STAGES.index(p.stage)))


@dataclass(frozen=True, kw_only=True)
class Event:
    id: int
    at: datetime
    image: str
    stage: Stage
    action: str
    from_sha: str | None
    to_sha: str | None
    from_digest: str | None
    to_digest: str | None
    actor: str
    ci_run_id: str | None
    reason: str | None
    forced: bool

    @classmethod
    def from_row(cls, row: Any) -> Event:
        return cls(
            id=int(row.id),
            at=_aware(row.at),
            image=row.image,
            stage=parse_env_id(f"{row.image}.{row.stage}").stage,
            action=row.action,
            from_sha=row.from_sha,
            to_sha=row.to_sha,
            from_digest=row.from_digest,
            to_digest=row.to_digest,
            actor=row.actor,
            ci_run_id=row.ci_run_id,
            reason=row.reason,
            forced=bool(row.forced),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "environment": f"{self.image}.{self.stage}",
            "image": self.image,
            "stage": self.stage,
            "action": self.action,
            "from_sha": self.from_sha,
            "to_sha": self.to_sha,
            "from_digest": self.from_digest,
            "to_digest": self.to_digest,
            "actor": self.actor,
            "ci_run_id": self.ci_run_id,
            "reason": self.reason,
            "forced": self.forced,
        }


# The label of a version built by a base refresh: the commit it rebuilds on the moved base.
REFRESH_LABEL = "org.envctl.refresh-of"


def reused_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels a later version reusing these bytes records: all but the refresh mark.

    The refresh label names the commit one refresh build rebuilt; a later commit that
    reuses the same bytes is a version of its own commit, not of that one.
    """
    return {k: v for k, v in labels.items() if k != REFRESH_LABEL}


@dataclass(frozen=True, kw_only=True)
class Version:
    image: str
    sha: str
    tree: str
    inputs_key: str
    build_key: str
    digest: str
    image_ref: str
    size: int | None
    reused_from: str | None
    labels: dict[str, str]
    sbom: dict[str, Any]
    created_at: datetime
    test_key: str | None = None  # hash of the test inputs; None on versions older than it
    pruned_at: datetime | None = None  # `envctl prune` deleted it from the registry

    @property
    def origin(self) -> str:
        """The commit this version is of: its own, or the one a base refresh rebuilt."""
        return self.labels.get(REFRESH_LABEL) or self.sha

    @classmethod
    def from_row(cls, row: Any) -> Version:
        return cls(
            image=row.image,
            sha=row.sha,
            tree=row.tree,
            inputs_key=row.inputs_key,
            build_key=row.build_key,
            digest=row.digest,
            image_ref=row.image_ref,
            size=row.size,
            reused_from=row.reused_from,
            labels=json.loads(row.labels or "{}"),
            sbom=json.loads(row.sbom or "{}"),
            created_at=_aware(row.created_at),
            test_key=row.test_key,
            pruned_at=_aware(row.pruned_at) if row.pruned_at else None,
        )


@dataclass(frozen=True, kw_only=True)
class TestRun:
    __test__ = False  # not a pytest class
    """Evidence: one test run of one version, bound to its digest."""

    run_id: str
    image: str
    sha: str
    digest: str
    passed: bool
    summary: dict[str, Any]
    artifacts: str
    started_at: datetime
    finished_at: datetime
    test_key: str | None = None  # hash of the test inputs; None on runs older than it
    ran_on: dict[str, Any] | None = None  # where it ran; None on runs older than it (local CPU)

    @classmethod
    def from_row(cls, row: Any) -> TestRun:
        return cls(
            run_id=row.run_id,
            image=row.image,
            sha=row.sha,
            digest=row.digest,
            passed=bool(row.passed),
            summary=json.loads(row.summary or "{}"),
            artifacts=row.artifacts,
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            test_key=row.test_key,
            ran_on=json.loads(row.ran_on) if row.ran_on else None,
        )
