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
    fake: FakeArtifactRegistry, settings: Settings, tmp_path: Path
) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for name in "ABCD":
        ledger.record_version(make_version(name))
    fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    fake.push(REPOSITORY, IMAGE, DIGESTS["B"], tags=(SHAS["B"], "staging"))
    fake.push(REPOSITORY, IMAGE, DIGESTS["C"], tags=(SHAS["C"], "keep-me"))
    fake.push(REPOSITORY, IMAGE, DIGESTS["D"])
    point(ledger, "staging", "B")
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
    fake: FakeArtifactRegistry, settings: Settings, tmp_path: Path
) -> tuple[Ledger, ArtifactRegistryPublisher, Settings]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record_version(make_version("A"))
    fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    return ledger, ArtifactRegistryPublisher.for_settings(settings), settings


def test_prune_without_the_delete_permission_deletes_nothing(
    fake: FakeArtifactRegistry, settings: Settings, tmp_path: Path
) -> None:
    from pipeline.errors import Unavailable

    ledger, publisher, settings = _one_unreferenced(fake, settings, tmp_path)
    fake.granted = WRITER  # may move tags, may not delete versions
    with pytest.raises(Unavailable, match=r"lacks artifactregistry\.versions\.delete; nothing was deleted"):
        prune(settings, ledger, publisher, [IMAGE], keep=0, older_than=None, in_use={}, dry_run=False)
    assert not fake.sent("DELETE")
    assert fake.tags_of(REPOSITORY, IMAGE) == {SHAS["A"]: DIGESTS["A"]}
    version = ledger.get_version(IMAGE, SHAS["A"])
    assert version is not None and version.pruned_at is None


def test_a_failed_version_delete_puts_its_tags_back(
    fake: FakeArtifactRegistry, settings: Settings, tmp_path: Path
) -> None:
    from pipeline.errors import EnvctlError

    ledger, publisher, settings = _one_unreferenced(fake, settings, tmp_path)
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
