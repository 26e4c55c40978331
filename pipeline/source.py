"""Source trees: the files of the repository, from the work tree or from one git commit.

A build reads a `GitTree` (the commit, never the work tree), so a dirty work tree
can't leak into it; `envctl validate` reads the `WorkTree`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import Unavailable, UsageError, shown

if TYPE_CHECKING:
    import subprocess

# GitPython loads inside the functions that need it (`envctl promote` reads one file of a
# commit through `read_at`, with the git program: importing GitPython costs start-up time).


class Tree(Protocol):
    """Read-only view of repository files by POSIX path relative to the root."""

    @property
    def label(self) -> str: ...

    def read(self, path: str) -> bytes | None: ...

    def is_dir(self, path: str) -> bool: ...

    def files(self, under: str = "") -> list[str]: ...


def leaves_tree(pattern: str) -> bool:
    """True for a path or glob that names something outside the repository: absolute or with '..'."""
    return pattern.startswith(("/", "\\")) or ".." in pattern.replace("\\", "/").split("/")


def glob(tree: Tree, pattern: str) -> list[str]:
    """Files matching a glob (`*` stays within a folder, `**` crosses folders); never outside the tree."""
    if leaves_tree(pattern):
        return []
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
    """The files under `root`, as `git add` would see them: nothing outside it is ever read.

    A path with '..' or a leading '/', or one that resolves outside the root through a
    symbolic link, is absent; listing never follows a link to a folder.
    """

    root: Path

    @property
    def label(self) -> str:
        return "work tree"

    def _inside(self, path: str) -> Path | None:
        """The real path of `path` when it stays inside the root, else None."""
        if leaves_tree(path):
            return None
        try:
            root = self.root.resolve()
            target = (root / path).resolve()
        except (OSError, RuntimeError):
            return None
        return target if target == root or target.is_relative_to(root) else None

    def read(self, path: str) -> bytes | None:
        target = self._inside(path)
        try:
            return target.read_bytes() if target is not None and target.is_file() else None
        except OSError:
            return None  # unreadable, a folder, or a name too long: not a file of the tree

    def is_dir(self, path: str) -> bool:
        target = self._inside(path)
        try:
            return target is not None and target.is_dir()
        except OSError:
            return False

    def files(self, under: str = "") -> list[str]:
        if not self.is_dir(under):
            return []
        found: list[str] = []
        for folder, dirs, names in os.walk(self.root / under):  # never into a linked folder
            dirs[:] = [d for d in dirs if d != ".git"]
            for name in names:
                relative = (Path(folder) / name).relative_to(self.root).as_posix()
                if name != ".git" and self._is_file(relative):
                    found.append(relative)
        return sorted(found)

    def _is_file(self, path: str) -> bool:
        target = self._inside(path)
        try:
            return target is not None and target.is_file()
        except OSError:
            return False


_BAD_ENTRIES = {"", ".", ".."}


def check_entries(commit: Any) -> None:
    """`UsageError` when the commit's tree has an entry git itself would never check out.

    A pushed tree can hold an entry named '..' or '.git' (`git mktree` makes one);
    read as paths, they would reach outside the folder a build or a test run writes to.
    """
    import git

    try:
        listed: str = commit.repo.git.ls_tree("-r", "-t", "-z", "--name-only", commit.tree.hexsha)
    except git.GitCommandError as e:
        raise UsageError(f"commit {commit.hexsha[:12]}: git can't list its tree: {e.stderr.strip()}") from e
    _check_listing(commit.hexsha, listed)


def _check_listing(sha: str, listed: str) -> None:
    """`check_entries` of a listing by `git ls-tree -r -t -z --name-only` of the commit `sha`."""
    for path in listed.split("\0"):
        parts = path.split("/")
        if path and any(p in _BAD_ENTRIES or p.lower() == ".git" for p in parts):
            raise UsageError(
                f"commit {sha[:12]} has a tree entry {shown(path)} that git refuses to check "
                "out ('.', '..' or '.git'); rewrite that commit without it"
            )


class GitTree:
    """The tree of one commit, read through GitPython."""

    def __init__(self, commit: Any) -> None:
        self.commit = commit
        self.sha: str = commit.hexsha
        self.tree_sha: str = commit.tree.hexsha
        self.label = f"commit {self.sha[:12]}"
        check_entries(commit)

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
    import git

    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
        raise UsageError(f"{path} is not a git repository; pass --repo PATH") from e


MIN_PREFIX = 7
_HEX = re.compile(r"^[0-9a-f]{1,40}$")


def resolve(repo: Any, rev: str) -> GitTree:
    """The commit named by a branch, tag, full SHA or SHA prefix (7+ characters)."""
    if not rev or rev.startswith("-") or not rev.isprintable() or any(c.isspace() for c in rev):
        raise UsageError(f"invalid revision {shown(rev)}")
    import git

    try:
        sha: str | None = repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except git.GitCommandError:
        sha = None
    if _HEX.match(rev) and len(rev) < 40 and (sha is None or sha.startswith(rev)):
        sha = _by_prefix(repo, rev)
    if sha is None:
        raise UsageError(
            f"unknown revision {shown(rev)}; give a branch, tag or commit SHA of this repository"
        )
    return GitTree(repo.commit(sha))


def _by_prefix(repo: Any, prefix: str) -> str:
    if len(prefix) < MIN_PREFIX:
        raise UsageError(f"SHA prefix {prefix!r} is too short; give at least {MIN_PREFIX} characters")
    import git

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


def default_rev(repo: Any) -> str:
    """The staging branch when the repository has one, else HEAD (a Cloud Build checkout)."""
    try:
        resolve(repo, "staging")
    except UsageError:
        return "HEAD"
    return "staging"


_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_NOT_IN_PATHS = ("\n", "\r", "\0")

# Options of every git call that reads history: no replace refs (`git replace` would make
# a commit read as another one), no fsmonitor hook, no fetch of missing objects.
_GIT_READ = ("--no-replace-objects", "-c", "core.fsmonitor=false")


def git_read(repo: Path, *args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`git -C repo ARGS` for a command that reads history: the objects as stored, never replaced.

    Raises `Unavailable` when git is missing or runs past its time; the caller reads the exit code.
    """
    from pipeline.proc import run

    env = {**os.environ, "GIT_NO_LAZY_FETCH": "1"}
    return run(
        ["git", *_GIT_READ, "-C", repo, *args], timeout=60, check=False, input_bytes=input_bytes, env=env
    )


def git_reason(done: subprocess.CompletedProcess[bytes]) -> str:
    """The last line git wrote to stderr, quoted for a message (`shown`); empty when none."""
    lines = (done.stderr or b"").decode(errors="replace").strip().splitlines()
    return f" (git: {shown(lines[-1].strip(), 160)})" if lines else ""


def read_at(repo: Path, sha: str, path: str) -> bytes | None:
    """`resolve(open_repo(repo), sha).read(path)` for a full commit SHA, through the git program.

    The same answers without GitPython (a few subprocesses instead of its import):
    `UsageError` when `repo` is not in a git repository, the commit is not in it, its
    tree has an entry git refuses to check out (`check_entries`), or git can't run;
    None when the commit has no file at `path`, and for a path GitPython's tree lookup
    finds nothing at: one with an empty, '.' or '..' part, or a newline, carriage return
    or NUL (git would read './x' relative to `repo`, and a newline as a second query).
    Replace refs are ignored: the commit's own tree is read.
    """
    lowered = sha.lower() if sha.isascii() else sha
    if not _FULL_SHA.fullmatch(lowered):
        raise UsageError(
            f"invalid commit SHA {shown(sha)}; give the 40 hex characters of a commit "
            "(SHA-256 repositories are not supported)"
        )
    sha = lowered

    def git_(*args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return git_read(repo, *args, input_bytes=input_bytes)
        except Unavailable as e:
            raise UsageError(f"git can't read commit {sha[:12]} in {repo}: {e}") from e

    if git_("rev-parse", "--verify", "--quiet", "--end-of-options", f"{sha}^{{commit}}").returncode:
        where = git_("rev-parse", "--git-dir")
        if where.returncode:
            raise UsageError(f"{repo} is not a git repository; pass --repo PATH{git_reason(where)}")
        raise UsageError(f"unknown revision {shown(sha)}; no commit of {repo} has it")
    listed = git_("ls-tree", "--full-tree", "-r", "-t", "-z", "--name-only", sha)
    if listed.returncode:
        raise UsageError(f"commit {sha[:12]}: git can't list its tree{git_reason(listed)}")
    _check_listing(sha, listed.stdout.decode(errors="surrogateescape"))
    wanted = path.strip("/")
    if any(c in path for c in _NOT_IN_PATHS) or any(p in _BAD_ENTRIES for p in wanted.split("/")):
        return None  # not a name GitPython's tree lookup finds; "" and "." are the root, no file
    found = git_("cat-file", "--batch", input_bytes=f"{sha}:{wanted}\n".encode())
    if found.returncode:
        raise UsageError(f"git can't read {shown(path)} of commit {sha[:12]}{git_reason(found)}")
    header, _, rest = found.stdout.partition(b"\n")
    fields = header.split()
    if len(fields) != 3 or fields[1] != b"blob":
        return None  # missing, or a folder or a submodule: not a file of the tree
    return rest[: int(fields[2])]
