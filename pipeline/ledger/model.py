"""The ledger's record types and names, importable without SQLAlchemy.

Environment IDs, stages, pointers and events as the commands see them. The database
code (`pipeline.ledger.db`, `pipeline.ledger.pointers`) and the quick SQLite reads
(`pipeline.ledger.quick`) both build these, so a read command answers the same either way.
"""

from __future__ import annotations

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
