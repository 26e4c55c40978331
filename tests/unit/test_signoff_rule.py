"""Which sign-off rule production applies: real git repositories and a SQLite ledger, no stack."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git
import pytest

from pipeline.errors import Refused
from pipeline.ledger.db import Ledger, Version, now
from pipeline.ledger.pointers import Change, Pointer, Stage, Who, compare_and_swap
from pipeline.promote import moves
from pipeline.settings import Settings

IMAGE = "team.task"
SPEC = """\
image: team.task
build:
  dockerfile: docker/Dockerfile
  context: docker
  base: {{local: localhost:5000/dlc/base-cpu:local, gcp: us-docker.pkg.dev/x/y/base-cpu.py310}}
tests:
  notebooks: [test-notebooks/*.ipynb]
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
    (repo / "environments" / f"{IMAGE}.yaml").write_text(SPEC.format(n=signoffs))
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
    def decide(seen: dict[Stage, Pointer]) -> list[Change]:
        return [
            Change(
                expected=seen["production"],
                sha=version.sha,
                digest=version.digest,
                action="promote",
                who=Who(actor="t"),
            )
        ]

    compare_and_swap(ledger, IMAGE, decide)


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
    # no git program at all: None, not a GitCommandNotFound traceback
    monkeypatch.setattr(git.Git, "GIT_PYTHON_GIT_EXECUTABLE", "/nonexistent/git")
    assert moves.required_signoffs(settings, here) is None


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
