"""Sign-offs without the stack: which rule production applies, and who may sign what.

Real git repositories, a SQLite ledger, and `envctl signoff` in child processes.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline import proc
from pipeline.errors import Refused, Unavailable
from pipeline.ledger import db, signoffs
from pipeline.ledger.db import Ledger, Version, now
from pipeline.ledger.pointers import history
from pipeline.promote import moves
from pipeline.promote.policy import refusals
from pipeline.settings import Settings
from tests.helpers import envctl, spec_yaml
from tests.ledgerfacts import move, record_run

IMAGE = "team.task"
SIGNOFFS = """\
promotion:
  production:
    signoffs: {n}
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@x", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _commit(repo: Path, signoffs: int) -> str:
    (repo / "environments").mkdir(exist_ok=True)
    (repo / "environments" / f"{IMAGE}.yaml").write_text(spec_yaml(IMAGE, SIGNOFFS.format(n=signoffs)))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", f"signoffs {signoffs}")
    return _git(repo, "rev-parse", "HEAD")


def _version(ledger: Ledger, sha: str) -> Version:
    version = Version(
        image=IMAGE,
        sha=sha,
        tree="0" * 40,
        inputs_key=sha,
        build_key=sha,
        digest="sha256:" + sha.ljust(64, "0")[:64],
        image_ref="",
        size=None,
        reused_from=None,
        labels={},
        sbom={},
        created_at=now(),
    )
    ledger.record_version(version)
    return version


def _production(ledger: Ledger, version: Version) -> None:
    move(ledger, IMAGE, "production", version.sha, version.digest, actor="t")


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, Ledger, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    return Settings(repo=repo), Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}"), repo


def test_an_old_commit_does_not_escape_the_newer_rule_of_production(
    world: tuple[Settings, Ledger, Path],
) -> None:
    settings, ledger, repo = world
    old = _version(ledger, _commit(repo, 0))
    new = _version(ledger, _commit(repo, 2))
    _production(ledger, new)
    signed, unread = moves._signoff_rule(settings, ledger, old, None)
    assert unread is None and signed is not None and signed.required == 2
    # the rule is the commit's, not an uncommitted edit of the work tree
    (repo / "environments" / f"{IMAGE}.yaml").write_text(spec_yaml(IMAGE, SIGNOFFS.format(n=5)))
    assert moves._rule_at(settings, IMAGE, old.sha) == 0
    assert moves._rule_at(settings, IMAGE, new.sha) == 2
    # the version's own rule counts too when production's is lower
    _production(ledger, old)
    signed, _ = moves._signoff_rule(settings, ledger, new, None)
    assert signed is not None and signed.required == 2


def test_an_unreadable_rule_is_a_refusal_not_zero(
    world: tuple[Settings, Ledger, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, ledger, repo = world
    here = _version(ledger, _commit(repo, 1))
    absent = _version(ledger, "f" * 40)  # a commit this clone lacks
    signed, unread = moves._signoff_rule(settings, ledger, absent, None)
    assert signed is None and unread == (
        f"can't read the sign-off rule of {'f' * 12} in {repo}; fetch it or use --force (recorded)"
    )
    assert moves.required_signoffs(settings, absent) is None
    assert moves.required_signoffs(settings, here) == 1
    # no git program at all: None, not a traceback (the rule is read with the git program);
    # a commit read before is not read again in one process (a commit never changes)
    later = _version(ledger, _commit(repo, 2))
    monkeypatch.setattr(proc, "which", lambda program: None)
    assert moves.required_signoffs(settings, later) is None
    assert moves.required_signoffs(settings, here) == 1


@pytest.mark.parametrize("spec", ["image: [unclosed\n", "image: team.task\n"])
def test_an_unreadable_spec_refuses_production_as_an_unknown_accelerator(
    world: tuple[Settings, Ledger, Path], spec: str
) -> None:
    settings, ledger, repo = world
    (repo / "environments").mkdir()
    (repo / "environments" / f"{IMAGE}.yaml").write_text(spec)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "a spec that does not parse")
    version = _version(ledger, _git(repo, "rev-parse", "HEAD"))
    _tested(ledger, version)  # a passing run from before envctl kept where runs ran
    proof = moves._proof(settings, ledger, version)
    assert proof.passed and proof.asked is None and proof.unread is not None
    assert proof.unread.startswith(f"the spec of {IMAGE} at {version.sha[:12]} can't be read (")
    assert proof.unread.endswith(
        "so its accelerator is unknown; fix or fetch that commit or use --force (recorded)"
    )
    reasons = refusals(stage="production", target="x", evidence=proof, descends=None, pinned=[])
    assert reasons == [proof.unread]  # as `_rule_at` refuses the sign-off rule of the same commit
    assert moves._rule_at(settings, IMAGE, version.sha) is None
    # a commit this clone lacks: refused the same way
    absent = moves._proof(settings, ledger, _version(ledger, "e" * 40))
    assert absent.unread is not None and "unknown revision" in absent.unread
    # a readable spec asking for no accelerator: no refusal
    _commit(repo, 0)
    readable = _version(ledger, _git(repo, "rev-parse", "HEAD"))
    _tested(ledger, readable)
    fine = moves._proof(settings, ledger, readable)
    assert fine.unread is None
    assert refusals(stage="production", target="x", evidence=fine, descends=None, pinned=[]) == []
    # a rollback to it is a promotion by another name: refused; back to it once production ran it: not
    _production(ledger, readable)
    with pytest.raises(Refused, match=re.escape(proof.unread)):
        moves.rollback(settings, ledger, IMAGE, to=version.sha[:12])
    _production(ledger, version)
    _production(ledger, readable)
    with pytest.raises(Unavailable, match="is not in the registry"):  # no refusal: the registry stops it
        moves.rollback(settings, ledger, IMAGE, to=version.sha[:12])


def test_rollback_to_a_version_production_never_ran_needs_its_signoffs(
    world: tuple[Settings, Ledger, Path],
) -> None:
    settings, ledger, repo = world
    ran = _version(ledger, _commit(repo, 2))
    never = _version(ledger, _commit(repo, 2))
    _production(ledger, ran)
    assert moves._ever_in_production(ledger, IMAGE, ran.digest)
    assert not moves._ever_in_production(ledger, IMAGE, never.digest)
    # the refusal comes before the registry is asked for the digest (the local registry answers `require`)
    with pytest.raises(Refused, match="0 of the 2 testers' sign-offs") as caught:
        moves.rollback(settings, ledger, IMAGE, to=never.sha[:12])
    assert "no test evidence" in str(caught.value)
    _production(ledger, never)
    with pytest.raises(Refused) as back:  # back to what production ran: no sign-off asked
        moves.rollback(settings, ledger, IMAGE, to=ran.sha[:12])
    assert "sign-off" not in str(back.value) and "no test evidence" in str(back.value)


def _tested(ledger: Ledger, version: Version, passed: bool = True) -> None:
    record_run(ledger, version, passed)


def _staging(ledger: Ledger, version: Version) -> None:
    move(ledger, IMAGE, "staging", version.sha, version.digest, actor="t")


def test_a_tester_signs_the_version_they_tried_with_rev(
    tmp_path: Path, world: tuple[Settings, Ledger, Path]
) -> None:
    _, ledger, repo = world
    tried = _version(ledger, _commit(repo, 1))
    untested = _version(ledger, _commit(repo, 1))
    _tested(ledger, tried)
    _staging(ledger, untested)  # staging moved on after the tester tried `tried`
    env = {"ENVCTL_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}", "ENVCTL_ACTOR": "tess"}
    signed = envctl("signoff", f"{IMAGE}.staging", "--rev", tried.sha[:12], "--json", cwd=repo, env=env)
    assert signed.returncode == 0, signed.stderr
    assert (json.loads(signed.stdout)["digest"], json.loads(signed.stdout)["sha"]) == (
        tried.digest,
        tried.sha,
    )
    refused = envctl("signoff", f"{IMAGE}.staging", "--rev", untested.sha[:12], cwd=repo, env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"envctl: error: {IMAGE} {untested.sha[:12]} ({untested.digest[:19]}) has not passed its tests; "
        "testers sign off only tested versions"
    ]
    now_ = envctl("signoff", f"{IMAGE}.staging", "--json", cwd=repo, env=env)  # no --rev: what staging runs
    assert json.loads(now_.stdout)["digest"] == untested.digest
    # a promotion short of sign-offs says which digest to sign, and how
    reasons = refusals(
        stage="production",
        target="x",
        evidence=None,
        descends=None,
        pinned=[],
        signoffs=moves.signoffs_of(ledger, tried, 2),
    )
    assert reasons == [
        f"x has 1 of the 2 testers' sign-offs production needs (signed by tess); testers sign "
        f"{tried.digest} with `envctl signoff {IMAGE}.staging --rev {tried.sha[:12]}`"
    ]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"ENVCTL_ACTOR": "   "}, "ENVCTL_ACTOR is blank"),
        ({"ENVCTL_ACTOR": "x" * 300}, "the actor name is 300 characters long; give at most 256"),
        (
            {"ENVCTL_ACTOR": "tess", "ENVCTL_CI_RUN_ID": "build-7"},
            "CI (ENVCTL_CI_RUN_ID or CI is set) may not sign off",
        ),
        ({"ENVCTL_ACTOR": "tess", "CI": "true"}, "CI (ENVCTL_CI_RUN_ID or CI is set) may not sign off"),
    ],
)
def test_a_signoff_needs_a_person(
    tmp_path: Path, world: tuple[Settings, Ledger, Path], extra: dict[str, str], said: str
) -> None:
    _, ledger, repo = world
    version = _version(ledger, _commit(repo, 1))
    _staging(ledger, version)
    env = {"ENVCTL_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}", **extra}
    result = envctl("signoff", f"{IMAGE}.staging", cwd=repo, env=env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("envctl: error: ") and said in line
    assert signoffs.for_image(ledger, IMAGE) == []


def test_history_orders_by_time_then_moves_before_signoffs(
    tmp_path: Path, world: tuple[Settings, Ledger, Path]
) -> None:
    _, ledger, repo = world
    first, second = _version(ledger, _commit(repo, 1)), _version(ledger, _commit(repo, 1))
    _staging(ledger, first)
    [moved] = history(ledger, IMAGE)
    with ledger.transaction() as conn:  # a sign-off stamped the very microsecond of the move, and one earlier
        signoffs.insert(conn, image=IMAGE, sha=first.sha, digest=first.digest, actor="late", reason=None)
        conn.execute(sa.update(db.signoffs).where(db.signoffs.c.actor == "late").values(at=moved.at))
        signoffs.insert(conn, image=IMAGE, sha=first.sha, digest=first.digest, actor="early", reason=None)
        conn.execute(
            sa.update(db.signoffs)
            .where(db.signoffs.c.actor == "early")
            .values(at=moved.at - timedelta(seconds=1))
        )
    _staging(ledger, second)
    env = {"ENVCTL_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    shown = envctl("history", IMAGE, "--json", cwd=repo, env=env)
    assert shown.returncode == 0, shown.stderr
    assert [(e["action"], e["actor"]) for e in json.loads(shown.stdout)] == [
        ("signoff", "early"),
        ("promote", "t"),
        ("signoff", "late"),
        ("promote", "t"),
    ]
