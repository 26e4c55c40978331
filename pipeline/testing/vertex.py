"""The Vertex AI TestRunner: one custom job per notebook on the spec's machine and accelerator.

The run's notebooks go to its Cloud Storage folder (`artifacts_url/RUN_ID/in/`, where
the run's artifacts are kept as well, `pipeline.testing.keep`);
each notebook becomes one CustomJob (`vertex_jobs.custom_job`) running papermill in the
version by digest; up to `jobs` run at once. Each job is polled to a terminal state
within an outer deadline (its timeout plus `gcp_vertex_grace` for a machine to come
free), cancelled when it outlives it; its executed notebook and log are downloaded into
the run's local artifacts and classified as locally. Ctrl-C (KeyboardInterrupt) and
any error cancel every job the run started before they propagate.

`google.cloud.aiplatform_v1` (about a second to import) is imported only in here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline import gcp
from pipeline.errors import UsageError
from pipeline.ledger.db import Ledger, Version
from pipeline.settings import Settings
from pipeline.source import Tree
from pipeline.spec import model as spec_module
from pipeline.spec.keys import common_root
from pipeline.spec.model import Spec
from pipeline.testing import artifacts
from pipeline.testing.keep import store_for
from pipeline.testing.model import Result, TestReport
from pipeline.testing.stage import keep_and_record, new_run_id, plan_notebooks
from pipeline.testing.vertex_jobs import (
    TERMINAL,
    WAITING,
    Folder,
    JobEnd,
    Task,
    capacity_verdict,
    classify_job,
    custom_job,
    job_timeout,
    labels,
    notebook_task,
    smoke_task,
)

log = logging.getLogger(__name__)
Sink = Callable[[str], None]
MIN_POLL = 0.2


@dataclass
class _Live:
    task: Task
    name: str  # projects/P/locations/L/customJobs/ID
    started: float
    deadline: float
    state: str = "JOB_STATE_QUEUED"
    started_running: bool = False  # seen past QUEUED/PENDING at least once


@dataclass
class _Run:
    """One run's clients and places."""

    spec: Spec
    version: Version
    run_id: str
    folder: Folder
    parent: str
    jobs: Any  # JobServiceClient
    bucket: Any  # google.cloud.storage Bucket
    call: dict[str, Any]
    run_dir: Any
    live: dict[str, _Live] = field(default_factory=dict)


def ran_on(spec: Spec, region: str) -> dict[str, Any]:
    wanted = spec.cloud.accelerator
    return {
        "backend": "vertex",
        "machine": spec.cloud.machine_type,
        "accelerator": None if wanted is None else {"type": wanted.type, "count": wanted.count},
        "asked": None if wanted is None else str(wanted),
        "region": region,
    }


@dataclass(frozen=True)
class VertexTestRunner:
    """The gcp TestRunner: Vertex AI custom jobs, one per notebook and smoke check."""

    settings: Settings

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
        warn: Sink = on_warning or log.warning
        _check_image_ref(self.settings, version)
        if not spec.cloud.service_account:
            warn(
                f"{spec.image}'s test jobs run as the Vertex AI service agent, which may read far more than "
                "they need: set cloud.service_account to an account with only roles/storage.objectAdmin on "
                "the artifacts folder and roles/artifactregistry.reader (README: Tests on Vertex AI)"
            )
        from google.cloud import aiplatform_v1 as aip

        where = gcp.location(self.settings, need_repository=False)
        region = spec.cloud.region or where.region
        run_id = run_id or new_run_id(version.sha)
        folder = Folder.for_run(self.settings.artifacts_url, run_id)
        store = store_for(self.settings)
        google = gcp.Google(self.settings)
        run = _Run(
            spec=spec,
            version=version,
            run_id=run_id,
            folder=folder,
            parent=f"projects/{where.project}/locations/{region}",
            jobs=google.job_service(region),
            bucket=google.storage(where.project).bucket(folder.bucket),
            call=google.call(),
            run_dir=self.settings.artifacts_dir / run_id,
        )
        started = datetime.now(UTC)
        paths = spec_module.notebooks(spec, tree)
        root = common_root(paths)
        results: dict[int, Result] = {}
        tasks: list[Task] = []
        warnings: list[str] = []
        for index, path, job in plan_notebooks(spec, tree, paths, results, warnings, warn):
            relative = path[len(root) + 1 :] if root else path
            tasks.append(notebook_task(spec, folder, index, job, relative))
        for number, command in enumerate(spec.tests.smoke):
            tasks.append(smoke_task(len(paths) + number, number, command))
        requests = {
            t.index: custom_job(
                aip,
                spec,
                t,
                folder=folder,
                image_uri=version.image_ref,
                run_id=run_id,
                env=dict(spec.tests.env),
            )
            for t in tasks
        }
        for result in results.values():
            if on_result:
                on_result(result)
        _upload_inputs(run, tree, root)
        workers = max(1, jobs or self.settings.jobs)
        try:
            for result in _schedule(self.settings, run, tasks, requests, workers):
                results[result[0]] = result[1]
                if on_result:
                    on_result(result[1])
        except BaseException:
            _cancel_all(run)
            raise
        report = TestReport(
            run_id=run_id,
            image=spec.image,
            sha=version.sha,
            digest=version.digest,
            image_ref=version.image_ref,
            artifacts=run.run_dir,
            results=tuple(results[i] for i in sorted(results)),
            warnings=tuple(warnings),
            started_at=started.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            ran_on=ran_on(spec, region),
            kept_at=store.where(run.run_dir, run_id),
        )
        return keep_and_record(report, store, run.run_dir, ledger, spec, tree, version, started)


def _check_image_ref(settings: Settings, version: Version) -> None:
    """Vertex AI runs the version by its own digest from Artifact Registry; else exit 2 saying what to fix.

    With an aiplatform endpoint override (a fake or an emulator) any registry host will do.
    """
    ref, digest = version.image_ref, version.digest
    rebuild = f"`ENVCTL_BACKEND=gcp envctl build {version.image} --rev {version.sha}`"
    what = f"{version.image} at {version.sha[:12]} is recorded as {ref}"
    if not digest.startswith("sha256:") or not ref.endswith(f"@{digest}"):
        raise UsageError(f"{what}, not by its digest {digest}; rebuild it with {rebuild}")
    host = ref.split("/", 1)[0]
    if not gcp.is_artifact_registry(host) and gcp.endpoint(settings, "aiplatform") is None:
        raise UsageError(
            f"{what}, which is not in Artifact Registry (REGION-docker.pkg.dev), where Vertex AI pulls "
            f"test images from; set ENVCTL_REGISTRY=REGION-docker.pkg.dev/PROJECT/REPOSITORY and rebuild "
            f"it with {rebuild}"
        )


def _upload_inputs(run: _Run, tree: Tree, root: str) -> None:
    """Every file under the notebooks' common folder, to `RUN/in/` (the jobs copy their folder)."""
    where = f"Cloud Storage folder {run.folder.uri('in')}"
    with gcp.translated(where, api="storage", missing="create the bucket, or fix ENVCTL_ARTIFACTS_URL"):
        for path in tree.files(root):
            data = tree.read(path)
            if data is None:
                continue
            relative = path[len(root) + 1 :] if root else path
            run.bucket.blob(run.folder.name(f"in/{relative}")).upload_from_string(data, **_storage_call(run))


def _storage_call(run: _Run) -> dict[str, Any]:
    return {"timeout": run.call["timeout"]}


def _schedule(
    settings: Settings, run: _Run, tasks: list[Task], requests: dict[int, Any], workers: int
) -> Any:
    """Create up to `workers` jobs at once, poll them, yield (index, Result) as each ends."""
    waiting = list(tasks)
    poll = max(float(settings.gcp_vertex_poll), MIN_POLL)
    while waiting or run.live:
        while waiting and len(run.live) < workers:
            task = waiting.pop(0)
            created = _create(run, task, requests[task.index], settings)
            if isinstance(created, Result):
                yield task.index, created
        for name, live in list(run.live.items()):
            end = _poll(run, live)
            if end is None:
                continue
            del run.live[name]
            yield live.task.index, _finish(run, live.task, end)
        if run.live:
            time.sleep(poll)


def _create(run: _Run, task: Task, job: Any, settings: Settings) -> _Live | Result:
    from google.api_core import exceptions as gapi

    what = f"Vertex AI custom job for {task.name} in {run.parent}"
    started = time.monotonic()
    with gcp.translated(what, api="aiplatform"):
        try:
            made = run.jobs.create_custom_job(parent=run.parent, custom_job=job, **run.call)
        except (
            gapi.TooManyRequests
        ) as e:  # RESOURCE_EXHAUSTED: the accelerator's quota, this notebook's verdict
            return Result(
                name=task.name,
                kind=task.kind,  # type: ignore[arg-type]
                verdict=capacity_verdict(run.spec, gcp.server_message(e)),
                seconds=time.monotonic() - started,
            )
    live = _Live(
        task=task,
        name=str(made.name),
        started=started,
        deadline=started + job_timeout(run.spec) + settings.gcp_vertex_grace,
    )
    run.live[live.name] = live
    log.info("created %s for %s", live.name, task.name)
    return live


def _poll(run: _Run, live: _Live) -> JobEnd | None:
    """The job's end when it is in a terminal state, or cancelled at its deadline now; else None."""
    with gcp.translated(f"Vertex AI custom job {live.name}", api="aiplatform"):
        job = run.jobs.get_custom_job(name=live.name, **run.call)
    live.state = job.state.name
    live.started_running = live.started_running or live.state not in WAITING
    seconds = time.monotonic() - live.started
    if live.state in TERMINAL:
        return JobEnd(state=live.state, error_code=job.error.code, error=job.error.message, seconds=seconds)
    if time.monotonic() < live.deadline:
        return None
    log.info("%s outlived its deadline (%s); cancelling it", live.name, live.state)
    _cancel(run, live.name)
    _check_cancelled(run, live.name)
    return JobEnd(
        state="JOB_STATE_CANCELLED",
        deadline_hit=True,
        never_started=not live.started_running,
        seconds=seconds,
    )


def _cancel(run: _Run, name: str) -> None:
    try:
        run.jobs.cancel_custom_job(name=name, timeout=min(run.call["timeout"], 30.0), retry=None)
    except Exception as e:  # it may have ended meanwhile; a later read says how
        log.warning("could not cancel %s: %s", name, gcp.short(e))


def _check_cancelled(run: _Run, name: str) -> None:
    """Warn, with the command that does it, when the job is neither cancelled nor ended."""
    try:
        state = str(run.jobs.get_custom_job(name=name, **run.call).state.name)
    except Exception as e:
        state = f"unknown ({gcp.short(e)})"
    if state in TERMINAL or state == "JOB_STATE_CANCELLING":
        return
    _, project, _, region, _, job_id = name.split("/")
    log.warning(
        "%s is %s although envctl cancelled it; it may still hold (and bill) its machine: cancel it with "
        "`gcloud ai custom-jobs cancel %s --project %s --region %s`",
        name,
        state,
        job_id,
        project,
        region,
    )


def _cancel_all(run: _Run) -> None:
    """Cancel the run's jobs: those it polls, and any created unbeknown to it (its label finds them).

    Ctrl-C or a client timeout during `create_custom_job` can leave a job the runner
    never got the name of; every job carries `envctl-run=<run id>`.
    """
    known = set(run.live)
    for name in list(run.live):
        _cancel(run, name)
        log.warning("cancelled %s", name)
    run.live.clear()
    for name in _unknown_jobs(run, known):
        _cancel(run, name)
        log.warning("cancelled %s (created, but its creation did not answer)", name)


def _unknown_jobs(run: _Run, known: set[str]) -> list[str]:
    """The run's jobs (by label) not in `known` and not ended; [] when they can't be listed."""
    value = labels(run.run_id)
    try:
        found = run.jobs.list_custom_jobs(
            request={"parent": run.parent, "filter": f'labels.envctl-run="{value}"'},
            timeout=min(run.call["timeout"], 30.0),
            retry=None,
        )
        return [
            str(job.name)
            for job in found
            if job.name not in known and job.state.name not in TERMINAL | {"JOB_STATE_CANCELLING"}
        ]
    except Exception as e:
        log.warning(
            "could not list the jobs of run %s to cancel them: %s; list them with `gcloud ai custom-jobs "
            "list --region %s --filter labels.envctl-run=%s`",
            run.run_id,
            gcp.short(e),
            run.parent.rsplit("/", 1)[-1],
            value,
        )
        return []


def _download(run: _Run, relative: str, target: str) -> bool:
    """Copy `RUN/relative` from Cloud Storage to the run folder's `target`; False when it isn't there."""
    from google.api_core import exceptions as gapi

    try:
        data = run.bucket.blob(run.folder.name(relative)).download_as_bytes(**_storage_call(run))
    except gapi.NotFound:
        return False
    artifacts.write_atomic(run.run_dir / target, data)
    return True


def _finish(run: _Run, task: Task, end: JobEnd) -> Result:
    """Download the job's notebook and log into the run folder; the classified result."""
    folder = f"jobs/{task.index}"
    with gcp.translated(f"the outputs of {task.name} in {run.folder.uri(folder)}", api="storage"):
        has_log = _download(run, f"logs/{task.log}", task.log)
        notebook = None
        if task.notebook is not None:
            name = task.notebook.rsplit("/", 1)[-1]
            if _download(run, f"{folder}/{name}", task.notebook):
                notebook = task.notebook
    executed = artifacts.read_json(run.run_dir / notebook) if notebook else None
    logs = (run.run_dir / task.log).read_text(errors="replace")[-20_000:] if has_log else ""
    end = dataclasses.replace(end, logs=logs)
    verdict = classify_job(run.spec, task, end, executed, image_uri=run.version.image_ref)
    return Result(
        name=task.name,
        kind=task.kind,  # type: ignore[arg-type]
        verdict=verdict,
        seconds=end.seconds,
        execution_seconds=_execution_seconds(executed),
        exit_code=0 if end.state == "JOB_STATE_SUCCEEDED" else None,
        notebook=notebook,
        log=task.log if has_log else None,
        warnings=task.plan.warnings if task.plan else (),
    )


def _execution_seconds(executed: dict[str, Any] | None) -> float | None:
    if not executed:
        return None
    cells = executed.get("cells", [])
    return float(sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0 for c in cells))
