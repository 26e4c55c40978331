"""`make demo`: the whole product on this machine, with real git pushes.

In a scratch folder (.envctl/demo, made anew each run): a bare repository seeded from
this repository's docker/, test-notebooks/ and environments/, the envctl hook
installed with --wait, then:

  1. a push to staging            -> builds, tests, staging is set
  2. a merge to production        -> production is set (the tested digest)
  3. a push that breaks a notebook -> tests fail, the report is shown, staging unchanged
  4. a fixing push (new package)  -> passes, staging moves to a new digest
  5. a merge to production        -> production moves, fallback := the old production
  6. envctl rollback              -> production := fallback
  7. envctl status and envctl history

Each step checks what the ledger says afterwards; the summary lists them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".envctl" / "demo"
IMAGE = "nlp.keras-batch"
BIN = Path(sys.executable).parent
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("ENVCTL_", "GIT_"))},
    "ENVCTL_STATE_DIR": str(SCRATCH / "state"),
    "ENVCTL_ACTOR": "demo-owner",
    "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    "GIT_AUTHOR_NAME": "Image Owner",
    "GIT_AUTHOR_EMAIL": "owner@example.com",
    "GIT_COMMITTER_NAME": "Image Owner",
    "GIT_COMMITTER_EMAIL": "owner@example.com",
}
results: list[tuple[str, bool, str]] = []


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(*argv: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(argv), flush=True)
    result = subprocess.run(
        argv, cwd=cwd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    print(result.stdout, end="", flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(argv)}` exited with {result.returncode}")
    return result


def envctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "envctl"), *args, check=check)


def status() -> dict[str, dict[str, object]]:
    result = subprocess.run(
        [str(BIN / "envctl"), "status", IMAGE, "--json"], env=ENV, text=True, capture_output=True, check=False
    )
    if result.returncode != 0:
        print(result.stderr, end="")
        return {}
    data = json.loads(result.stdout)
    rows = data if isinstance(data, list) else data.get("environments", [])
    return {str(row["stage"]): row for row in rows}


def expect(step: str, ok: bool, detail: str) -> None:
    results.append((step, ok, detail))
    print(("ok:   " if ok else "FAIL: ") + f"{step}: {detail}", flush=True)


def git(*args: str, cwd: Path) -> str:
    return run("git", *args, cwd=cwd).stdout.strip()


def main() -> int:
    started = time.monotonic()
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    bare, work = SCRATCH / "notebook-images.git", SCRATCH / "work"
    work.mkdir(parents=True)

    say("a bare repository seeded from this repository, with the envctl hook")
    run("git", "init", "-q", "--bare", "-b", "staging", str(bare))
    for folder in ("docker", "test-notebooks", "environments"):
        shutil.copytree(ROOT / folder, work / folder)
    git("init", "-q", "-b", "staging", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "Notebook images: nlp.keras-batch", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    envctl("hooks", "install", str(bare), "--wait")

    say("1. push to staging: build, test, staging")
    git("push", "-q", "origin", "staging", cwd=work)
    envs = status()
    expect("push to staging", envs.get("staging", {}).get("sha") == first, f"staging = {first[:12]}")

    say("2. merge to production: the tested digest, no build")
    git("push", "-q", "origin", "staging:production", cwd=work)
    envs = status()
    first_digest = envs.get("staging", {}).get("digest")
    expect(
        "merge to production",
        envs.get("production", {}).get("sha") == first and envs["production"].get("digest") == first_digest,
        f"production = {first[:12]} ({str(first_digest)[:19]})",
    )

    say("3. a change that breaks a test notebook")
    notebook = work / "test-notebooks" / IMAGE / "text.ipynb"
    good_text = notebook.read_text()
    notebook.write_text(good_text.replace("['pos', 'neg']", "['neg', 'pos']"))
    git("commit", "-q", "-am", "Expect the wrong labels", cwd=work)
    broken = git("rev-parse", "HEAD", cwd=work)
    push = run("git", "push", "origin", "staging", cwd=work)
    envs = status()
    expect(
        "broken notebook refused",
        envs.get("staging", {}).get("sha") == first and "AssertionError" in push.stdout,
        f"{broken[:12]} failed with the cell and error shown; staging still {first[:12]}",
    )

    say("4. a fixing change with a new package: a new digest")
    notebook.write_text(good_text)
    requirements = work / "docker" / IMAGE / "requirements.txt"
    requirements.write_text(requirements.read_text() + "tqdm>=4.66,<5\n")
    git("commit", "-q", "-am", "Fix the labels; add tqdm", cwd=work)
    fixed = git("rev-parse", "HEAD", cwd=work)
    git("push", "-q", "origin", "staging", cwd=work)
    envs = status()
    fixed_digest = envs.get("staging", {}).get("digest")
    expect(
        "fix passes",
        envs.get("staging", {}).get("sha") == fixed and fixed_digest != first_digest,
        f"staging = {fixed[:12]} ({str(fixed_digest)[:19]})",
    )

    say("5. merge to production: fallback keeps the old production")
    git("push", "-q", "origin", "staging:production", cwd=work)
    envs = status()
    expect(
        "production moves, fallback kept",
        envs.get("production", {}).get("sha") == fixed and envs.get("fallback", {}).get("sha") == first,
        f"production = {fixed[:12]}, fallback = {first[:12]}",
    )

    say("6. envctl rollback: production := fallback")
    envctl("rollback", IMAGE, "--reason", "demo: roll back the tqdm change")
    envs = status()
    expect(
        "rollback",
        envs.get("production", {}).get("sha") == first and envs["production"].get("digest") == first_digest,
        f"production = {first[:12]} again",
    )

    say("7. status and history")
    envctl("status", IMAGE)
    envctl("history", IMAGE)
    envctl("pipeline", "list")
    pulled = run("docker", "pull", f"localhost:5000/{IMAGE}:production", check=False)
    expect(
        "plain docker pull",
        f"Digest: {first_digest}" in pulled.stdout,
        f"localhost:5000/{IMAGE}:production is {str(first_digest)[:19]}",
    )

    say(f"summary ({time.monotonic() - started:.0f} s)")
    for step, ok, detail in results:
        print(f"  {'ok  ' if ok else 'FAIL'}  {step:<32} {detail}")
    failed = [r for r in results if not r[1]]
    print(f"\n{len(results) - len(failed)} of {len(results)} steps as expected; scratch folder: {SCRATCH}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
