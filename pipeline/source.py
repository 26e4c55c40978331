"""Source trees: the files of the repository, from the work tree or from one git commit.

A build reads a `GitTree` (the commit, never the work tree), so a dirty work tree
can't leak into it; `envctl validate` reads the `WorkTree`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import git

from pipeline.errors import Unavailable, UsageError


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

    def subtree_sha(self, path: str) -> str | None:
        entry = self._entry(path)
        return None if entry is None else str(entry.hexsha)


def open_repo(path: Path) -> Any:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
        raise UsageError(f"{path} is not a git repository; pass --repo PATH") from e


def resolve(repo: Any, rev: str) -> GitTree:
    """The commit named by a branch, tag, full SHA or SHA prefix (7+ characters)."""
    if not rev or rev.startswith("-") or any(c.isspace() or c in "~^:" for c in rev[:1]):
        raise UsageError(f"invalid revision {rev!r}")
    try:
        commit = repo.commit(rev)
    except (git.BadName, ValueError) as e:
        message = str(e)
        if "ambiguous" in message.lower():
            raise UsageError(f"revision {rev!r} is ambiguous; give more characters") from e
        raise UsageError(f"unknown revision {rev!r} in {repo.git_dir}") from e
    except git.GitCommandError as e:
        raise Unavailable(f"git could not read {rev!r}: {e.stderr.strip()}") from e
    if len(rev) < 40 and all(c in "0123456789abcdef" for c in rev) and commit.hexsha.startswith(rev):
        _check_unambiguous(repo, rev)
    return GitTree(commit)


def _check_unambiguous(repo: Any, prefix: str) -> None:
    if len(prefix) < 4:
        raise UsageError(f"SHA prefix {prefix!r} is too short; give at least 7 characters")
    try:
        repo.git.rev_parse("--verify", "--quiet", f"{prefix}^{{commit}}")
    except git.GitCommandError as e:
        raise UsageError(f"revision {prefix!r} is ambiguous; give more characters") from e
