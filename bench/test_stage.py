"""bench/test_stage: what one notebook costs beyond its own cells, against a goal of 2 s.

One run, on the real stack: a scratch git repository with 4 copies of a notebook
that sleeps 2 s, a version recorded for it on the local base image's digest, then
`run_tests` with --jobs 1 and with --jobs 2. Prints, per notebook, the wall time of
its container against papermill's own cell time (the rest is container start,
papermill and kernel start), the same over the whole --jobs 1 run (its wall time less
the image checks and the cells, per notebook: container create and remove, the HTML
rendered on the host, artifacts, any part of the bytecode warm-up that outlasts the
image checks beside it, any run-wide container included), each against the goal, and
the speedup of 2 jobs over 1. Ratios only; nothing asserted.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _scratch import git

from pipeline import settings as settings_module
from pipeline import source
from pipeline.build.engine import connect
from pipeline.ledger.db import Ledger, Version, now
from pipeline.spec import model as spec_module
from pipeline.testing import TestReport, run_tests

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost:5000/dlc/base-cpu:local"
IMAGE = "bench.test-stage"
COPIES = 4
GOAL = 2.0  # seconds of overhead per notebook (issue 15)


def base_ref() -> str:
    client = connect()
    try:
        digests = [
            d for d in client.images.get(BASE).attrs.get("RepoDigests", []) if d.startswith("localhost:5000/")
        ]
    finally:
        client.close()
    if not digests:
        raise SystemExit(f"{BASE} has no registry digest; run `envctl stack up`")
    return str(digests[0])


def make_repo(scratch: Path, isolation: str = "notebook") -> Path:
    repo = scratch / f"repo-{isolation}"
    spec = {
        "image": IMAGE,
        "build": {
            "dockerfile": f"docker/{IMAGE}/Dockerfile",
            "context": f"docker/{IMAGE}",
            "base": {"local": BASE, "gcp": "example.invalid/base:1"},
        },
        "tests": {
            "notebooks": [f"test-notebooks/{IMAGE}/*.ipynb"],
            "timeout": 120,
            "resources": {"memory": "512m", "cpus": 1},
            **({"isolation": isolation} if isolation != "notebook" else {}),
        },
    }
    (repo / "environments").mkdir(parents=True)
    (repo / "environments" / f"{IMAGE}.yaml").write_text(yaml.safe_dump(spec))
    (repo / "docker" / IMAGE).mkdir(parents=True)
    (repo / "docker" / IMAGE / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (repo / "test-notebooks" / IMAGE).mkdir(parents=True)
    for i in range(COPIES):
        shutil.copyfile(
            ROOT / "tests/data/notebooks/sleeps.ipynb", repo / "test-notebooks" / IMAGE / f"sleeps{i}.ipynb"
        )
    git(repo, "init", "-q", "-b", "staging")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    return repo


def timed(jobs: int, repo: Path, scratch: Path, ref: str) -> tuple[float, TestReport]:
    env = {
        "ENVCTL_LEDGER_URL": f"sqlite:///{scratch / 'ledger.db'}",
        "ENVCTL_ARTIFACTS_DIR": str(scratch / "runs"),
    }
    settings = settings_module.load(repo=repo, env=env)
    tree = source.resolve(source.open_repo(repo), "staging")
    ledger = Ledger.for_settings(settings)
    version = ledger.record_version(
        Version(
            image=IMAGE,
            sha=tree.sha,
            tree=tree.tree_sha,
            inputs_key="bench",
            build_key="bench",
            digest=ref.split("@")[1],
            image_ref=ref,
            size=None,
            reused_from=None,
            labels={},
            sbom={},
            created_at=now(),
        )
    )
    start = time.monotonic()
    report = run_tests(settings, spec_module.load(tree, IMAGE), tree, version, jobs=jobs, ledger=ledger)
    elapsed = time.monotonic() - start
    if not report.passed:
        raise SystemExit(f"the bench notebooks failed: {[r.verdict for r in report.results]}")
    return elapsed, report


def main() -> None:
    ref = base_ref()
    with tempfile.TemporaryDirectory(prefix="envctl-bench-") as folder:
        scratch = Path(folder)
        repo = make_repo(scratch)
        serial, one = timed(1, repo, scratch, ref)
        parallel, _ = timed(2, repo, scratch, ref)
        # (an envctl from before tests.isolation existed measures the default only)
        together = None
        if "isolation" in spec_module.Tests.model_fields:
            shared, together = timed(1, make_repo(scratch, "run"), scratch, ref)

    print(f"bench/test_stage: {COPIES} notebooks (each sleeps 2 s) on {ref.split('@')[0]}")
    print(
        f"{'notebook':<16} {'wall s':>8} {'cells s':>8} {'overhead s':>11} {'overhead/cells':>15}"
        f" {'overhead/goal':>14}"
    )
    overheads: list[float] = []
    for result in one.results:
        cells = result.execution_seconds or 0.0
        overhead = result.seconds - cells
        overheads.append(overhead)
        ratio = overhead / cells if cells else float("inf")
        name = result.name.rsplit("/", 1)[-1]
        print(
            f"{name:<16} {result.seconds:>8.2f} {cells:>8.2f} {overhead:>11.2f} {ratio:>15.2f}"
            f" {overhead / GOAL:>13.2f}x"
        )
    mean = sum(overheads) / len(overheads)
    print(
        f"mean overhead per notebook in its container (start, papermill, kernel): {mean:.2f} s"
        f" = {mean / GOAL:.2f}x the goal of {GOAL:.0f} s"
    )
    # IMG001, IMG002 and IMG004 come from one probe container, each with its time: count it once
    checks = max((r.seconds for r in one.checks), default=0.0)
    cells = sum(r.execution_seconds or 0.0 for r in one.results)
    whole = (serial - checks - cells) / len(one.results)
    print(
        f"overhead per notebook over the whole --jobs 1 run ({serial:.2f} s less {checks:.2f} s of image"
        f" checks and {cells:.2f} s of cells, / {len(one.results)}): {whole:.2f} s"
        f" = {whole / GOAL:.2f}x the goal of {GOAL:.0f} s"
    )
    if together is not None:
        run_checks = max((r.seconds for r in together.checks), default=0.0)
        run_cells = sum(r.execution_seconds or 0.0 for r in together.results)
        per = (shared - run_checks - run_cells) / len(together.results)
        print(
            f"tests.isolation: run (one container for the run): {shared:.2f} s, overhead per notebook"
            f" {per:.2f} s = {per / GOAL:.2f}x the goal"
        )
    speedup = serial / parallel
    print(f"--jobs 1: {serial:.2f} s  --jobs 2: {parallel:.2f} s  speedup of 2 jobs over 1: {speedup:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
