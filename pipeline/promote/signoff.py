"""`envctl signoff`: a tester records that they checked one staging version, by its digest.

Without `--rev` the sign-off binds to what staging points at when the ledger records
it (read again inside the transaction, under the image's lock); with `--rev SHA` to the
digest of that tested version, which is what the tester tried when staging has moved
on since. Who: `moves.actor` (ENVCTL_ACTOR, git user.name, the OS user), self-declared.
"""

from __future__ import annotations

import os

from pipeline.errors import UsageError
from pipeline.ledger import pointers as envs
from pipeline.ledger import signoffs
from pipeline.ledger.db import Ledger
from pipeline.ledger.signoffs import Signoff
from pipeline.promote.moves import actor, resolve_version
from pipeline.promote.policy import evidence_for
from pipeline.settings import Settings


def signer(settings: Settings) -> str:
    """Who signs: a person, not CI; `UsageError` for a CI run or a blank or too long name."""
    if settings.ci_run_id or os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}:
        raise UsageError("a sign-off is a person's; CI (ENVCTL_CI_RUN_ID or CI is set) may not sign off")
    return actor(settings)  # not blank, at most the ledger's 256 characters


def sign(
    settings: Settings, ledger: Ledger, env_id: str, *, reason: str | None, rev: str | None = None
) -> tuple[Signoff, list[str]]:
    """Record a sign-off of ENV_ID (an IMAGE.staging) and return it with everyone who signed that digest."""
    env = envs.parse_env_id(env_id)
    if env.stage != "staging":
        raise UsageError(
            f"{env} is not a staging environment; testers sign off what staging runs: "
            f"`envctl signoff {env.image}.staging`"
        )
    who = signer(settings)
    envs.require_known(ledger, env.image)
    chosen = None
    if rev is not None:
        chosen = resolve_version(settings, ledger, env.image, rev)
        if not evidence_for(ledger, chosen).passed:
            raise UsageError(
                f"{env.image} {chosen.sha[:12]} ({chosen.digest[:19]}) has not passed its tests; "
                "testers sign off only tested versions"
            )
    with ledger.transaction() as conn:
        envs.lock_image(conn, env.image)
        if chosen is not None:
            sha, digest = chosen.sha, chosen.digest
        else:
            pointer = envs.read(conn, env.image, "staging")
            if pointer.sha is None or pointer.digest is None:
                raise UsageError(f"{env} points at no version yet; there is nothing to sign off")
            sha, digest = pointer.sha, pointer.digest
        done = signoffs.insert(conn, image=env.image, sha=sha, digest=digest, actor=who, reason=reason)
    return done, signoffs.people(signoffs.for_digest(ledger, env.image, digest))
