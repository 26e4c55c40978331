"""The containers of a test run: one notebook (executed and rendered to HTML), one smoke check.

Each function runs one container through `runner.run_container` and turns how it
ended into a `Result` with its artifacts moved into the run folder. A notebook's
container runs `driver.SCRIPT`: papermill, then nbconvert in the same process.
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
from pipeline.testing.driver import SCRIPT
from pipeline.testing.model import ContainerExit, Result
from pipeline.testing.params import NotebookPlan
from pipeline.testing.runner import Limits, SharedContainer, Tracker, run_container

Sink = Callable[[str], None]
IN, OUT, CWD, BIN = "/envctl/in", "/envctl/out", "/envctl/cwd", "/envctl/bin"
OUTS, CWDS = "/envctl/outs", "/envctl/cwds"  # with one container per run: <folder>/<index>
DRIVER = "driver.py"


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
    shared: SharedContainer | None = None  # tests.isolation: run

    @staticmethod
    def shared_mounts(work: Path) -> dict[Path, tuple[str, str]]:
        """What the one container of a run mounts: every notebook's folders, under its index."""
        return {
            work / "in": (IN, "ro"),
            work / "out": (OUTS, "rw"),
            work / "cwd": (CWDS, "rw"),
            driver_folder(work): (BIN, "ro"),
        }

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
    html_name = PurePosixPath(name).with_suffix(".html").name
    out_at, cwd_at = (f"{OUTS}/{index}", f"{CWDS}/{index}") if run.shared else (OUT, CWD)
    job_args = {
        "input": f"{IN}/{rel}",
        "output": f"{out_at}/{name}",
        "html": f"{out_at}/{html_name}",
        "parameters": job.parameters,
        "kernel": job.kernel,
        "timeout": tests.timeout,
        "cwd": cwd_at,
    }
    command = ["python3", f"{BIN}/{DRIVER}", json.dumps(job_args, sort_keys=True)]
    log_rel = PurePosixPath(rel).with_suffix(".log").as_posix()
    deadline = tests.timeout + run.grace
    if run.shared is not None:
        ran = run.shared.run(command, deadline=deadline, log_file=run.run_dir / log_rel)
    else:
        ran = run_container(
            run.client,
            run.tracker,
            image_ref=run.version.image_ref,
            command=command,
            labels=run.labels(job.path),
            limits=run.limits,
            deadline=deadline,
            mounts={
                run.work / "in": (IN, "ro"),
                out: (OUT, "rw"),
                scratch: (CWD, "rw"),
                driver_folder(run.work): (BIN, "ro"),
            },
            log_file=run.run_dir / log_rel,
            environment=tests.env,
        )
    ran, rendering = papermill_result(ran, out / f"{name}.status")
    executed = artifacts.read_json(out / name)
    notebook: str | None = None
    html: str | None = None
    html_error = ""
    if (out / name).is_file():
        artifacts.move_into(out / name, run.run_dir / rel)
        notebook = rel
        html_rel = PurePosixPath(rel).with_suffix(".html").as_posix()
        if (out / html_name).is_file():
            artifacts.move_into(out / html_name, run.run_dir / html_rel)
            html = html_rel
        else:
            reason = (
                (out / f"{html_name}.error").read_text(errors="replace")
                if (out / f"{html_name}.error").is_file()
                else ""
            )
            html_error = (
                reason.strip() or rendering or ran.start_error or f"the container exited with {ran.exit_code}"
            )
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
        html=html,
        log=log_rel if (run.run_dir / log_rel).is_file() else None,
        warnings=job.warnings,
        html_error=html_error,
    )


def papermill_result(ran: ContainerExit, status: Path) -> tuple[ContainerExit, str]:
    """How the notebook ended, from the driver's status file, and why its rendering did not finish.

    The driver writes papermill's exit code before rendering the HTML; a kill, deadline or
    OOM after that happened while rendering: it costs the HTML, not the notebook's verdict.
    """
    data = artifacts.read_json(status) if status.is_file() else None
    status.unlink(missing_ok=True)
    code = data.get("exit_code") if isinstance(data, dict) else None
    if not isinstance(code, int) or (ran.exit_code == code and not ran.deadline_hit and not ran.oom_killed):
        return ran, ""
    if ran.deadline_hit:
        why = "the rendering was still running at the notebook's deadline; killed"
    elif ran.oom_killed or ran.exit_code == 137:
        why = "the rendering ran out of memory"
    else:
        why = ran.start_error or f"the container exited with {ran.exit_code} while rendering"
    return dataclasses.replace(ran, exit_code=code, deadline_hit=False, oom_killed=False, start_error=""), why


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


def driver_folder(work: Path) -> Path:
    """The folder holding the driver script, written once per run (read-only in containers)."""
    folder = work / "bin"
    if not (folder / DRIVER).is_file():
        artifacts.write_atomic(folder / DRIVER, SCRIPT.encode())
    return folder


def render_html(run: Run, results: list[Result], warn: Sink) -> list[Result]:
    """Say which executed notebooks have no HTML rendering, and why (each container renders its own)."""
    missing = [r for r in results if r.notebook and not r.html]
    if missing:
        why = "; ".join(dict.fromkeys(r.html_error for r in missing if r.html_error)) or "see the logs"
        warn(f"no HTML rendering for {len(missing)} notebook(s): {why}")
    return results
