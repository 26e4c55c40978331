"""Testers' sign-offs: a person says they checked one staging version, by its digest.

Insert-only, like events: a sign-off is never updated or deleted. Production counts the
distinct people who signed the digest it is about to point at (`promote.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.ledger.db import Ledger, _aware, now, signoffs
from pipeline.ledger.model import distinct_people


@dataclass(frozen=True, kw_only=True)
class Signoff:
    at: datetime
    image: str
    sha: str
    digest: str
    actor: str
    reason: str | None

    @classmethod
    def from_row(cls, row: Any) -> Signoff:
        return cls(
            at=_aware(row.at),
            image=row.image,
            sha=row.sha,
            digest=row.digest,
            actor=row.actor,
            reason=row.reason,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "sha": self.sha,
            "digest": self.digest,
            "reason": self.reason,
        }


def record(ledger: Ledger, *, image: str, sha: str, digest: str, actor: str, reason: str | None) -> Signoff:
    with ledger.transaction() as conn:
        return insert(conn, image=image, sha=sha, digest=digest, actor=actor, reason=reason)


def insert(conn: Connection, *, image: str, sha: str, digest: str, actor: str, reason: str | None) -> Signoff:
    """Append a sign-off inside the caller's transaction."""
    signoff = Signoff(at=now(), image=image, sha=sha, digest=digest, actor=actor, reason=reason)
    conn.execute(
        signoffs.insert().values(
            at=signoff.at, image=image, sha=sha, digest=digest, actor=actor, reason=reason
        )
    )
    return signoff


def for_digest(ledger: Ledger, image: str, digest: str) -> list[Signoff]:
    """Every sign-off of one digest, oldest first."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(signoffs)
            .where(signoffs.c.image == image, signoffs.c.digest == digest)
            .order_by(signoffs.c.id)
        ).all()
    return [Signoff.from_row(r) for r in rows]


def for_image(ledger: Ledger, image: str) -> list[Signoff]:
    """Every sign-off of an image, oldest first."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(signoffs).where(signoffs.c.image == image).order_by(signoffs.c.id)
        ).all()
    return [Signoff.from_row(r) for r in rows]


def people(found: list[Signoff]) -> list[str]:
    """The distinct people who signed (names compared without case), in the order they first did."""
    return distinct_people(s.actor for s in found)
