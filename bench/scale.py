"""Benchmark: `status` and `history IMAGE` with 100 images against one image.

Builds two SQLite ledgers: one with a single image, one with 100 images, each image
with 1,000 events, 10 versions and its three environments set; and a private registry
(docker-registry on 127.0.0.1, removed afterwards) holding every environment's tag.
Then, best of N each:

- `envctl status --json`:         100 images (300 tags read) vs one image; goal <= 3x
- `envctl history IMAGE --json`:  one image of the 100 vs the same in the one-image ledger; goal <= 2x

Prints each time, each ratio against its goal, and the query plans of the reads.

Run: PYTHONPATH=$PWD .venv/bin/python bench/scale.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._registry import push_tiny_image, start_registry  # noqa: E402
from bench._scratch import compile_bytecode  # noqa: E402
from pipeline.ledger.db import Ledger, environments, events, now, versions  # noqa: E402

IMAGES = 100
EVENTS = 1000
VERSIONS = 10
RUNS = 5
STAGES = ("staging", "production", "fallback")


def image_name(i: int) -> str:
    return f"team{i:03d}.task"


def fill(url: str, count: int, digest: str, host: str) -> None:
    """`count` images: versions, three environments at the last version, EVENTS events each."""
    ledger = Ledger.open(url)
    start = now() - timedelta(days=30)
    with ledger.transaction() as conn:
        for i in range(count):
            image = image_name(i)
            shas = [f"{i:03d}{v:037d}" for v in range(VERSIONS)]
            conn.execute(
                versions.insert(),
                [
                    {
                        "image": image,
                        "sha": sha,
                        "tree": sha,
                        "inputs_key": sha[:16],
                        "build_key": sha[:16],
                        "digest": digest,
                        "image_ref": f"{host}/{image}@{digest}",
                        "size": 1,
                        "reused_from": None,
                        "labels": "{}",
                        "sbom": "{}",
                        "created_at": start,
                    }
                    for sha in shas
                ],
            )
            conn.execute(
                environments.insert(),
                [
                    {
                        "image": image,
                        "stage": stage,
                        "sha": shas[-1],
                        "digest": digest,
                        "generation": EVENTS // 3,
                        "pinned": False,
                        "updated_at": start + timedelta(days=29),
                    }
                    for stage in STAGES
                ],
            )
            conn.execute(
                events.insert(),
                [
                    {
                        "at": start + timedelta(minutes=n),
                        "image": image,
                        "stage": STAGES[n % 3],
                        "action": "promote",
                        "from_sha": shas[(n - 1) % VERSIONS],
                        "to_sha": shas[n % VERSIONS],
                        "from_digest": digest,
                        "to_digest": digest,
                        "actor": "bench",
                        "ci_run_id": None,
                        "reason": f"move {n}",
                        "forced": False,
                    }
                    for n in range(EVENTS)
                ],
            )


def best(argv: list[str], *, cwd: Path, env: dict[str, str], expect: int) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        result = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv[3:])} failed ({result.returncode}): {result.stderr.strip()}")
        found = json.loads(result.stdout)
        if len(found) != expect:
            raise SystemExit(f"{' '.join(argv[3:])}: {len(found)} rows, expected {expect}")
        if any(row.get("drift") for row in found):
            raise SystemExit(f"{' '.join(argv[3:])}: drift where every tag matches the ledger")
    return min(times)


def plans(url: str) -> list[str]:
    """SQLite's query plans of the reads that status and history make."""
    engine = sa.create_engine(url)
    queries = [
        ("status", "SELECT * FROM environments"),
        ("status IMAGE", "SELECT * FROM environments WHERE image = 'team000.task'"),
        ("known images", "SELECT DISTINCT image FROM versions"),
        ("history IMAGE", "SELECT * FROM events WHERE image = 'team000.task' ORDER BY id"),
        (
            "history ENV_ID",
            "SELECT * FROM events WHERE image = 'team000.task' AND stage = 'staging' ORDER BY id",
        ),
    ]
    lines = []
    with engine.connect() as conn:
        for name, query in queries:
            steps = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")]
            lines.append(f"  {name:<15} {'; '.join(steps)}")
    engine.dispose()
    return lines


def main() -> None:
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="envctl-bench-scale-"))
    process, host, _ = start_registry(work)
    try:
        session = requests.Session()
        print(f"pushing {IMAGES} images x 3 tags to the bench registry {host} ...", file=sys.stderr)
        digest = ""
        for i in range(IMAGES):
            digest = push_tiny_image(session, host, image_name(i), list(STAGES), "scale")
        one, many = f"sqlite:///{work / 'one.db'}", f"sqlite:///{work / 'many.db'}"
        print(f"filling the ledgers: 1 and {IMAGES} images, {EVENTS} events each ...", file=sys.stderr)
        fill(one, 1, digest, host)
        fill(many, IMAGES, digest, host)
        (work / "repo" / "environments").mkdir(parents=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
        base |= {"ENVCTL_REGISTRY": host, "ENVCTL_STATE_DIR": str(work / "state")}
        envctl = [sys.executable, "-m", "pipeline.cli.main"]
        cwd = work / "repo"
        status_one = best(
            [*envctl, "status", "--json"], cwd=cwd, env=base | {"ENVCTL_LEDGER_URL": one}, expect=3
        )
        status_many = best(
            [*envctl, "status", "--json"], cwd=cwd, env=base | {"ENVCTL_LEDGER_URL": many}, expect=3 * IMAGES
        )
        history = [*envctl, "history", image_name(0), "--json"]
        history_one = best(history, cwd=cwd, env=base | {"ENVCTL_LEDGER_URL": one}, expect=EVENTS)
        history_many = best(history, cwd=cwd, env=base | {"ENVCTL_LEDGER_URL": many}, expect=EVENTS)
        print(f"ledger: {IMAGES} images x {EVENTS} events, {VERSIONS} versions, 3 envs each; best of {RUNS}")
        for name, small, large, goal in (
            ("status --json", status_one, status_many, 3.0),
            ("history IMAGE --json", history_one, history_many, 2.0),
        ):
            ratio = large / small
            verdict = "meets" if ratio <= goal else "MISSES"
            print(
                f"{name}: 1 image {small * 1000:.0f} ms, {IMAGES} images {large * 1000:.0f} ms, "
                f"{ratio:.2f}x; goal {goal:.0f}x: {verdict}"
            )
        print("query plans (SQLite):")
        for line in plans(many):
            print(line)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
