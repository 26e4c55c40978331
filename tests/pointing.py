"""Ledger facts the tests set up directly: a pointer moved, the settings of a fake Artifact Registry."""

from __future__ import annotations

from pathlib import Path

from pipeline.ledger.db import Ledger
from pipeline.ledger.pointers import Change, Stage, Who, compare_and_swap


def move(ledger: Ledger, image: str, stage: Stage, sha: str, digest: str, *, actor: str = "tester") -> None:
    """Point `stage` of `image` at (`sha`, `digest`), recorded as a promotion by `actor`."""
    who = Who(actor=actor)
    compare_and_swap(
        ledger,
        image,
        lambda seen: [Change(expected=seen[stage], sha=sha, digest=digest, action="promote", who=who)],
    )


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
