"""The whole site from a snapshot, written by renames so a crash never leaves half of it.

The pages go to a fresh folder beside the target; only when every file is written does
that folder take the target's name. An existing folder is replaced only when it is an
earlier report (it carries `MARKER`) or empty: `--out ~` must not delete a home folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.report import pages, runs
from pipeline.report.data import Snapshot

MARKER = ".envctl-report"


def render(snapshot: Snapshot) -> runs.Files:
    files: runs.Files = {}
    files.update(pages.index(snapshot))
    for env in snapshot.environments:
        files.update(pages.environment(snapshot, env))
    files.update(pages.diffs(snapshot))
    files.update(runs.pipeline_runs(snapshot))
    files.update(runs.test_runs(snapshot))
    files[MARKER] = "written by `envctl report`; the next run replaces this folder\n"
    return files


def _replaceable(target: Path) -> bool:
    if not target.exists() and not target.is_symlink():
        return True
    if not target.is_dir() or target.is_symlink():
        return False
    return (target / MARKER).is_file() or not any(target.iterdir())


def require_replaceable(target: Path) -> None:
    if not _replaceable(target.absolute()):
        raise UsageError(
            f"{target.absolute()} exists and is not a report envctl wrote; choose another --out or remove it"
        )


def write(target: Path, files: runs.Files) -> None:
    """Write `files` (site path -> content) as the folder `target`, replacing an earlier report."""
    target = target.absolute()
    require_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    fresh = target.parent / f".{target.name}.new-{token}"
    old = target.parent / f".{target.name}.old-{token}"
    try:
        for relative, content in files.items():
            path = fresh / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        for folder in [fresh, *(p for p in fresh.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        if target.exists():
            os.rename(target, old)
        os.rename(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
