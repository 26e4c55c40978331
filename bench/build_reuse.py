"""bench/build_reuse: a real build against the reuse of a commit that only changes a notebook.

One run, on the real stack: copies the example image into a scratch git repository,
builds it with no layer cache, commits a change to a test notebook only, builds again,
and prints both times and their ratio. It proves the reuse ran no docker build (no
container or image event on the Docker Engine while it ran) and kept the digest.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from _scratch import envctl_env, example_repo, git, timed_envctl

from pipeline.build.engine import connect

IMAGE = "nlp.keras-batch"


def main() -> None:
    client = connect()
    with tempfile.TemporaryDirectory(prefix="envctl-bench-") as scratch:
        repo = example_repo(Path(scratch))
        env = envctl_env(Path(scratch) / "state")
        build = ("build", IMAGE, "--rev", "staging", "--quiet")

        build_time, built = timed_envctl(repo, env, *build, "--no-cache")

        notebook = repo / "test-notebooks" / IMAGE / "fit.ipynb"
        notebook.write_text(notebook.read_text().replace("A small model fit", "A small model fit (bench)"))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "notebook only")
        since = datetime.now(UTC)
        reuse_time, reused = timed_envctl(repo, env, *build)
        until = datetime.now(UTC)
        # docker-py sends `since` in whole seconds: the first build's push, finished in the
        # same second, would be counted; keep only events from after the reuse started.
        since_ns = int(since.timestamp() * 1e9)
        engine_events = [
            e
            for e in client.events(since=since, until=until, decode=True)
            if e.get("Type") in {"container", "image", "builder"} and int(e.get("timeNano", 0)) >= since_ns
        ]

    print(f"real build (no cache):   {build_time:8.2f} s  digest {built['digest']}")
    print(
        f"reuse (notebook change): {reuse_time:8.2f} s  digest {reused['digest']}  action {reused['action']}"
    )
    print(f"ratio build/reuse:       {build_time / reuse_time:8.1f}x")
    print(f"engine events during the reuse: {len(engine_events)} (container/image/builder)")
    for event in engine_events:
        print(f"  {event.get('Type')} {event.get('Action')} {event.get('id', '')[:30]} {event.get('time')}")
    ok = reused["action"] == "reused" and reused["digest"] == built["digest"] and not engine_events
    print("reuse ran no docker build and kept the digest" if ok else "REUSE CHECK FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
