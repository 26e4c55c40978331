"""The exit-code contract on hostile input: exit 2, one line on stderr, no traceback.

Each case runs the real `envctl` in a child process. The Docker Engine and the
registry are pointed at addresses where nothing answers, so a case that got past its
input check would fail differently (exit 3) instead of touching the shared stack.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import minirepo
from tests.helpers import envctl
from tests.minirepo import MiniRepo, git

LONG = "a." + "b" * 4998  # 5,000 characters

DEAD_PARTS = {
    "ENVCTL_DOCKER_HOST": "unix:///nonexistent/envctl-test-docker.sock",
    "ENVCTL_REGISTRY": "127.0.0.1:1",
}


def bad_input(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one line of a bad-input error, after checking the contract."""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envctl: error: "), lines
    assert len(lines[0]) < 400, lines[0]  # readable: a 5,000-character input is cut
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def repo(tmp_path: Path) -> MiniRepo:
    return minirepo.make(tmp_path)


def run(repo: MiniRepo, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**repo.env(repo.path.parent / "state"), **DEAD_PARTS, **(extra or {})}
    return envctl(*args, cwd=repo.path, env=env, timeout=120)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u@127.0.0.1:abc/db",
        "postgresql+psycopg://u:secret-pw@127.0.0.1:99999/db",
        "not a database url",
    ],
)
@pytest.mark.parametrize("command", [("status",), ("history", "nlp.x"), ("pipeline", "list")])
def test_a_malformed_ledger_url_is_bad_input(repo: MiniRepo, url: str, command: tuple[str, ...]) -> None:
    line = bad_input(run(repo, *command, extra={"ENVCTL_LEDGER_URL": url}), "ENVCTL_LEDGER_URL", "ledger_url")
    assert "secret-pw" not in line


@pytest.mark.parametrize(
    "command",
    [
        ("build", LONG, "--rev", "HEAD"),
        ("test", LONG, "--rev", "HEAD"),
        ("status", LONG),
        ("history", LONG),
        ("describe", f"{LONG}.staging"),
        ("promote", f"{LONG}.staging", "--rev", "HEAD"),
        ("rollback", LONG),
        ("pin", f"{LONG}.staging", "--reason", "x"),
        ("unpin", f"{LONG}.staging"),
        ("sync", LONG),
        ("diff", f"{LONG}.staging", f"{LONG}.production"),
        ("validate", LONG),
        ("validate", f"environments/{LONG}.yaml"),
        ("instances", "create", LONG, "--env", "nlp.x.staging"),
        ("build", "nlp.x", "--rev", LONG),
    ],
    ids=lambda c: "-".join(a if len(a) < 20 else "LONG" for a in c),
)
def test_a_5000_character_name_is_bad_input(repo: MiniRepo, command: tuple[str, ...]) -> None:
    bad_input(run(repo, *command), "characters")


@pytest.mark.parametrize(
    "command",
    [
        ("instances", "create", "Bad_Name", "--env", "nlp.x.staging"),
        ("instances", "restart", "Bad_Name"),
        ("instances", "delete", "Bad_Name"),
    ],
)
def test_a_bad_instance_name_is_refused_before_the_engine_is_asked(
    repo: MiniRepo, command: tuple[str, ...]
) -> None:
    bad_input(run(repo, *command), "'Bad_Name' is not an instance name")


@pytest.mark.parametrize("limit", ["-1", "0", "abc", "10000000000000000000000"])
def test_pipeline_list_refuses_a_limit_that_is_not_a_positive_count(repo: MiniRepo, limit: str) -> None:
    bad_input(run(repo, "pipeline", "list", "--limit", limit), "--limit", "envctl pipeline list --help")


@pytest.mark.parametrize(
    "command",
    [
        ("status", "--jsn"),
        ("nosuch",),
        ("build",),
        ("instances", "create", "x", "--env", "a.b.staging", "--port", "5"),
    ],
)
def test_a_usage_mistake_is_one_line_naming_the_help(repo: MiniRepo, command: tuple[str, ...]) -> None:
    bad_input(run(repo, *command), "--help`")


def test_a_group_alone_still_shows_its_help(repo: MiniRepo) -> None:
    result = run(repo, "pipeline")
    assert result.returncode == 2 and "Usage: envctl pipeline" in result.stdout + result.stderr


def _commit_with_entry(repo: MiniRepo, name: str) -> str:
    """A commit whose tree holds a folder entry `name` (git mktree writes what git checkout refuses)."""
    blob = subprocess.run(
        ["git", "-C", str(repo.path), "hash-object", "-w", "--stdin"],
        input="outside\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    inner = subprocess.run(
        ["git", "-C", str(repo.path), "mktree"],
        input=f"100644 blob {blob}\tescaped.ipynb\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    top = git(repo.path, "ls-tree", "HEAD") + f"\n040000 tree {inner}\t{name}\n"
    tree = subprocess.run(
        ["git", "-C", str(repo.path), "mktree"], input=top, capture_output=True, text=True, check=True
    ).stdout.strip()
    return git(repo.path, "commit-tree", tree, "-p", "HEAD", "-m", f"a tree entry named {name}")


@pytest.mark.parametrize("entry", ["..", ".git"])
def test_a_pushed_tree_with_a_dotdot_entry_is_bad_input(repo: MiniRepo, tmp_path: Path, entry: str) -> None:
    sha = _commit_with_entry(repo, entry)
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo.path, "push", "-q", str(bare), f"{sha}:refs/heads/staging")  # git accepts it

    needles = (sha[:12], repr(entry))
    bad_input(run(repo, "build", repo.image, "--rev", sha), *needles)
    bad_input(run(repo, "test", repo.image, "--rev", sha), *needles)
    bad_input(run(repo, "pipeline", "run", "--branch", "staging", "--rev", sha), *needles)
    pushed = run(repo, "--repo", str(bare), "pipeline", "run", "--branch", "staging", "--rev", "staging")
    bad_input(pushed, *needles)
