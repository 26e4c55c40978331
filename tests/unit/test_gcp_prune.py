"""Retention on Artifact Registry: only unreferenced versions go, and never one another tag names.

The real Artifact Registry client (REST) talks to the stateful fake; the requests it
sends are asserted. Four versions: B is staging's (kept, untouched), A and D are
unreferenced (A carries only its `<sha>` tag, D none), C is unreferenced by the ledger
but a user's tag `keep-me` names it (kept, its tags untouched).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from pipeline.ledger.db import Ledger
from pipeline.pipelines.retention import prune
from pipeline.publish.artifact_registry import ArtifactRegistryPublisher
from pipeline.settings import Settings
from tests.arversions import DIGESTS, IMAGE, PACKAGE, REPOSITORY, SHAS, make_version, point
from tests.gcpfakes.artifactregistry import WRITER, FakeArtifactRegistry

pytest_plugins = ["tests.arfixtures"]


def test_prune_deletes_only_unreferenced_versions_no_other_tag_names(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for name in "ABCD":
        ledger.record_version(make_version(name))
    ar_fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    ar_fake.push(REPOSITORY, IMAGE, DIGESTS["B"], tags=(SHAS["B"], "staging"))
    ar_fake.push(REPOSITORY, IMAGE, DIGESTS["C"], tags=(SHAS["C"], "keep-me"))
    ar_fake.push(REPOSITORY, IMAGE, DIGESTS["D"])
    point(ledger, "staging", "B")
    publisher = ArtifactRegistryPublisher.for_settings(ar_settings)

    dry = prune(ar_settings, ledger, publisher, [IMAGE], keep=1, older_than=None, in_use={}, dry_run=True)
    assert sorted(c.digest for c in dry[0].prune) == sorted(DIGESTS[n] for n in "ACD")
    assert not ar_fake.sent("DELETE")

    plans = prune(ar_settings, ledger, publisher, [IMAGE], keep=1, older_than=None, in_use={}, dry_run=False)
    plan = plans[0]
    assert sorted(plan.pruned) == sorted([DIGESTS["A"], DIGESTS["D"]])
    assert list(plan.skipped) == [DIGESTS["C"]] and "keep-me" in plan.skipped[DIGESTS["C"]]

    deletes = [r.path for r in ar_fake.sent("DELETE")]
    assert deletes == [
        f"/v1/{PACKAGE}/tags/{SHAS['A']}",
        f"/v1/{PACKAGE}/versions/{DIGESTS['A']}",
        f"/v1/{PACKAGE}/versions/{DIGESTS['D']}",
    ]
    assert all(r.param("force") in {"", "false"} for r in ar_fake.sent("DELETE"))
    # The versions' tags were read, each by a filter on its version, before anything was deleted.
    filters = [r.param("filter") for r in ar_fake.sent("GET", f"/v1/{PACKAGE}/tags")]
    assert f'version="{PACKAGE}/versions/{DIGESTS["C"]}"' in filters
    assert ar_fake.tags_of(REPOSITORY, IMAGE) == {
        SHAS["B"]: DIGESTS["B"],
        "staging": DIGESTS["B"],
        SHAS["C"]: DIGESTS["C"],
        "keep-me": DIGESTS["C"],
    }
    assert set(ar_fake.packages[(REPOSITORY, IMAGE)].versions) == {DIGESTS["B"], DIGESTS["C"]}

    marked = {n: ledger.get_version(IMAGE, SHAS[n]) for n in "ABCD"}
    assert {n: v is not None and v.pruned_at is not None for n, v in marked.items()} == {
        "A": True,
        "B": False,
        "C": False,
        "D": True,
    }
    # A second prune finds nothing new to delete (C is still named by its user's tag).
    again = prune(ar_settings, ledger, publisher, [IMAGE], keep=1, older_than=None, in_use={}, dry_run=False)
    assert again[0].pruned == [] and list(again[0].skipped) == [DIGESTS["C"]]
    assert len(ar_fake.sent("DELETE")) == 3


def _one_unreferenced(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> tuple[Ledger, ArtifactRegistryPublisher, Settings]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record_version(make_version("A"))
    ar_fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    return ledger, ArtifactRegistryPublisher.for_settings(ar_settings), ar_settings


def test_prune_without_the_delete_permission_deletes_nothing(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    from pipeline.errors import Unavailable

    ledger, publisher, ar_settings = _one_unreferenced(ar_fake, ar_settings, tmp_path)
    ar_fake.granted = WRITER  # may move tags, may not delete versions
    with pytest.raises(Unavailable, match=r"lacks artifactregistry\.versions\.delete; nothing was deleted"):
        prune(ar_settings, ledger, publisher, [IMAGE], keep=0, older_than=None, in_use={}, dry_run=False)
    assert not ar_fake.sent("DELETE")
    assert ar_fake.tags_of(REPOSITORY, IMAGE) == {SHAS["A"]: DIGESTS["A"]}
    version = ledger.get_version(IMAGE, SHAS["A"])
    assert version is not None and version.pruned_at is None


def test_a_failed_version_delete_puts_its_tags_back(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    from pipeline.errors import EnvctlError

    ledger, publisher, ar_settings = _one_unreferenced(ar_fake, ar_settings, tmp_path)
    ar_fake.fail_next["delete_version"] = "INTERNAL"
    with pytest.raises(EnvctlError):
        prune(ar_settings, ledger, publisher, [IMAGE], keep=0, older_than=None, in_use={}, dry_run=False)
    assert [r.path for r in ar_fake.sent("DELETE")] == [
        f"/v1/{PACKAGE}/tags/{SHAS['A']}",
        f"/v1/{PACKAGE}/versions/{DIGESTS['A']}",
    ]
    assert ar_fake.tags_of(REPOSITORY, IMAGE) == {SHAS["A"]: DIGESTS["A"]}  # re-created
    version = ledger.get_version(IMAGE, SHAS["A"])
    assert version is not None and version.pruned_at is None
