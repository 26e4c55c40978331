"""One image's versions A..F on a fake Artifact Registry, for the retention tests.

The versions and pointer moves; the fixtures are in tests/arfixtures.py.
"""

from __future__ import annotations

from datetime import timedelta

from pipeline.ledger import pointers
from pipeline.ledger.db import Ledger, Version, now
from tests.ledgerfacts import move

IMAGE = "team.task"
REPOSITORY = "projects/proj/locations/europe-west4/repositories/repo"
REGISTRY = "europe-west4-docker.pkg.dev/proj/repo"
PACKAGE = f"{REPOSITORY}/packages/{IMAGE}"
NAMES = "ABCDEF"
SHAS = {name: name.lower() * 40 for name in NAMES}
DIGESTS = {name: "sha256:" + f"{ord(name):02x}" * 32 for name in NAMES}
OLD = timedelta(days=10)  # past the untested versions' grace


def make_version(name: str, age: timedelta = OLD, **labels: str) -> Version:
    return Version(
        image=IMAGE,
        sha=SHAS[name],
        tree="0" * 40,
        inputs_key=name,
        build_key=name,
        digest=DIGESTS[name],
        image_ref=f"{REGISTRY}/{IMAGE}@{DIGESTS[name]}",
        size=None,
        reused_from=None,
        labels=labels,
        sbom={},
        created_at=now() - age,
    )


def point(ledger: Ledger, stage: pointers.Stage, name: str) -> None:
    """Move `stage` of IMAGE to version `name` (a promotion by `tester`)."""
    move(ledger, IMAGE, stage, SHAS[name], DIGESTS[name])
