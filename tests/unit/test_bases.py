"""Base watch rules: which tags are newer releases, and that `base.track` is no build input."""

from __future__ import annotations

from pathlib import Path

import git

from pipeline.build.bases import BaseWatch, BuiltOn, newer_releases
from pipeline.build.stage import Context, build_key, refresh_origin, refresh_trailer
from pipeline.source import WorkTree
from pipeline.spec.model import Spec, load
from tests.helpers import ROOT
from tests.ledgerfacts import move

TAGS = ["latest", "m124", "m125", "m126", "m99", "m127-rc", "py310", "m130"]


def test_newer_releases_compare_numbers_not_text() -> None:
    assert newer_releases(r"^m(\d+)$", "m125", TAGS) == ["m126", "m130"]
    assert newer_releases(r"^m(\d+)$", "m130", TAGS) == []
    # A tag that is no release itself (latest, local): every release, oldest first.
    assert newer_releases(r"^m(\d+)$", "latest", TAGS) == ["m99", "m124", "m125", "m126", "m130"]
    assert newer_releases(r"^py3(\d+)$", "py39", ["py39", "py310", "py311"]) == ["py310", "py311"]


def test_moved_only_for_another_digest_of_the_same_reference() -> None:
    row = BaseWatch(image="a.b", base="host/dlc/base:m1", current="sha256:new")
    row.built_on["staging"] = BuiltOn(
        sha="s" * 40, digest="sha256:v", base="host/dlc/base:m1", base_digest="sha256:old"
    )
    row.built_on["production"] = BuiltOn(
        sha="p" * 40, digest="sha256:w", base="host/dlc/other:m1", base_digest="sha256:old"
    )
    assert row.moved("staging") and not row.moved("production")
    assert row.to_json()["moved"] == {"staging": True, "production": False}
    row.current = None  # the base is not in its registry: no claim
    assert not row.moved("staging")


def test_track_is_not_a_build_input() -> None:
    spec = load(WorkTree(ROOT), "nlp.keras-batch")
    tracked = Spec.model_validate(
        {
            **spec.model_dump(),
            "build": {
                **spec.build.model_dump(),
                "base": {**spec.build.base.model_dump(), "track": r"^m(\d+)$"},
            },
        }
    )
    context = Context(files={}, dockerfile="Dockerfile")
    assert build_key(spec, context, "sha256:b", "local") == build_key(tracked, context, "sha256:b", "local")
    assert build_key(spec, context, "sha256:b", "local") != build_key(spec, context, "sha256:c", "local")


def test_refresh_origin_honours_only_envctls_refresh_commit(tmp_path: Path) -> None:
    from pipeline.pipelines.refresh import Refresh, commit
    from pipeline.source import resolve

    repo = git.Repo.init(tmp_path)
    (tmp_path / "f").write_text("x")
    repo.index.add(["f"])
    origin = repo.index.commit("S").hexsha
    refreshed = commit(repo, Refresh(origin=resolve(repo, origin), reasons={"team.task": "base moved"}))
    assert refresh_origin(repo.commit(refreshed)) == origin
    # A pushed commit that claims to be a refresh of S but changes the tree: ignored.
    (tmp_path / "f").write_text("y")
    repo.index.add(["f"])
    forged = repo.index.commit(f"mine\n\nEnvctl-Refresh-Of: {origin}\n").hexsha
    assert refresh_origin(repo.commit(forged)) is None
    # Same tree as S but another parent (not S itself): ignored too.
    other = repo.git.commit_tree(
        repo.commit(origin).tree.hexsha, "-p", forged, "-m", f"x\n\nEnvctl-Refresh-Of: {origin}\n"
    )
    assert refresh_origin(repo.commit(other)) is None
    assert refresh_trailer("a commit\n\nEnvctl-Refresh-Of: abc\n") is None
    assert refresh_trailer(f"a\n\nEnvctl-Refresh-Of: {'G' * 40}\n") is None
    assert refresh_trailer("a commit") is None


def test_refresh_plans_from_the_commit_a_refresh_rebuilt_even_when_this_clone_lacks_it(
    tmp_path: Path,
) -> None:
    """Staging holds S' (a refresh made in a Cloud Build clone, not here): plan from S."""
    from pipeline.build.bases import BASE_DIGEST, BASE_NAME
    from pipeline.ledger.db import REFRESH_LABEL, Ledger, Version, now
    from pipeline.pipelines import refresh
    from pipeline.source import open_repo, resolve
    from tests import minirepo

    mini = minirepo.make(tmp_path / "repo")
    repo = open_repo(mini.path)
    origin = resolve(repo, "staging")
    base = load(origin, mini.image).base_for("local")
    gone, digest = "e" * 40, "sha256:" + "d" * 64
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record_version(
        Version(
            image=mini.image,
            sha=gone,
            tree=origin.tree_sha,
            inputs_key="i",
            build_key="b",
            digest=digest,
            image_ref=f"r/{mini.image}@{digest}",
            size=None,
            reused_from=None,
            labels={REFRESH_LABEL: origin.sha, BASE_NAME: base, BASE_DIGEST: "sha256:" + "1" * 64},
            sbom={},
            created_at=now(),
        )
    )
    move(ledger, mini.image, "staging", gone, digest)
    moved = "sha256:" + "2" * 64

    plans, _rows = refresh.plan(ledger, repo, [mini.image], "local", lambda ref, tags: (moved, []))
    (plan,) = plans
    assert plan.origin.sha == origin.sha and list(plan.reasons) == [mini.image]
    again = refresh.commit(repo, plan)
    assert repo.commit(again).parents[0].hexsha == origin.sha
    assert refresh_origin(repo.commit(again)) == origin.sha
