"""Retention's rules and its race with pointer moves, on a real SQLite ledger and git repository.

The publisher is the real Artifact Registry client against the stateful fake (as in
test_gcp_prune); what it deletes is asserted on the ar_fake's state.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import git
import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from pipeline.errors import Refused
from pipeline.ledger import pointers
from pipeline.ledger.db import REFRESH_LABEL, Ledger, TestRun, now, record_test_run
from pipeline.ledger.pointers import EnvId
from pipeline.pipelines.flows import _retag
from pipeline.pipelines.retention import plan_image, prune
from pipeline.promote.moves import promote
from pipeline.publish.artifact_registry import ArtifactRegistryPublisher
from pipeline.settings import Settings
from pipeline.source import resolve
from tests.arversions import DIGESTS, IMAGE, OLD, REPOSITORY, SHAS, make_version, point
from tests.gcpfakes.artifactregistry import FakeArtifactRegistry

pytest_plugins = ["tests.arfixtures"]


def _tested(ledger: Ledger, name: str) -> None:
    at = now() - OLD
    record_test_run(
        ledger,
        TestRun(
            run_id=f"run-{name}",
            image=IMAGE,
            sha=SHAS[name],
            digest=DIGESTS[name],
            passed=True,
            summary={},
            artifacts="",
            started_at=at,
            finished_at=at,
        ),
    )


def _ledger(tmp_path: Path, ar_fake: FakeArtifactRegistry, names: str) -> Ledger:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for name in names:
        ledger.record_version(make_version(name))
        _tested(ledger, name)
        ar_fake.push(REPOSITORY, IMAGE, DIGESTS[name], tags=(SHAS[name],))
    return ledger


def test_plan_keeps_pointers_pins_instances_history_recent_and_untested(
    ar_fake: FakeArtifactRegistry, tmp_path: Path
) -> None:
    ledger = _ledger(tmp_path, ar_fake, "ABCD")
    # E: built an hour ago and tested; F: built 3 days ago, never tested (awaiting its test).
    ledger.record_version(make_version("E", timedelta(hours=1)))
    _tested(ledger, "E")
    ledger.record_version(make_version("F", timedelta(days=3)))
    point(ledger, "staging", "A")
    point(ledger, "staging", "B")  # A: one back in staging's history
    point(ledger, "production", "B")
    in_use = {DIGESTS["C"]: "alice-lab"}  # what `instances list` reads: C runs in an instance

    plan = plan_image(ledger, IMAGE, keep=2, older_than=timedelta(days=1), in_use=in_use)
    assert plan.kept[DIGESTS["B"]][:2] == [f"{IMAGE}.staging", f"{IMAGE}.production"]
    assert f"last 2 of {IMAGE}.staging" in plan.kept[DIGESTS["A"]]
    assert plan.kept[DIGESTS["C"]] == ["instance alice-lab"]
    assert plan.kept[DIGESTS["E"]] == ["newer than 1 day"]
    assert plan.kept[DIGESTS["F"]] == ["not tested yet (kept 7 days)"]
    assert [c.digest for c in plan.prune] == [DIGESTS["D"]]

    # --keep 1: staging's previous target A is no longer kept; --older-than 0: E goes too.
    plan = plan_image(ledger, IMAGE, keep=1, older_than=timedelta(0), in_use=in_use)
    assert sorted(c.digest for c in plan.prune) == sorted(DIGESTS[n] for n in "ADE")


def test_pinned_pointer_keeps_its_version(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    from pipeline.promote.moves import set_pin

    ledger = _ledger(tmp_path, ar_fake, "AB")
    point(ledger, "production", "A")
    assert set_pin(ar_settings, ledger, EnvId(IMAGE, "production"), pinned=True, reason="freeze")
    plan = plan_image(ledger, IMAGE, keep=0, older_than=None, in_use={})
    assert plan.kept == {DIGESTS["A"]: [f"{IMAGE}.production (pinned)"]}
    assert [c.digest for c in plan.prune] == [DIGESTS["B"]]


def test_promote_refuses_a_version_pruned_while_it_decided(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    ledger = _ledger(tmp_path, ar_fake, "AB")
    publisher = ArtifactRegistryPublisher.for_settings(ar_settings)

    def prune_meanwhile() -> None:
        plans = prune(
            ar_settings, ledger, publisher, [IMAGE], keep=0, older_than=None, in_use={}, dry_run=False
        )
        assert DIGESTS["A"] in plans[0].pruned

    with pytest.raises(Refused, match="pruned from the registry meanwhile"):
        promote(
            ar_settings,
            ledger,
            EnvId(IMAGE, "staging"),
            SHAS["A"],
            publisher=publisher,
            on_read=prune_meanwhile,
        )
    assert pointers.snapshot(ledger, IMAGE)["staging"].sha is None


def test_prune_keeps_a_candidate_a_pointer_took_after_the_plan(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    from pipeline.pipelines.retention import _delete

    ledger = _ledger(tmp_path, ar_fake, "AB")
    publisher = ArtifactRegistryPublisher.for_settings(ar_settings)
    plan = plan_image(ledger, IMAGE, keep=0, older_than=None, in_use={})
    assert sorted(c.digest for c in plan.prune) == sorted(DIGESTS.values())[:2]
    point(ledger, "staging", "A")  # a promotion lands between the plan and the delete
    _delete(ledger, publisher, plan)
    assert plan.pruned == [DIGESTS["B"]]
    assert "points at" in plan.skipped[DIGESTS["A"]]
    assert DIGESTS["A"] in ar_fake.packages[(REPOSITORY, IMAGE)].versions
    version = ledger.get_version(IMAGE, SHAS["A"])
    assert version is not None and version.pruned_at is None


def test_retag_of_a_refresh_build_drops_the_refresh_label_and_pruned_mark(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    repo = git.Repo.init(tmp_path / "repo")
    (tmp_path / "repo" / "f").write_text("x")
    repo.index.add(["f"])
    repo.index.commit("T")
    tree = resolve(repo, "HEAD")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    refreshed = ledger.record_version(make_version("A", **{REFRESH_LABEL: SHAS["B"]}))
    assert refreshed.origin == SHAS["B"]
    ar_fake.push(REPOSITORY, IMAGE, DIGESTS["A"], tags=(SHAS["A"],))
    publisher = ArtifactRegistryPublisher.for_settings(ar_settings)

    from dataclasses import replace

    version = _retag(ledger, publisher, tree, replace(refreshed, pruned_at=now()), "tests")
    assert version is not None and version.origin == tree.sha and version.pruned_at is None
    stored = ledger.get_version(IMAGE, tree.sha)
    assert stored is not None and REFRESH_LABEL not in stored.labels and stored.origin == tree.sha


def test_production_takes_an_unpruned_tested_version_before_a_pruned_one_of_the_commit(
    ar_fake: FakeArtifactRegistry, ar_settings: Settings, tmp_path: Path
) -> None:
    from dataclasses import replace

    from pipeline.build.stage import inputs_key
    from pipeline.pipelines.flows import production_image
    from pipeline.source import open_repo
    from pipeline.spec.model import load as load_spec
    from tests import minirepo

    mini = minirepo.make(tmp_path / "repo")
    tree = resolve(open_repo(mini.path), "staging")
    here = inputs_key(load_spec(tree, mini.image), tree)
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    own = replace(make_version("A"), image=mini.image, sha=tree.sha, inputs_key=here)  # P's own, pruned
    other = replace(make_version("B"), image=mini.image, inputs_key=here)  # same tree, still served
    for version in (own, other):
        ledger.record_version(version)
        at = now() - OLD
        record_test_run(
            ledger,
            TestRun(
                run_id=f"run-{version.sha[:4]}",
                image=mini.image,
                sha=version.sha,
                digest=version.digest,
                passed=True,
                summary={},
                artifacts="",
                started_at=at,
                finished_at=at,
            ),
        )
    ledger.set_pruned(mini.image, own.digest, now())
    ar_fake.push(REPOSITORY, mini.image, other.digest, tags=(other.sha,))

    verdict = production_image(ar_settings, tree, mini.image, ledger, "run-1")
    assert (verdict.state, verdict.sha, verdict.digest) == ("promoted", other.sha, other.digest)
