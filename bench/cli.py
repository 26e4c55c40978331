"""Benchmark: how long envctl takes to start, side by side with the bare interpreter.

In one run, best of N each (the machine is shared and noisy; the minimum is the
cleanest estimate of start-up cost):
- `python -c pass`                      the floor
- `envctl --help`                       goal: within 4x of the floor
- `envctl status --json`, empty ledger  goal: within 8x of the floor
Prints each time, its ratio to the floor and whether it meets its goal.

Run: .venv/bin/python bench/cli.py  (status asks the local registry: `envctl stack up`)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUNS = 7

from bench._scratch import compile_bytecode  # noqa: E402


def best(argv: list[str], *, cwd: Path, env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    compile_bytecode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
    with tempfile.TemporaryDirectory(prefix="envctl-bench-cli-") as scratch:
        repo = Path(scratch)
        (repo / "environments").mkdir()
        env["ENVCTL_STATE_DIR"] = str(repo / ".envctl")
        envctl = [sys.executable, "-m", "pipeline.cli.main"]
        floor = best([sys.executable, "-c", "pass"], cwd=repo, env=env)
        rows = [
            ("envctl --help", best([*envctl, "--help"], cwd=repo, env=env), 4.0),
            (
                "envctl status --json (empty ledger)",
                best([*envctl, "status", "--json"], cwd=repo, env=env),
                8.0,
            ),
        ]
    print(f"python -c pass: {floor * 1000:.0f} ms (best of {RUNS})")
    for name, seconds, goal in rows:
        ratio = seconds / floor
        verdict = "meets" if ratio <= goal else "MISSES"
        print(f"{name}: {seconds * 1000:.0f} ms, {ratio:.1f}x the interpreter; goal {goal:.0f}x: {verdict}")


if __name__ == "__main__":
    main()
