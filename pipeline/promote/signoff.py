"""`envctl signoff`: a tester records that they checked what staging points at now.

The sign-off binds to the staging version's digest (the bytes production will get),
with who (`moves.actor`: ENVCTL_ACTOR, git user.name, the OS user) and when.
"""

from __future__ import annotations

from pipeline.errors import UsageError
from pipeline.ledger import pointers as envs
from pipeline.ledger import signoffs
from pipeline.ledger.db import Ledger
from pipeline.ledger.signoffs import Signoff
from pipeline.promote.moves import actor
from pipeline.settings import Settings


def sign(settings: Settings, ledger: Ledger, env_id: str, *, reason: str | None) -> tuple[Signoff, list[str]]:
    """Record a sign-off of ENV_ID (an IMAGE.staging) and return it with everyone who signed that digest."""
    env = envs.parse_env_id(env_id)
    if env.stage != "staging":
        raise UsageError(
            f"{env} is not a staging environment; testers sign off what staging runs: "
            f"`envctl signoff {env.image}.staging`"
        )
    envs.require_known(ledger, env.image)
    pointer = envs.current(ledger, env.image, "staging")
    if pointer is None or pointer.sha is None or pointer.digest is None:
        raise UsageError(f"{env} points at no version yet; there is nothing to sign off")
    who = actor(settings)
    done = signoffs.record(
        ledger, image=env.image, sha=pointer.sha, digest=pointer.digest, actor=who, reason=reason
    )
    return done, signoffs.people(signoffs.for_digest(ledger, env.image, pointer.digest))
