"""`source.read_at` (the git program) answers as `resolve(open_repo(...)).read` (GitPython) does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import UsageError
from pipeline.source import open_repo, read_at, resolve


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _gitpython(repo: Path, sha: str, path: str) -> bytes | None:
    return resolve(open_repo(repo), sha).read(path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "environments" / "deep").mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    (root / "environments" / "team.task.yaml").write_bytes(b"image: team.task\n\x00\xff binary\n")
    (root / "environments" / "deep" / "empty.yaml").write_bytes(b"")
    (root / "top.txt").write_bytes(b"top\n")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "one")
    return root


@pytest.mark.parametrize(
    "path",
    [
        "environments/team.task.yaml",
        "/environments/team.task.yaml",
        "environments/deep/empty.yaml",
        "environments/absent.yaml",
        "environments/deep",
        "environments",
        "",
        "nothing/here",
        "../top.txt",
        "./top.txt",
        "environments/./team.task.yaml",
        "environments/../top.txt",
        "environments//team.task.yaml",
        "./team.task.yaml",
        "environments/team.task.yaml\nHEAD:top.txt",
        "top.txt\n",
        "top.txt\r",
        "top.txt\0",
        "environments/team.task.yaml\0top.txt",
    ],
)
def test_read_at_equals_the_gitpython_tree(repo: Path, path: str) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    assert read_at(repo, sha, path) == _gitpython(repo, sha, path)
    assert read_at(repo / "environments", sha, path) == _gitpython(repo / "environments", sha, path)


def test_read_at_reads_no_path_git_would_take_relative_to_the_folder_or_as_two_queries(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    assert read_at(repo, sha, "top.txt") == b"top\n"
    assert read_at(repo / "environments", sha, "../top.txt") is None
    assert read_at(repo, sha, "./top.txt") is None
    assert read_at(repo / "environments", sha, "./team.task.yaml") is None
    assert read_at(repo, sha, "environments/x.yaml\nHEAD:top.txt") is None
    assert read_at(repo, sha, "environments/team.task.yaml\nHEAD:top.txt") is None


def test_read_at_reads_the_commit_not_its_replacement(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    (repo / "environments" / "team.task.yaml").write_bytes(b"image: replaced\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qam", "other")
    other = _git(repo, "rev-parse", "HEAD")
    _git(repo, "replace", sha, other)
    assert _git(repo, "show", f"{sha}:environments/team.task.yaml") == "image: replaced"  # git follows it
    assert read_at(repo, sha, "environments/team.task.yaml") == b"image: team.task\n\x00\xff binary\n"
    # the ancestry a staging move checks ignores replacements too: an unrelated commit replaced
    # by a descendant of `sha` still does not descend from it
    from pipeline.promote.moves import descends
    from pipeline.settings import Settings

    orphan = _git(repo, "commit-tree", f"{sha}^{{tree}}", "-m", "unrelated")
    _git(repo, "replace", orphan, other)
    assert _git(repo, "merge-base", "--is-ancestor", sha, orphan) == ""  # git follows it (exit 0)
    assert not descends(Settings(repo=repo), sha, orphan)
    assert descends(Settings(repo=repo), sha, other)


def test_read_at_takes_an_uppercase_sha_and_refuses_anything_else(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    assert read_at(repo, sha.upper(), "top.txt") == b"top\n"
    for bad in (f"{sha}\n", sha[:39] + "g", "a" * 64, sha + " "):
        with pytest.raises(UsageError, match=r"invalid commit SHA .*SHA-256 repositories are not supported"):
            read_at(repo, bad, "top.txt")


def test_read_at_says_why_git_refused_the_repository(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    _git(repo, "config", "core.repositoryformatversion", "99")
    with pytest.raises(UsageError) as caught:
        read_at(repo, sha, "top.txt")
    assert str(caught.value).startswith(f"{repo} is not a git repository; pass --repo PATH (git: ")
    assert "99" in str(caught.value)


def test_read_at_refuses_what_resolve_refuses(repo: Path, tmp_path: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    with pytest.raises(UsageError, match="is not a git repository"):
        read_at(tmp_path / "elsewhere", sha, "environments/team.task.yaml")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match="is not a git repository"):
        read_at(tmp_path / "plain", sha, "environments/team.task.yaml")
    with pytest.raises(UsageError, match="unknown revision"):
        read_at(repo, "f" * 40, "environments/team.task.yaml")
    with pytest.raises(UsageError, match="invalid commit SHA"):
        read_at(repo, sha[:12], "environments/team.task.yaml")


@pytest.mark.parametrize("entry", ["..", ".git"])
def test_read_at_refuses_a_tree_git_would_not_check_out(repo: Path, entry: str) -> None:
    blob = _git(repo, "hash-object", "-w", "--stdin", stdin="outside\n")
    inner = _git(repo, "mktree", stdin=f"100644 blob {blob}\tescaped\n")
    top = _git(repo, "ls-tree", "HEAD") + f"\n040000 tree {inner}\t{entry}\n"
    sha = _git(repo, "commit-tree", _git(repo, "mktree", stdin=top), "-p", "HEAD", "-m", "bad")
    for read in (read_at, _gitpython):
        with pytest.raises(UsageError, match=f"commit {sha[:12]} has a tree entry '{entry}'"):
            read(repo, sha, "environments/team.task.yaml")


def test_the_rules_of_a_move_read_the_spec_without_gitpython(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.promote import moves, policy\n"
        "from pipeline.settings import Settings\n"
        f"settings = Settings(repo=Path({str(repo)!r}))\n"
        f"assert moves._rule_at(settings, 'team.other', {sha!r}) == 0\n"
        f"assert policy.rules_at(settings, 'team.other', {sha!r}) is None\n"
        "assert moves._rule_at(settings, 'team.other', 'f' * 40) is None\n"
        "print(sorted(m for m in sys.modules if m == 'git' or m.startswith('git.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
