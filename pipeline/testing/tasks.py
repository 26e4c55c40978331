"""The containers of a test run: the bytecode warm-up, one notebook, one smoke check.

Each function runs one container through `runner.run_container` and turns how it
ended into a `Result` with its artifacts moved into the run folder. A notebook's
container runs `driver.SCRIPT` (papermill's API); its HTML rendering is made here, on the
host, from the executed notebook (`artifacts.notebook_html`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Collection
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.ledger.db import Version
from pipeline.spec.model import Spec
from pipeline.testing import artifacts
from pipeline.testing.classify import as_list, as_mapping, classify_command, classify_notebook
from pipeline.testing.driver import SCRIPT
from pipeline.testing.model import Result, Verdict
from pipeline.testing.params import NotebookPlan
from pipeline.testing.runner import Limits, SharedContainer, Tracker, run_container

log = logging.getLogger(__name__)
Sink = Callable[[str], None]
IN, OUT, CWD, BIN = "/envctl/in", "/envctl/out", "/envctl/cwd", "/envctl/bin"
PYCACHE = "/envctl/pycache"  # the run's bytecode cache (`warm_up`)
WARM_UP_DEADLINE = 120.0
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
    pycache: Path | None = None  # the bytecode cache `warm_up` filled, mounted read-only

    def shared_mounts(self) -> dict[Path, tuple[str, str]]:
        """What the one container of a run mounts: every notebook's folders, under its index."""
        return {
            self.work / "in": (IN, "ro"),
            self.work / "out": (OUTS, "rw"),
            self.work / "cwd": (CWDS, "rw"),
            driver_folder(self.work): (BIN, "ro"),
            **self.pycache_mount(),
        }

    def pycache_mount(self) -> dict[Path, tuple[str, str]]:
        return {self.pycache: (PYCACHE, "ro")} if self.pycache is not None else {}

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
    total = 0.0
    for cell in as_list(executed.get("cells")):
        duration = as_mapping(as_mapping(as_mapping(cell).get("metadata")).get("papermill")).get("duration")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            total += float(duration)
    return total


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
    out_at, cwd_at = (f"{OUTS}/{index}", f"{CWDS}/{index}") if run.shared else (OUT, CWD)
    job_args = {
        "input": f"{IN}/{rel}",
        "output": f"{out_at}/{name}",
        "parameters": job.parameters,
        "kernel": job.kernel,
        "timeout": tests.timeout,
        "cwd": cwd_at,
        **({"pycache": PYCACHE} if run.pycache is not None else {}),
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
                **run.pycache_mount(),
            },
            log_file=run.run_dir / log_rel,
            environment=tests.env,
        )
    executed = artifacts.read_json(out / name)
    verdict = classify_notebook(
        ran,
        executed,
        dockerfile=run.spec.build.dockerfile,
        timeout=tests.timeout,
        memory=tests.resources.memory,
        deadline=deadline,
    )
    notebook: str | None = None
    html: str | None = None
    html_error = ""
    if (out / name).is_file():
        artifacts.move_into(out / name, run.run_dir / rel)
        notebook = rel
        if executed is not None:
            html, html_error = write_html(run.run_dir, rel, job.path, executed, verdict)
        else:
            html_error = f"{name} as papermill left it is not a notebook (JSON)"
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


def write_html(
    run_dir: Path, rel: str, name: str, executed: dict[str, Any], verdict: Verdict
) -> tuple[str | None, str]:
    """The notebook's HTML rendering beside it: (its path in the run, "") or (None, why not).

    A rendering failure costs the HTML only: the notebook keeps its verdict.
    """
    try:
        page = artifacts.notebook_html(name, executed, verdict)
    except Exception as e:
        log.debug("rendering %s failed", rel, exc_info=True)
        return None, f"rendering {PurePosixPath(rel).name} failed ({type(e).__name__}: {e})"
    html = PurePosixPath(rel).with_suffix(".html").as_posix()
    artifacts.write_atomic(run_dir / html, page)
    return html, ""


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


def warm_up(run: Run, kernels: Collection[str]) -> Path | None:
    """Fill the run's bytecode cache: the folder to mount in every notebook's container, or None.

    Images often ship their site-packages without `__pycache__` (removed to save space,
    or installed with --no-compile; the local base image does), so each fresh container
    compiled papermill, nbformat, jsonschema, IPython, ipykernel and debugpy from source:
    about a second of CPU per notebook. Here one container of the version runs the
    driver's warm-up (an empty cell in each kernel the notebooks name) with this folder
    writable as its `sys.pycache_prefix`; the notebooks' containers mount it read-only.
    Only the driver and a Python kernel's start-up read it: the driver has the kernel
    forget it before the first cell (`driver.FORGET`), so a notebook's own imports and
    processes see the image as it is. Python checks each cached file against its source
    (mtime and size), as it does in `__pycache__`.

    The warm-up runs as the user running envctl (only the image's own code runs in it),
    so the cache belongs to that user; it is then made read-only (folders 0555, files
    0444) before any notebook mounts it: nobody else can plant bytecode in it.
    `WarmUpFailed` (the reason): the notebooks run without it.
    """
    if "PYTHONPYCACHEPREFIX" in run.spec.tests.env:
        return None  # the spec chose its own
    folder = run.work / "pycache"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    environment = dict(run.spec.tests.env)
    environment.setdefault("HOME", "/tmp")  # a user the image may not know: a writable home for Jupyter
    ran = run_container(
        run.client,
        run.tracker,
        image_ref=run.version.image_ref,
        command=["python3", f"{BIN}/{DRIVER}", json.dumps({"warm": sorted(kernels), "pycache": PYCACHE})],
        labels=run.labels("warm-up"),
        limits=run.limits,
        deadline=WARM_UP_DEADLINE,
        mounts={folder: (PYCACHE, "rw"), driver_folder(run.work): (BIN, "ro")},
        environment=environment,
        user=f"{os.getuid()}:{os.getgid()}",
    )
    if ran.exit_code != 0:
        last = next((line for line in reversed(ran.logs.splitlines()) if line.strip()), "")
        why = ran.start_error or (
            f"past its deadline of {WARM_UP_DEADLINE:.0f} s"
            if ran.deadline_hit
            else f"exit {ran.exit_code}: {last}"
        )
        raise WarmUpFailed(why)
    read_only(folder)
    return folder


class WarmUpFailed(Exception):
    """The bytecode warm-up did not fill the cache; the message says why."""


def read_only(folder: Path) -> None:
    """Make a tree read-only for everyone (folders 0555, files 0444); symbolic links are left alone."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o444)
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o555)
    folder.chmod(0o555)


def remove_work(work: Path) -> None:
    """Remove a run's working folder, read-only parts (the bytecode cache) included."""
    for root, dirs, _ in os.walk(work):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(0o700)
    shutil.rmtree(work, ignore_errors=True)


def driver_folder(work: Path) -> Path:
    """The folder holding the driver script, written once per run (read-only in containers)."""
    folder = work / "bin"
    if not (folder / DRIVER).is_file():
        artifacts.write_atomic(folder / DRIVER, SCRIPT.encode())
    return folder


def render_html(run: Run, results: list[Result], warn: Sink) -> list[Result]:
    """Say which executed notebooks have no HTML rendering, and why (`run_notebook` renders each)."""
    missing = [r for r in results if r.notebook and not r.html]
    if missing:
        why = "; ".join(dict.fromkeys(r.html_error for r in missing if r.html_error)) or "see the logs"
        warn(f"no HTML rendering for {len(missing)} notebook(s): {why}")
    return results
