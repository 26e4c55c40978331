"""bench/pipeline_rerun: a full staging pipeline against its no-op re-run, in one run.

Copies the example image into a scratch git repository with a fresh ledger, runs
`envctl pipeline run --branch staging` (build or reuse of Docker layers, push, SBOM,
every test notebook and smoke check, promotion), then runs it again for the same SHA,
which must do nothing: no build, no test run. Prints both times and their ratio.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _scratch import envctl_env, example_repo, git, timed_envctl


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="envctl-bench-") as scratch:
        repo = example_repo(Path(scratch))
        sha = git(repo, "rev-parse", "HEAD")
        env = envctl_env(Path(scratch) / "state")
        run = ("pipeline", "run", "--branch", "staging", "--rev", sha)

        full_time, full = timed_envctl(repo, env, *run)
        noop_time, noop = timed_envctl(repo, env, *run)

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
