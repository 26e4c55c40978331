"""The containers of a test run: one notebook, one smoke check, the HTML renderings.

Each function runs one container through `runner.run_container` and turns how it
ended into a `Result` with its artifacts moved into the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.ledger.db import Version
from pipeline.spec.model import Spec
from pipeline.testing import artifacts
from pipeline.testing.classify import classify_command, classify_notebook
from pipeline.testing.model import Result
from pipeline.testing.params import NotebookPlan
from pipeline.testing.runner import Limits, Tracker, run_container

Sink = Callable[[str], None]
HTML_DEADLINE = 300.0
IN, OUT, HTML, CWD = "/envctl/in", "/envctl/out", "/envctl/html", "/envctl/cwd"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """What every container of one run shares."""

    client: Any
    tracker: Tracker
    spec: Spec
    version: Version
    run_dir: Path
    work: Path
    root: str
    limits: Limits
    grace: float

    def labels(self, what: str) -> dict[str, str]:
        return {
            "org.envctl.image": self.spec.image,
            "org.envctl.sha": self.version.sha,
            "org.envctl.notebook": what,
            "org.envctl.role": "test",
        }

    def relative(self, path: str) -> str:
        return path[len(self.root) + 1 :] if self.root else path


def _execution_seconds(executed: dict[str, Any] | None) -> float | None:
    if not executed:
        return None
    cells = executed.get("cells", [])
    return float(sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0 for c in cells))


def run_notebook(run: Run, index: int, job: NotebookPlan) -> Result:
    rel = run.relative(job.path)
    out = run.work / "out" / str(index)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)
    name = PurePosixPath(rel).name
    tests = run.spec.tests
    # The notebook runs in a writable copy of its folder: notebooks save files beside
    # themselves, and the committed inputs (mounted read-only) must stay as they are.
    folder = PurePosixPath(rel).parent.as_posix()
    scratch = run.work / "cwd" / str(index)
    shutil.copytree(run.work / "in" / folder, scratch, dirs_exist_ok=True)
    for path in [scratch, *scratch.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    command = [
        "papermill",
        f"{IN}/{rel}",
        f"{OUT}/{name}",
        "-y",
        json.dumps(job.parameters, sort_keys=True),
        "-k",
        job.kernel,
        "--execution-timeout",
        str(tests.timeout),
        "--cwd",
        CWD,
        "--log-output",
        "--no-progress-bar",
    ]
    log_rel = PurePosixPath(rel).with_suffix(".log").as_posix()
    deadline = tests.timeout + run.grace
    ran = run_container(
        run.client,
        run.tracker,
        image_ref=run.version.image_ref,
        command=command,
        labels=run.labels(job.path),
        limits=run.limits,
        deadline=deadline,
        mounts={run.work / "in": (IN, "ro"), out: (OUT, "rw"), scratch: (CWD, "rw")},
        log_file=run.run_dir / log_rel,
        environment=tests.env,
    )
    executed = artifacts.read_json(out / name)
    notebook: str | None = None
    if (out / name).is_file():
        artifacts.move_into(out / name, run.run_dir / rel)
        notebook = rel
    verdict = classify_notebook(
        ran,
        executed,
        dockerfile=run.spec.build.dockerfile,
        timeout=tests.timeout,
        memory=tests.resources.memory,
        deadline=deadline,
    )
    return Result(
        name=job.path,
        kind="notebook",
        verdict=verdict,
        seconds=ran.seconds,
        execution_seconds=_execution_seconds(executed),
        exit_code=ran.exit_code,
        notebook=notebook,
        log=log_rel if (run.run_dir / log_rel).is_file() else None,
        warnings=job.warnings,
    )


def run_smoke(run: Run, index: int, command: str) -> Result:
    log_rel = f"smoke-{index + 1}.log"
    ran = run_container(
        run.client,
        run.tracker,
        image_ref=run.version.image_ref,
        command=shlex.split(command),
        labels=run.labels(f"smoke:{index + 1}"),
        limits=run.limits,
        deadline=run.spec.tests.timeout + run.grace,
        log_file=run.run_dir / log_rel,
    )
    verdict = classify_command(
        ran, command=command, dockerfile=run.spec.build.dockerfile, memory=run.spec.tests.resources.memory
    )
    return Result(
        name=f"smoke: {command}",
        kind="smoke",
        verdict=verdict,
        seconds=ran.seconds,
        exit_code=ran.exit_code,
        log=log_rel if (run.run_dir / log_rel).is_file() else None,
    )


def render_html(run: Run, results: list[Result], warn: Sink) -> list[Result]:
    done = [r.notebook for r in results if r.notebook]
    if not done:
        return results
    folder = run.work / "html"
    staged = artifacts.stage_for_html(run.run_dir, done, folder)
    ran = run_container(
        run.client,
        run.tracker,
        image_ref=run.version.image_ref,
        command=["jupyter", "nbconvert", "--to", "html", *[f"{HTML}/{s}" for s in staged]],
        labels=run.labels("html"),
        limits=run.limits,
        deadline=HTML_DEADLINE,
        mounts={folder: (HTML, "rw")},
        log_file=run.run_dir / "html.log",
    )
    rendered = artifacts.collect_html(run.run_dir, staged, folder)
    if len(rendered) < len(staged):
        why = ran.start_error or f"nbconvert exited with {ran.exit_code}; see html.log"
        warn(f"no HTML rendering for {len(staged) - len(rendered)} notebook(s): {why}")
    return [dataclasses.replace(r, html=rendered.get(r.notebook or "")) for r in results]
