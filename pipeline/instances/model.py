"""What every instance backend shares: names, the environment's current target, staleness."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UsageError, shown
from pipeline.ledger import pointers as envs
from pipeline.ledger.db import Ledger
from pipeline.ledger.pointers import EnvId, Pointer, parse_env_id

# Docker container names and Workbench instance IDs both accept this: lowercase
# letters, digits and '-', starting with a letter, not ending with '-'.
_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"{shown(name)} is not an instance name: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-' (e.g. alice-nlp)"
        )
    return name


@dataclass(frozen=True)
class Target:
    """The version an environment points to now: what a new or restarted instance runs."""

    env: EnvId
    sha: str
    digest: str


def target(ledger: Ledger, env_id: str) -> Target:
    """The environment's current version; `UsageError` for an unknown or empty environment."""
    env = parse_env_id(env_id)
    envs.require_known(ledger, env.image)
    pointer = envs.current(ledger, env.image, env.stage)
    if pointer is None or pointer.sha is None or pointer.digest is None:
        raise UsageError(
            f"environment {env} has no version yet; point it at one with `envctl promote {env} --rev REV`"
        )
    return Target(env, pointer.sha, pointer.digest)


def current_digest(ledger: Ledger, env_id: str) -> str | None:
    """Where the environment points now, or None when this ledger doesn't know it."""
    try:
        env = parse_env_id(env_id)
    except UsageError:
        return None
    pointer: Pointer | None = envs.current(ledger, env.image, env.stage)
    return pointer.digest if pointer else None


def sha_of(ledger: Ledger, env_id: str, digest: str) -> str | None:
    """The commit of the version with `digest`: the environment's own if it points there, else the newest."""
    try:
        env = parse_env_id(env_id)
    except UsageError:
        return None
    pointer = envs.current(ledger, env.image, env.stage)
    if pointer is not None and pointer.digest == digest:
        return pointer.sha
    found = [v.sha for v in ledger.list_versions(env.image) if v.digest == digest]
    return found[-1] if found else None


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One instance as its backend reports it; `current_digest` is the environment's now."""

    name: str
    environment: str
    digest: str
    image_ref: str
    status: str
    url: str | None
    volume: str | None
    created_at: str | None
    current_digest: str | None = None
    sha: str | None = None  # the commit of the version it runs (testers: what did I try?)

    @property
    def stale(self) -> bool | None:
        """True when the environment moved since the instance started; None when unknown."""
        if self.current_digest is None:
            return None
        return self.current_digest != self.digest

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "environment": self.environment,
            "digest": self.digest,
            "sha": self.sha,
            "image_ref": self.image_ref,
            "status": self.status,
            "url": self.url,
            "volume": self.volume,
            "created_at": self.created_at,
            "current_digest": self.current_digest,
            "stale": self.stale,
        }
