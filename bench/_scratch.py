"""What the benchmarks share: scratch git repositories and timed envctl runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *IDENTITY, *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def example_repo(scratch: Path) -> Path:
    """A git repository on `staging` with this repository's images, specs and notebooks."""
    repo = scratch / "repo"
    for folder in ("environments", "docker", "test-notebooks"):
        shutil.copytree(ROOT / folder, repo / folder)
    git(repo, "init", "-q", "-b", "staging")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "images")
    return repo


def envctl_env(state: Path) -> dict[str, str]:
    """This shell's environment less its ENVCTL_* settings, with its own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
    env["ENVCTL_STATE_DIR"] = str(state)
    return env


def timed_envctl(repo: Path, env: dict[str, str], *args: str) -> tuple[float, dict[str, object]]:
    """Run `envctl ARGS --json` in `repo`; its wall time and its JSON. Exits on failure."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *args, "--json"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"envctl {' '.join(args)} failed ({result.returncode}): {result.stderr[-3000:]}")
    data: dict[str, object] = json.loads(result.stdout)
    return elapsed, data


def compile_bytecode() -> None:
    """Compile the package's bytecode, as installing it (a wheel) does.

    An editable install compiles nothing, and with PYTHONDONTWRITEBYTECODE set (as on this
    machine) every envctl run would compile its modules again: a cost users don't pay.
    """
    compiling = [sys.executable, "-m", "compileall", "-q", str(ROOT / "pipeline")]
    subprocess.run(compiling, check=True, timeout=300, stdout=subprocess.DEVNULL)
