"""Git hooks: a post-receive hook in a bare repository starts the pipelines.

The hook is a two-line shell script that hands standard input to envctl; branch
names are read by Python from that input and never pass through a shell. Without
`--wait` the hook starts each run in the background and returns at once, so a push
is never blocked; with it, the pusher sees the run's output and verdict.

The hook holds no secret. The ledger password and the registry token come from the
environment of the process that runs the hook or, when `install` saw them, from a
file of their own (mode 0600, under the user's config folder, outside every
repository) that the hook names and envctl reads.
"""

from __future__ import annotations

import hashlib
import json
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
BAKED = (
    "state_dir",
    "ledger_url",
    "artifacts_dir",
    "registry",
    "base_image",
    "backend",
    "docker_host",
    "notify_command",
)
# The secrets a hook's pipelines need, by setting and the variable that carries each
# (a webhook URL often carries its token in the path or query).
SECRETS = {
    "ledger_password": "ENVCTL_LEDGER_PASSWORD",
    "registry_token": "ENVCTL_REGISTRY_TOKEN",
    "notify_url": "ENVCTL_NOTIFY_URL",
}


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


def hook_text(settings: Settings, target: Path, *, wait: bool, secrets: Path | None = None) -> str:
    lines = [
        "#!/bin/sh",
        MARKER,
        "# Branch names are read by envctl from standard input, never by this shell.",
        f"# Secrets ({', '.join(SECRETS.values())}) come from the environment"
        + (" or the --secrets-file below (mode 0600)" if secrets else "")
        + ", never from this file.",
    ]
    for key in BAKED:
        setting = getattr(settings, key)
        value = json.dumps(list(setting)) if isinstance(setting, tuple) and setting else str(setting or "")
        if value:
            name = f"ENVCTL_{key.upper()}"
            lines.append(f"{name}={shlex.quote(value)}; export {name}")
    argv = [sys.executable, "-m", "pipeline.cli.main", "hooks", "post-receive", "--git-dir", str(target)]
    if secrets:
        argv += ["--secrets-file", str(secrets)]
    if wait:
        argv.append("--wait")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def install(settings: Settings, path: Path, *, wait: bool) -> Path:
    """Write hooks/post-receive atomically; refuse to overwrite a hook envctl did not write.

    The secrets of `settings` go to `secrets_file(target)` (0600), never into the hook.
    """
    target = git_dir(path)
    hook = target / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    if hook.exists() and MARKER not in hook.read_text(errors="replace"):
        raise UsageError(f"{hook} exists and was not written by envctl; move it away and run again")
    found = {variable: value for key, variable in SECRETS.items() if (value := str(getattr(settings, key)))}
    store = secrets_file(target)
    if found:
        checkout = settings.repo.resolve()
        for repository in (target, checkout) if (checkout / ".git").exists() else (target,):
            if store.is_relative_to(repository):
                raise UsageError(
                    f"the hook's secrets file {store} would be inside the repository {repository}; "
                    "set XDG_CONFIG_HOME to a folder outside it"
                )
        write_secrets(store, found)
    else:
        store.unlink(missing_ok=True)  # secrets of an earlier install that this one no longer has
    tmp = hook.with_name(".post-receive.envctl-tmp")
    tmp.write_text(hook_text(settings, target, wait=wait, secrets=store if found else None))
    tmp.chmod(0o750)
    tmp.replace(hook)
    return hook


def secrets_file(target: Path) -> Path:
    """Where `install` keeps the secrets of the hook of `target`: the user's config folder."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    name = target.parent.name if target.name == ".git" else target.name
    tag = hashlib.sha256(str(target).encode()).hexdigest()[:12]
    return (config / "envctl" / "hooks" / f"{name}-{tag}.json").resolve()


def write_secrets(path: Path, values: dict[str, str]) -> None:
    """Write `values` as JSON into `path`, readable by this user only from its first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out)
    tmp.replace(path)


def load_secrets(path: Path) -> None:
    """Put the secrets of `path` into this process's environment where it has none of its own.

    Refuses a file that another user owns or that others may read, as ssh does.
    """
    try:
        info = path.stat()
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise UsageError(
            f"the hook's secrets file {path} is missing; run `envctl hooks install` again"
        ) from e
    except (OSError, ValueError) as e:
        raise UsageError(f"the hook's secrets file {path} is unreadable ({type(e).__name__})") from e
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise UsageError(
            f"the hook's secrets file {path} is open to others (mode {info.st_mode & 0o777:o}); "
            f"`chmod 600 {path}` and make it yours"
        )
    if not isinstance(data, dict):
        raise UsageError(f"the hook's secrets file {path} is not a JSON object")
    for variable in SECRETS.values():
        value = data.get(variable)
        if isinstance(value, str) and value and not os.environ.get(variable):
            os.environ[variable] = value


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
        "--repo",
        str(target),
        "pipeline",
        "run",
        "--branch",
        branch,
        "--rev",
        sha,
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
