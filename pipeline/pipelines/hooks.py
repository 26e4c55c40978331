"""Git hooks: a post-receive hook in a bare repository starts the pipelines.

The hook is a two-line shell script that hands standard input to envctl; branch
names are read by Python from that input and never pass through a shell. Without
`--wait` the hook starts each run in the background and returns at once, so a push
is never blocked; with it, the pusher sees the run's output and verdict.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.pipelines.records import log_path, new_run_id
from pipeline.settings import Settings

MARKER = "# installed by envctl hooks install"
ZERO = "0" * 40
BRANCH_REFS = {"refs/heads/staging": "staging", "refs/heads/production": "production"}
# The settings a hook carries, so a pipeline behaves the same whoever pushes.
BAKED = ("state_dir", "ledger_url", "artifacts_dir", "registry", "base_image", "backend", "docker_host")


@dataclass(frozen=True)
class Update:
    old: str
    new: str
    ref: str


def git_dir(path: Path) -> Path:
    path = path.resolve()
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path
    if (path / ".git" / "HEAD").is_file():
        return path / ".git"
    raise UsageError(
        f"{path} is not a git repository (no HEAD and objects/); give a bare repo or a .git folder"
    )


def hook_text(settings: Settings, target: Path, *, wait: bool) -> str:
    lines = [
        "#!/bin/sh",
        MARKER,
        "# Branch names are read by envctl from standard input, never by this shell.",
    ]
    for key in BAKED:
        value = str(getattr(settings, key))
        if value:
            name = f"ENVCTL_{key.upper()}"
            lines.append(f"{name}={shlex.quote(value)}; export {name}")
    argv = [sys.executable, "-m", "pipeline.cli.main", "hooks", "post-receive", "--git-dir", str(target)]
    if wait:
        argv.append("--wait")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def install(settings: Settings, path: Path, *, wait: bool) -> Path:
    """Write hooks/post-receive atomically; refuse to overwrite a hook envctl did not write."""
    target = git_dir(path)
    hook = target / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    if hook.exists() and MARKER not in hook.read_text(errors="replace"):
        raise UsageError(f"{hook} exists and was not written by envctl; move it away and run again")
    tmp = hook.with_name(".post-receive.envctl-tmp")
    tmp.write_text(hook_text(settings, target, wait=wait))
    tmp.chmod(0o750)
    tmp.replace(hook)
    return hook


def parse_updates(text: str) -> list[Update]:
    updates = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            updates.append(Update(*parts))
    return updates


def clean_git_env() -> None:
    """Hooks run with GIT_DIR and friends set relative to the hook; envctl opens repos by path."""
    for name in list(os.environ):
        if name.startswith("GIT_") and name not in {"GIT_SSL_CAINFO", "GIT_SSH_COMMAND"}:
            del os.environ[name]


def spawn(settings: Settings, target: Path, branch: str, sha: str) -> tuple[str, Path]:
    """Start one pipeline run in the background; its ID and log."""
    run_id = new_run_id()
    log = log_path(settings.state_dir, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pipeline.cli.main",
        "pipeline",
        "run",
        "--branch",
        branch,
        "--rev",
        sha,
        "--repo",
        str(target),
        "--run-id",
        run_id,
        "--trigger",
        "hook",
    ]
    with open(log, "ab") as out:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return run_id, log
