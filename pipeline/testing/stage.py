"""The test stage: run every test notebook and smoke check of a spec inside one version.

`run_tests` is the library entry point (the CLI and the pipelines call it): plan the
notebooks from the commit, run up to `jobs` containers at once, classify each
result, write the artifacts and record the run in the ledger as evidence.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pipeline import progress
from pipeline.build import engine as docker_engine
from pipeline.errors import UsageError
from pipeline.ledger.db import Ledger, TestRun, Version, record_test_run
from pipeline.settings import Settings
from pipeline.source import Tree
from pipeline.spec import model as spec_module
from pipeline.spec.keys import common_root, tests_key
from pipeline.spec.lint.writes import notebook_folders
from pipeline.spec.model import Spec
from pipeline.testing import artifacts
from pipeline.testing.checks import run_checks
from pipeline.testing.keep import ArtifactStore, store_for
from pipeline.testing.model import LOCAL_CPU, Result, TestReport, Verdict
from pipeline.testing.params import MalformedNotebook, NotebookPlan, load_notebook, plan
from pipeline.testing.runner import Cancelled, Limits, SharedContainer, Tracker, ensure_image, sweep
from pipeline.testing.tasks import (
    Run,
    Sink,
    WarmUpFailed,
    remove_work,
    render_html,
    run_notebook,
    run_smoke,
    warm_up,
)

log = logging.getLogger(__name__)
STARTUP_GRACE = 60.0  # container, papermill and kernel start, on top of tests.timeout


def new_run_id(sha: str) -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{sha[:12]}-{secrets.token_hex(3)}"


def _guarded(name: str, kind: Any, task: Callable[[], Result], status: progress.Counter) -> Result:
    status.started(name)
    try:
        return task()
    except Cancelled:
        raise
    except Exception as e:
        log.debug("%s failed", name, exc_info=True)
        verdict = Verdict(
            outcome="infrastructure", error=f"{type(e).__name__}: {e}", hint="rerun with --debug"
        )
        return Result(name=name, kind=kind, verdict=verdict, seconds=0.0)
    finally:
        status.finished(name)


def _checks(run: Run, tree: Tree, paths: list[str]) -> list[Result]:
    """The image checks; a part that fails during them is an infrastructure result."""
    try:
        folders = notebook_folders((path, tree.read(path) or b"") for path in paths)
        return run_checks(run, folders)
    except Cancelled:
        raise
    except Exception as e:
        log.debug("image checks failed", exc_info=True)
        verdict = Verdict(
            outcome="infrastructure", error=f"{type(e).__name__}: {e}", hint="rerun with --debug"
        )
        return [Result(name="image checks", kind="check", verdict=verdict, seconds=0.0)]


def _cache(warmed: Future[Path | None] | None, warn: Sink) -> Path | None:
    """The bytecode cache the warm-up filled; None when it failed (the notebooks compile their own)."""
    if warmed is None:
        return None
    try:
        return warmed.result()
    except Cancelled:
        raise
    except Exception as e:
        log.debug("the bytecode warm-up failed", exc_info=True)
        why = str(e) if isinstance(e, WarmUpFailed) else f"{type(e).__name__}: {e}"
        warn(f"the bytecode warm-up failed ({why}); the notebooks run without the cache")
        return None


def _materialize(tree: Tree, root: str, target: Path) -> None:
    for path in tree.files(root):
        data = tree.read(path)
        if data is not None:
            artifacts.write_atomic(target / (path[len(root) + 1 :] if root else path), data)


@dataclass(frozen=True)
class LocalTestRunner:
    """The local TestRunner: one fresh container per notebook on the Docker Engine.

    A spec that asks for an accelerator is refused (exit 2) unless `allow_cpu`: then it
    runs on the CPU, says so, and the evidence records the CPU (production refuses it).
    """

    settings: Settings
    allow_cpu: bool = False

    def run(
        self,
        spec: Spec,
        tree: Tree,
        version: Version,
        *,
        jobs: int | None = None,
        ledger: Ledger | None = None,
        run_id: str | None = None,
        on_result: Callable[[Result], None] | None = None,
        on_warning: Sink | None = None,
    ) -> TestReport:
        wanted = spec.cloud.accelerator
        if wanted is not None and not self.allow_cpu:
            raise UsageError(
                f"{spec.image} asks for an accelerator ({wanted}) and the local backend has only the CPU; "
                "run it on Vertex AI (ENVCTL_BACKEND=gcp), or on the CPU with --allow-cpu"
            )
        if wanted is not None:
            (on_warning or log.warning)(
                f"running {spec.image}'s tests on the CPU although its spec asks for {wanted} "
                "(--allow-cpu); the evidence records the CPU and production refuses it without --force"
            )
        return run_tests(
            self.settings,
            spec,
            tree,
            version,
            jobs=jobs,
            ledger=ledger,
            run_id=run_id,
            on_result=on_result,
            on_warning=on_warning,
        )


def run_tests(
    settings: Settings,
    spec: Spec,
    tree: Tree,
    version: Version,
    *,
    jobs: int | None = None,
    ledger: Ledger | None = None,
    run_id: str | None = None,
    grace: float = STARTUP_GRACE,
    on_result: Callable[[Result], None] | None = None,
    on_warning: Sink | None = None,
    client: Any = None,
) -> TestReport:
    """Run every test notebook and smoke check of `spec` in `version`; record the evidence.

    Notebooks and spec come from `tree` (the commit), containers from `version.image_ref`
    (a digest). No container of the run outlives this call, KeyboardInterrupt included.
    """
    warn: Sink = on_warning or log.warning
    if "@sha256:" not in version.image_ref:
        raise UsageError(
            f"{version.image} at {version.sha[:12]} is recorded as {version.image_ref}, not by digest; "
            f"rebuild it with `envctl build {version.image} --rev {version.sha}`"
        )
    store = store_for(settings)
    client = client if client is not None else docker_engine.connect(settings.docker_host)
    run_id = run_id or new_run_id(version.sha)
    run_dir = settings.artifacts_dir / run_id
    kept_at = store.where(run_dir, run_id)
    work = run_dir / ".work"
    started = datetime.now(UTC)
    ensure_image(client, version.image_ref)

    paths = spec_module.notebooks(spec, tree)
    root = common_root(paths)
    _materialize(tree, root, work / "in")
    results: dict[int, Result] = {}
    tasks: dict[int, tuple[str, Any, Callable[[], Result]]] = {}
    warnings: list[str] = []
    resources = spec.tests.resources
    run = Run(
        client=client,
        tracker=Tracker(run_id),
        spec=spec,
        version=version,
        run_dir=run_dir,
        work=work,
        root=root,
        limits=Limits(
            memory_bytes=resources.memory_bytes,
            nano_cpus=int(resources.cpus * 1e9),
            network="host" if spec.tests.network == "host" else "none",
        ),
        grace=grace,
    )
    planned = plan_notebooks(spec, tree, paths, results, warnings, warn)
    kernels = {job.kernel for _, _, job in planned}
    # The bytecode warm-up runs beside the image checks; the notebooks need both.
    warming = ThreadPoolExecutor(max_workers=1, thread_name_prefix="envctl-warm-up")
    try:
        warmed = warming.submit(warm_up, run, kernels) if kernels else None
        checks = _checks(run, tree, paths)
        run = dataclasses.replace(run, pycache=_cache(warmed, warn))
    except BaseException:
        # The warm-up's container may still run: it is stopped and waited for before
        # the sweep and before its folder goes.
        run.tracker.cancel()
        warming.shutdown(wait=True, cancel_futures=True)
        sweep(client, run_id)
        remove_work(work)
        raise
    warming.shutdown(wait=True)
    if spec.tests.isolation == "run":  # one container for the run, each notebook an exec in it
        run = dataclasses.replace(
            run,
            shared=SharedContainer(
                client=client,
                tracker=run.tracker,
                image_ref=version.image_ref,
                labels=run.labels("shared"),
                limits=run.limits,
                mounts=run.shared_mounts(),
                environment=spec.tests.env,
            ),
        )
    for index, path, job in planned:
        tasks[index] = (path, "notebook", partial(run_notebook, run, index, job))
    for number, command in enumerate(spec.tests.smoke):
        tasks[len(paths) + number] = (
            f"smoke: {command}",
            "smoke",
            partial(run_smoke, run, number, command),
        )

    # One container per run runs its notebooks one after another (they share its limits).
    workers = 1 if run.shared else max(1, min(jobs or settings.jobs, len(tasks) or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="envctl-test")
    status = progress.Counter(f"testing {spec.image}", len(tasks) + len(results), done=len(results))
    try:
        status.open()
        futures: dict[Future[Result], int] = {
            pool.submit(_guarded, *task, status): index for index, task in tasks.items()
        }
        for result in results.values():
            if on_result:
                on_result(result)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_result:
                on_result(results[futures[future]])
        ordered = render_html(run, [results[i] for i in sorted(results)], warn)
    except BaseException:
        run.tracker.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        status.close()
        if run.shared is not None:
            run.shared.close()
        left = sweep(client, run_id)
        if left:
            log.warning("removed %d leftover container(s) of run %s", left, run_id)
        remove_work(work)

    report = TestReport(
        run_id=run_id,
        image=spec.image,
        sha=version.sha,
        digest=version.digest,
        image_ref=version.image_ref,
        artifacts=run_dir,
        results=tuple(ordered),
        warnings=tuple(warnings),
        started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        checks=tuple(checks),
        kept_at="" if kept_at == str(run_dir) else kept_at,
        ran_on={
            **LOCAL_CPU,
            "cpus": resources.cpus,
            "memory": resources.memory,
            "asked": None if spec.cloud.accelerator is None else str(spec.cloud.accelerator),
        },
    )
    return keep_and_record(report, store, run_dir, ledger, spec, tree, version, started)


def plan_notebook(spec: Spec, tree: Tree, path: str) -> NotebookPlan | Result:
    """The notebook's papermill plan, or its `malformed` result when it can't be read (every runner)."""
    try:
        return plan(spec, path, load_notebook(tree.read(path) or b"", path))
    except MalformedNotebook as e:
        error = str(e).removeprefix(path).lstrip(": ")
        verdict = Verdict(outcome="malformed", error=error, hint=f"fix {path} (open it in Jupyter and save)")
        return Result(name=path, kind="notebook", verdict=verdict, seconds=0.0)


def plan_notebooks(
    spec: Spec, tree: Tree, paths: list[str], results: dict[int, Result], warnings: list[str], warn: Sink
) -> list[tuple[int, str, NotebookPlan]]:
    """The notebooks to run, by index and path (every runner).

    A notebook that can't be read gets its `malformed` result in `results` instead; each
    plan's warnings are said through `warn` and added to `warnings`.
    """
    planned: list[tuple[int, str, NotebookPlan]] = []
    for index, path in enumerate(paths):
        job = plan_notebook(spec, tree, path)
        if isinstance(job, Result):
            results[index] = job
            continue
        for message in job.warnings:
            warn(message)
        warnings.extend(job.warnings)
        planned.append((index, path, job))
    return planned


def keep_and_record(
    report: TestReport,
    store: ArtifactStore,
    run_dir: Path,
    ledger: Ledger | None,
    spec: Spec,
    tree: Tree,
    version: Version,
    started: datetime,
) -> TestReport:
    """Write the run's reports, keep its artifacts, then record it as evidence (every runner).

    The artifacts are kept first: evidence must name artifacts that exist. A run whose
    parts failed (infrastructure) records no evidence either way: the version wasn't tested.
    """
    run_id = report.run_id
    artifacts.write_reports(report)
    kept = store.keep(run_dir, run_id)
    if report.infrastructure_failed:
        log.warning("run %s hit an infrastructure error; no evidence recorded", run_id)
    elif ledger is not None:
        record_test_run(
            ledger,
            TestRun(
                run_id=run_id,
                image=spec.image,
                sha=version.sha,
                digest=version.digest,
                passed=report.passed,
                summary=report.to_json(),
                artifacts=kept,
                started_at=started,
                finished_at=datetime.fromisoformat(report.finished_at),
                test_key=tests_key(spec, tree),
                ran_on=report.ran_on,
            ),
        )
    return report
