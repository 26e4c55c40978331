"""Testers' sign-offs on the real stack: production counts distinct people per digest.

Each test has its own image in the shared registry, git repository and ledger (SQLite
and PostgreSQL), and runs the real `envctl` in child processes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import envctl, spec_yaml
from tests.integration.test_environments import one_line_error
from tests.stageworld import World

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]

TWO_SIGNOFFS = """\
promotion:
  production:
    signoffs: 2
"""


def commit_with_spec(world: World, name: str, like: str) -> None:
    """A commit on main whose spec asks production for 2 sign-offs, as a version of `like`'s digest."""
    world.commit_spec(name, spec_yaml(world.image, TWO_SIGNOFFS), like)
    world.evidence(name, True)


def as_tester(world: World, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    return envctl(*args, cwd=world.repo, env={**world.env, "ENVCTL_ACTOR": who})


def test_production_needs_two_distinct_testers_of_the_digest(world: World) -> None:
    img = world.image
    commit_with_spec(world, "c4", like="c3")
    one_line_error(as_tester(world, "alice", "signoff", f"{img}.staging"), 2, "points at no version")
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c4"]).returncode == 0
    one_line_error(as_tester(world, "alice", "signoff", f"{img}.production"), 2, "not a staging environment")
    one_line_error(as_tester(world, "alice", "signoff", "nope.unknown.staging"), 2, "unknown image")

    # Nobody signed: refused in one line; --force goes through and is recorded.
    one_line_error(
        world.envctl("promote", f"{img}.production", "--rev", world.sha["c4"]),
        1,
        "0 of the 2 testers' sign-offs",
        "nobody signed yet",
        f"envctl signoff {img}.staging",
    )
    forced = world.envctl(
        "promote", f"{img}.production", "--rev", world.sha["c4"], "--force", "--reason", "hotfix"
    )
    assert forced.returncode == 0, forced.stderr
    last = world.json("history", f"{img}.production")[-1]
    assert last["forced"] is True and last["to_sha"] == world.sha["c4"]
    assert "hotfix" in last["reason"] and "0 of the 2 testers' sign-offs" in last["reason"]

    # The next version: a sign-off of c4's digest does not count for c5's.
    assert as_tester(world, "carol", "signoff", f"{img}.staging").returncode == 0
    commit_with_spec(world, "c5", like="c2")
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c5"]).returncode == 0
    signed = as_tester(world, "alice", "signoff", f"{img}.staging", "--reason", "ran my notebooks", "--json")
    assert signed.returncode == 0, signed.stderr
    record = json.loads(signed.stdout)
    assert (record["actor"], record["sha"], record["digest"]) == (
        "alice",
        world.sha["c5"],
        world.digest["c5"],
    )
    assert record["signed_by"] == ["alice"]
    assert as_tester(world, "alice", "signoff", f"{img}.staging").returncode == 0  # twice: still one person
    one_line_error(
        world.envctl("promote", f"{img}.production", "--rev", world.sha["c5"]),
        1,
        "1 of the 2 testers' sign-offs",
        "signed by alice",
    )
    assert world.pointer("production") == world.sha["c4"]

    assert as_tester(world, "bob", "signoff", f"{img}.staging").returncode == 0
    accepted = world.envctl("promote", f"{img}.production", "--rev", world.sha["c5"])
    assert accepted.returncode == 0, accepted.stderr
    status = world.status()
    assert status["production"]["sha"] == world.sha["c5"]
    assert status["production"]["signoffs"] == ["alice", "bob"]
    assert status["fallback"]["signoffs"] == ["carol"]
    assert world.json("history", f"{img}.production")[-1]["forced"] is False

    described = world.json("describe", f"{img}.staging")
    assert described["signoffs_required"] == 2
    assert [(s["actor"], s["digest"]) for s in described["signoffs"]] == [
        ("alice", world.digest["c5"]),
        ("alice", world.digest["c5"]),
        ("bob", world.digest["c5"]),
    ]
    assert described["signoffs"][0]["reason"] == "ran my notebooks"
    text = world.envctl("describe", f"{img}.staging").stdout
    assert "signoffs     2 of 2 production needs (alice, bob)" in text

    history = world.json("history", f"{img}.staging")
    signoffs = [e for e in history if e["action"] == "signoff"]
    assert [(e["actor"], e["to_digest"]) for e in signoffs] == [
        ("carol", world.digest["c4"]),
        ("alice", world.digest["c5"]),
        ("alice", world.digest["c5"]),
        ("bob", world.digest["c5"]),
    ]
    assert set(signoffs[0]) == set(history[0])  # the same stable keys as a move
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    table = world.envctl("history", img).stdout
    assert "signoff" in table and "bob" in table
