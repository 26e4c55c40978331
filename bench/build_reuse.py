"""bench/build_reuse: a real build against the reuse of a commit that only changes a notebook.

One run, on the real stack: copies the example image into a scratch git repository,
builds it with no layer cache, commits a change to a test notebook only, builds again,
and prints both times and their ratio. It proves the reuse ran no docker build (no
container or image event on the Docker Engine while it ran) and kept the digest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.docker_engine import connect

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "nlp.keras-batch"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def envctl_build(repo: Path, state: Path, *extra: str) -> tuple[float, dict[str, object]]:
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "build",
            IMAGE,
            "--rev",
            "staging",
            "--json",
            "--quiet",
            *extra,
        ],
        cwd=repo,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "ENVCTL_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"build failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    data: dict[str, object] = json.loads(result.stdout)
    return elapsed, data


def main() -> None:
    client = connect()
    with tempfile.TemporaryDirectory(prefix="envctl-bench-") as scratch:
        repo = Path(scratch) / "repo"
        for folder in ("environments", "docker", "test-notebooks"):
            shutil.copytree(ROOT / folder, repo / folder)
        git(repo, "init", "-q", "-b", "staging")
        git(
            repo,
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        )
        git(repo, "add", "-A")
        git(
            repo,
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            "-m",
            "images",
        )
        state = Path(scratch) / "state"

        build_time, built = envctl_build(repo, state, "--no-cache")

        notebook = repo / "test-notebooks" / IMAGE / "fit.ipynb"
        notebook.write_text(notebook.read_text().replace("A small model fit", "A small model fit (bench)"))
        git(repo, "add", "-A")
        git(
            repo,
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            "-m",
            "notebook only",
        )
        since = datetime.now(UTC)
        reuse_time, reused = envctl_build(repo, state)
        until = datetime.now(UTC)
        engine_events = [
            e
            for e in client.events(since=since, until=until, decode=True)
            if e.get("Type") in {"container", "image", "builder"}
        ]

    print(f"real build (no cache):   {build_time:8.2f} s  digest {built['digest']}")
    print(
        f"reuse (notebook change): {reuse_time:8.2f} s  digest {reused['digest']}  action {reused['action']}"
    )
    print(f"ratio build/reuse:       {build_time / reuse_time:8.1f}x")
    print(f"engine events during the reuse: {len(engine_events)} (container/image/builder)")
    ok = reused["action"] == "reused" and reused["digest"] == built["digest"] and not engine_events
    print("reuse ran no docker build and kept the digest" if ok else "REUSE CHECK FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
