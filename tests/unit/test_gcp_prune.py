"""Retention on Artifact Registry: only unreferenced versions go, and never one another tag names.

The real Artifact Registry client (REST) talks to the stateful fake; the requests it
sends are asserted. Four versions: B is staging's (kept, untouched), A and D are
unreferenced (A carries only its `<sha>` tag, D none), C is unreferenced by the ledger
but a user's tag `keep-me` names it (kept, its tags untouched).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from pipeline.ledger import pointers
from pipeline.ledger.db import Ledger, Version, now
from pipeline.ledger.pointers import Change, Who
from pipeline.pipelines.retention import prune
from pipeline.publish.artifact_registry import ArtifactRegistryPublisher
from pipeline.settings import Settings, load
from tests.gcpfakes.artifactregistry import REPO_ADMIN, WRITER, FakeArtifactRegistry

IMAGE = "team.task"
REPOSITORY = "projects/proj/locations/europe-west4/repositories/repo"
REGISTRY = "europe-west4-docker.pkg.dev/proj/repo"
PACKAGE = f"{REPOSITORY}/packages/{IMAGE}"
SHAS = {name: name.lower() * 40 for name in "ABCD"}
DIGESTS = {name: "sha256:" + f"{ord(name):02x}" * 32 for name in "ABCD"}


def _version(name: str) -> Version:
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
        labels={},
        sbom={},
        created_at=now() - timedelta(days=10),  # past the untested versions' grace
    )


@pytest.fixture
def fake() -> Iterator[FakeArtifactRegistry]:
    with FakeArtifactRegistry(REPOSITORY) as server:
        server.granted = REPO_ADMIN
        yield server


def test_prune_deletes_only_unreferenced_versions_no_other_tag_names(
    fake: FakeArtifactRegistry, tmp_path: Path
) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for name in "ABCD":
        ledger.record_version(_version(name))
    fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    fake.push(REPOSITORY, IMAGE, DIGESTS["B"], tags=(SHAS["B"], "staging"))
    fake.push(REPOSITORY, IMAGE, DIGESTS["C"], tags=(SHAS["C"], "keep-me"))
    fake.push(REPOSITORY, IMAGE, DIGESTS["D"])
    who = Who(actor="tester", ci_run_id=None, reason=None, forced=False)
    pointers.compare_and_swap(
        ledger,
        IMAGE,
        lambda seen: [
            Change(expected=seen["staging"], sha=SHAS["B"], digest=DIGESTS["B"], action="promote", who=who)
        ],
    )
    settings = load(
        repo=tmp_path,
        env={
            "ENVCTL_BACKEND": "gcp",
            "ENVCTL_REGISTRY": REGISTRY,
            "ENVCTL_GCP_ENDPOINTS": f"artifactregistry={fake.endpoint}",
            "ENVCTL_GCP_TIMEOUT": "5",
            "ENVCTL_GCP_RETRY": "0",
            "ENVCTL_STATE_DIR": str(tmp_path / "state"),
        },
    )
    publisher = ArtifactRegistryPublisher.for_settings(settings)

    dry = prune(settings, ledger, publisher, [IMAGE], keep=1, older_than=None, in_use={}, dry_run=True)
    assert sorted(c.digest for c in dry[0].prune) == sorted(DIGESTS[n] for n in "ACD")
    assert not fake.sent("DELETE")

    plans = prune(settings, ledger, publisher, [IMAGE], keep=1, older_than=None, in_use={}, dry_run=False)
    plan = plans[0]
    assert sorted(plan.pruned) == sorted([DIGESTS["A"], DIGESTS["D"]])
    assert list(plan.skipped) == [DIGESTS["C"]] and "keep-me" in plan.skipped[DIGESTS["C"]]

    deletes = [r.path for r in fake.sent("DELETE")]
    assert deletes == [
        f"/v1/{PACKAGE}/tags/{SHAS['A']}",
        f"/v1/{PACKAGE}/versions/{DIGESTS['A']}",
        f"/v1/{PACKAGE}/versions/{DIGESTS['D']}",
    ]
    assert all(r.param("force") in {"", "false"} for r in fake.sent("DELETE"))
    # The versions' tags were read, each by a filter on its version, before anything was deleted.
    filters = [r.param("filter") for r in fake.sent("GET", f"/v1/{PACKAGE}/tags")]
    assert f'version="{PACKAGE}/versions/{DIGESTS["C"]}"' in filters
    assert fake.tags_of(REPOSITORY, IMAGE) == {
        SHAS["B"]: DIGESTS["B"],
        "staging": DIGESTS["B"],
        SHAS["C"]: DIGESTS["C"],
        "keep-me": DIGESTS["C"],
    }
    assert set(fake.packages[(REPOSITORY, IMAGE)].versions) == {DIGESTS["B"], DIGESTS["C"]}

    marked = {n: ledger.get_version(IMAGE, SHAS[n]) for n in "ABCD"}
    assert {n: v is not None and v.pruned_at is not None for n, v in marked.items()} == {
        "A": True,
        "B": False,
        "C": False,
        "D": True,
    }
    # A second prune finds nothing new to delete (C is still named by its user's tag).
    again = prune(settings, ledger, publisher, [IMAGE], keep=1, older_than=None, in_use={}, dry_run=False)
    assert again[0].pruned == [] and list(again[0].skipped) == [DIGESTS["C"]]
    assert len(fake.sent("DELETE")) == 3


def _one_unreferenced(
    fake: FakeArtifactRegistry, tmp_path: Path
) -> tuple[Ledger, ArtifactRegistryPublisher, Settings]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record_version(_version("A"))
    fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    settings = load(
        repo=tmp_path,
        env={
            "ENVCTL_BACKEND": "gcp",
            "ENVCTL_REGISTRY": REGISTRY,
            "ENVCTL_GCP_ENDPOINTS": f"artifactregistry={fake.endpoint}",
            "ENVCTL_GCP_TIMEOUT": "5",
            "ENVCTL_GCP_RETRY": "0",
            "ENVCTL_STATE_DIR": str(tmp_path / "state"),
        },
    )
    return ledger, ArtifactRegistryPublisher.for_settings(settings), settings


def test_prune_without_the_delete_permission_deletes_nothing(
    fake: FakeArtifactRegistry, tmp_path: Path
) -> None:
    from pipeline.errors import Unavailable

    ledger, publisher, settings = _one_unreferenced(fake, tmp_path)
    fake.granted = WRITER  # may move tags, may not delete versions
    with pytest.raises(Unavailable, match=r"lacks artifactregistry\.versions\.delete; nothing was deleted"):
        prune(settings, ledger, publisher, [IMAGE], keep=0, older_than=None, in_use={}, dry_run=False)
    assert not fake.sent("DELETE")
    assert fake.tags_of(REPOSITORY, IMAGE) == {SHAS["A"]: DIGESTS["A"]}
    version = ledger.get_version(IMAGE, SHAS["A"])
    assert version is not None and version.pruned_at is None


def test_a_failed_version_delete_puts_its_tags_back(fake: FakeArtifactRegistry, tmp_path: Path) -> None:
    from pipeline.errors import EnvctlError

    ledger, publisher, settings = _one_unreferenced(fake, tmp_path)
    fake.fail_next["delete_version"] = "INTERNAL"
    with pytest.raises(EnvctlError):
        prune(settings, ledger, publisher, [IMAGE], keep=0, older_than=None, in_use={}, dry_run=False)
    assert [r.path for r in fake.sent("DELETE")] == [
        f"/v1/{PACKAGE}/tags/{SHAS['A']}",
        f"/v1/{PACKAGE}/versions/{DIGESTS['A']}",
    ]
    assert fake.tags_of(REPOSITORY, IMAGE) == {SHAS["A"]: DIGESTS["A"]}  # re-created
    version = ledger.get_version(IMAGE, SHAS["A"])
    assert version is not None and version.pruned_at is None
