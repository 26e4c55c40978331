"""Source trees: the files of the repository, from the work tree or from one git commit.

A build reads a `GitTree` (the commit, never the work tree), so a dirty work tree
can't leak into it; `envctl validate` reads the `WorkTree`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import git

from pipeline.errors import UsageError


class Tree(Protocol):
    """Read-only view of repository files by POSIX path relative to the root."""

    @property
    def label(self) -> str: ...

    def read(self, path: str) -> bytes | None: ...

    def is_dir(self, path: str) -> bool: ...

    def files(self, under: str = "") -> list[str]: ...


def glob(tree: Tree, pattern: str) -> list[str]:
    """Files matching a glob (`*` stays within a folder, `**` crosses folders)."""
    fixed: list[str] = []
    for part in pattern.split("/")[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return sorted(f for f in tree.files("/".join(fixed)) if _match(f, pattern))


def _match(path: str, pattern: str) -> bool:
    p_parts = pattern.split("/")
    f_parts = path.split("/")

    def go(i: int, j: int) -> bool:
        if i == len(p_parts):
            return j == len(f_parts)
        if p_parts[i] == "**":
            return any(go(i + 1, k) for k in range(j, len(f_parts) + 1))
        return j < len(f_parts) and fnmatch.fnmatchcase(f_parts[j], p_parts[i]) and go(i + 1, j + 1)

    return go(0, 0)


@dataclass(frozen=True)
class WorkTree:
    root: Path

    @property
    def label(self) -> str:
        return "work tree"

    def read(self, path: str) -> bytes | None:
        target = self.root / path
        return target.read_bytes() if target.is_file() else None

    def is_dir(self, path: str) -> bool:
        return (self.root / path).is_dir()

    def files(self, under: str = "") -> list[str]:
        base = self.root / under
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(self.root).parts
        )


class GitTree:
    """The tree of one commit, read through GitPython."""

    def __init__(self, commit: Any) -> None:
        self.commit = commit
        self.sha: str = commit.hexsha
        self.tree_sha: str = commit.tree.hexsha
        self.label = f"commit {self.sha[:12]}"

    def _entry(self, path: str) -> Any | None:
        if path in {"", "."}:
            return self.commit.tree
        try:
            return self.commit.tree / path.strip("/")
        except KeyError:
            return None

    def read(self, path: str) -> bytes | None:
        entry = self._entry(path)
        if entry is None or entry.type != "blob":
            return None
        data: bytes = entry.data_stream.read()
        return data

    def is_dir(self, path: str) -> bool:
        entry = self._entry(path)
        return entry is not None and entry.type == "tree"

    def mode(self, path: str) -> int:
        entry = self._entry(path)
        return int(entry.mode) if entry is not None else 0o100644

    def files(self, under: str = "") -> list[str]:
        entry = self._entry(under)
        if entry is None:
            return []
        if entry.type == "blob":
            return [entry.path]
        return sorted(item.path for item in entry.traverse() if item.type == "blob")


def open_repo(path: Path) -> Any:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
        raise UsageError(f"{path} is not a git repository; pass --repo PATH") from e


MIN_PREFIX = 7
_HEX = re.compile(r"^[0-9a-f]{1,40}$")


def resolve(repo: Any, rev: str) -> GitTree:
    """The commit named by a branch, tag, full SHA or SHA prefix (7+ characters)."""
    if not rev or rev.startswith("-") or not rev.isprintable() or any(c.isspace() for c in rev):
        raise UsageError(f"invalid revision {rev!r}")
    try:
        sha: str | None = repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except git.GitCommandError:
        sha = None
    if _HEX.match(rev) and len(rev) < 40 and (sha is None or sha.startswith(rev)):
        sha = _by_prefix(repo, rev)
    if sha is None:
        raise UsageError(f"unknown revision {rev!r}; give a branch, tag or commit SHA of this repository")
    return GitTree(repo.commit(sha))


def _by_prefix(repo: Any, prefix: str) -> str:
    if len(prefix) < MIN_PREFIX:
        raise UsageError(f"SHA prefix {prefix!r} is too short; give at least {MIN_PREFIX} characters")
    try:
        listed = repo.git.rev_parse(f"--disambiguate={prefix}").split()
    except git.GitCommandError:
        listed = []
    commits = [sha for sha in listed if repo.git.cat_file("-t", sha).strip() == "commit"]
    if not commits:
        raise UsageError(f"unknown revision {prefix!r}; no commit of this repository starts with it")
    if len(commits) > 1:
        shown = ", ".join(sha[:12] for sha in commits[:4])
        raise UsageError(f"SHA prefix {prefix!r} is ambiguous ({shown}); give more characters")
    return str(commits[0])
