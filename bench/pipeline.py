"""bench/pipeline: a full staging pipeline against its no-op re-run, in one run.

Copies the example image into a scratch git repository with a fresh ledger, runs
`envctl pipeline run --branch staging` (build or reuse of Docker layers, push, SBOM,
every test notebook and smoke check, promotion), then runs it again for the same SHA,
which must do nothing: no build, no test run. Prints both times and their ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    who = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    return subprocess.run(
        ["git", "-C", str(repo), *who, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def pipeline(repo: Path, env: dict[str, str], sha: str) -> tuple[float, dict[str, object]]:
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "pipeline",
            "run",
            "--branch",
            "staging",
            "--rev",
            sha,
            "--json",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"pipeline failed ({result.returncode}): {result.stderr[-3000:]}")
    data: dict[str, object] = json.loads(result.stdout)
    return elapsed, data


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="envctl-bench-") as scratch:
        repo = Path(scratch) / "repo"
        for folder in ("environments", "docker", "test-notebooks"):
            shutil.copytree(ROOT / folder, repo / folder)
        git(repo, "init", "-q", "-b", "staging")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "images")
        sha = git(repo, "rev-parse", "HEAD")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
        env["ENVCTL_STATE_DIR"] = str(Path(scratch) / "state")

        full_time, full = pipeline(repo, env, sha)
        noop_time, noop = pipeline(repo, env, sha)

    verdicts = full["verdicts"]
    again = noop["verdicts"]
    assert isinstance(verdicts, dict) and isinstance(again, dict)
    print(f"full staging pipeline: {full_time:7.2f} s  state {full['state']}  {json.dumps(verdicts)}")
    print(f"no-op re-run:          {noop_time:7.2f} s  state {noop['state']}")
    print(f"ratio full/no-op:      {full_time / noop_time:7.1f}x")
    did_nothing = all(v["built"] is None and v["test_run"] is None for v in again.values())
    print("re-run built nothing and tested nothing" if did_nothing else "RE-RUN DID WORK")
    if noop["state"] != "noop" or not did_nothing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
