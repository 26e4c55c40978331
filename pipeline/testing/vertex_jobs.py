"""Vertex AI custom jobs for notebook tests: the request for one notebook, the verdict of its end.

Pure functions over data (the proto-plus types come in as the module `aip`), so the
rules are unit-tested without a server. A job runs the version by digest on the
spec's machine and accelerator; its container reads the run's inputs and writes the
executed notebook and its log through the Cloud Storage mount Vertex AI gives custom
jobs (`/gcs/BUCKET/...`), so the image needs no Cloud Storage client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pipeline.errors import ConfigError, UsageError
from pipeline.spec.model import Spec
from pipeline.testing.classify import classify_command, classify_notebook
from pipeline.testing.model import ContainerExit, Verdict
from pipeline.testing.params import NotebookPlan

STARTUP = 600  # seconds for the machine's image pull and kernel start, on top of tests.timeout
CWD = "/tmp/envctl/cwd"
# bash: the log goes to the run's folder and, through tee, to Cloud Logging as well.
WRAPPER = (
    'set -eo pipefail; mkdir -p "$(dirname "$ENVCTL_LOG")" "$ENVCTL_CWD"; '
    'if [ -n "$ENVCTL_INPUT" ]; then cp -R "$ENVCTL_INPUT/." "$ENVCTL_CWD/"; fi; '
    '"$@" 2>&1 | tee "$ENVCTL_LOG"'
)
SUCCEEDED = "JOB_STATE_SUCCEEDED"
WAITING = frozenset({"JOB_STATE_QUEUED", "JOB_STATE_PENDING"})  # no machine yet
TERMINAL = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
    | {"JOB_STATE_PARTIALLY_SUCCEEDED"}
)
EXIT_STATUS = re.compile(r"non-zero status of (\d+)")
OUT_OF_MEMORY = re.compile(r"out[- ]of[- ]memory|OOMKilled|\bOOM\b", re.IGNORECASE)
IMAGE_PULL = re.compile(
    r"(?:pull|fetch)\w* (?:the )?(?:container )?image|image pull|ImagePullBackOff|ErrImagePull|"
    r"manifest unknown",
    re.IGNORECASE,
)
CAPACITY = re.compile(
    r"quota|resources are insufficient|insufficient resources|stockout|RESOURCE_EXHAUSTED|"
    r"not enough resources|exhausted",
    re.IGNORECASE,
)
TIMED_OUT = re.compile(r"timed out|timeout|deadline exceeded", re.IGNORECASE)
RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED = 8, 4


@dataclass(frozen=True, kw_only=True)
class Folder:
    """The run's Cloud Storage folder `gs://BUCKET/PREFIX/RUN_ID`, and where jobs see it."""

    bucket: str
    prefix: str  # without the bucket, no leading or trailing `/`

    @classmethod
    def for_run(cls, url: str, run_id: str) -> Folder:
        """The folder `<artifacts_url>/<run id>/`, where the run's artifacts are kept too."""
        from pipeline.testing.keep import parse_gs_url

        if not url:
            raise ConfigError(
                "the gcp test runner keeps each run's notebooks in Cloud Storage: set "
                "ENVCTL_ARTIFACTS_URL=gs://BUCKET[/PREFIX]"
            )
        bucket, prefix = parse_gs_url(url)
        return cls(bucket=bucket, prefix=f"{prefix}/{run_id}" if prefix else run_id)

    def name(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def uri(self, relative: str = "") -> str:
        return f"gs://{self.bucket}/{self.prefix}" + (f"/{relative}" if relative else "/")

    def mounted(self, relative: str) -> str:
        return f"/gcs/{self.bucket}/{self.prefix}/{relative}"


@dataclass(frozen=True, kw_only=True)
class Task:
    """One job of the run: a notebook (with its plan) or a smoke command."""

    index: int
    name: str  # the result's name: the notebook's path or `smoke: COMMAND`
    kind: str  # "notebook" | "smoke"
    argv: tuple[str, ...]  # what runs in the container after the wrapper
    input_dir: str  # mounted folder copied into the working folder ("" for smoke)
    notebook: str | None  # executed notebook's path relative to the run folder
    log: str  # the log's path relative to the run folder
    plan: NotebookPlan | None = None


def job_timeout(spec: Spec) -> int:
    return spec.cloud.timeout or spec.tests.timeout + STARTUP


def notebook_task(spec: Spec, folder: Folder, index: int, plan: NotebookPlan, relative: str) -> Task:
    """The papermill command of one notebook, as the local runner runs it, on the mounted folder."""
    name = PurePosixPath(relative).name
    out = f"jobs/{index}/{name}"
    argv = (
        "papermill",
        folder.mounted(f"in/{relative}"),
        folder.mounted(out),
        "-y",
        json.dumps(plan.parameters, sort_keys=True),
        "-k",
        plan.kernel,
        "--execution-timeout",
        str(spec.tests.timeout),
        "--cwd",
        CWD,
        "--log-output",
        "--no-progress-bar",
    )
    parent = PurePosixPath(relative).parent.as_posix()
    return Task(
        index=index,
        name=plan.path,
        kind="notebook",
        argv=argv,
        input_dir=folder.mounted("in" if parent == "." else f"in/{parent}"),
        notebook=relative,
        log=PurePosixPath(relative).with_suffix(".log").as_posix(),
        plan=plan,
    )


def smoke_task(index: int, number: int, command: str) -> Task:
    import shlex

    return Task(
        index=index,
        name=f"smoke: {command}",
        kind="smoke",
        argv=tuple(shlex.split(command)),
        input_dir="",
        notebook=None,
        log=f"smoke-{number + 1}.log",
    )


def accelerator_enum(aip: Any, spec: Spec) -> Any:
    """Vertex's AcceleratorType for the spec's accelerator; exit 2 naming the valid ones."""
    wanted = spec.cloud.accelerator
    kinds = aip.AcceleratorType
    if wanted is None:
        return kinds.ACCELERATOR_TYPE_UNSPECIFIED
    if wanted.type not in kinds.__members__ or wanted.type.endswith("UNSPECIFIED"):
        valid = ", ".join(k for k in kinds.__members__ if k.startswith("NVIDIA"))
        raise UsageError(
            f"cloud.accelerator.type {wanted.type!r} of {spec.image} is not a Vertex AI accelerator; "
            f"use one of {valid}"
        )
    return kinds[wanted.type]


def labels(value: str) -> str:
    """A Google label value: lowercase letters, digits, `-` and `_`, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def custom_job(
    aip: Any, spec: Spec, task: Task, *, folder: Folder, image_uri: str, run_id: str, env: dict[str, str]
) -> Any:
    """The CustomJob of one task: one replica on the spec's machine, the image by digest."""
    from google.protobuf import duration_pb2

    cloud = spec.cloud
    machine = aip.MachineSpec(machine_type=cloud.machine_type)
    if cloud.accelerator is not None:
        machine.accelerator_type = accelerator_enum(aip, spec)
        machine.accelerator_count = cloud.accelerator.count
    variables = {
        **env,
        "ENVCTL_LOG": folder.mounted(f"logs/{task.log}"),
        "ENVCTL_CWD": CWD,
        "ENVCTL_INPUT": task.input_dir,
    }
    container = aip.ContainerSpec(
        image_uri=image_uri,
        command=["bash", "-c", WRAPPER, "envctl-job"],
        args=list(task.argv),
        env=[aip.EnvVar(name=k, value=v) for k, v in variables.items()],
    )
    job_spec = aip.CustomJobSpec(
        worker_pool_specs=[
            aip.WorkerPoolSpec(replica_count=1, machine_spec=machine, container_spec=container)
        ],
        scheduling=aip.Scheduling(
            timeout=duration_pb2.Duration(seconds=job_timeout(spec)), disable_retries=True
        ),
        base_output_directory=aip.GcsDestination(output_uri_prefix=folder.uri(f"jobs/{task.index}")),
    )
    if cloud.service_account:
        job_spec.service_account = cloud.service_account
    if cloud.network:
        job_spec.network = cloud.network
    return aip.CustomJob(
        display_name=f"envctl {spec.image} {task.name}"[:128],
        job_spec=job_spec,
        labels={
            "envctl-run": labels(run_id),
            "envctl-image": labels(spec.image),
            "envctl-task": str(task.index),
        },
    )


@dataclass(frozen=True, kw_only=True)
class JobEnd:
    """How one job ended, as envctl saw it."""

    state: str  # the JobState name
    error_code: int = 0
    error: str = ""
    deadline_hit: bool = False  # envctl cancelled it at the outer deadline
    never_started: bool = False  # ... while it still waited for a machine (QUEUED or PENDING)
    seconds: float = 0.0
    logs: str = ""


def capacity_verdict(spec: Spec, message: str) -> Verdict:
    cloud = spec.cloud
    what = f"{cloud.accelerator} on {cloud.machine_type}" if cloud.accelerator else cloud.machine_type
    return Verdict(
        outcome="quota",
        error=f"no capacity or quota for {what}: {message}",
        hint="raise the Vertex AI quota for this accelerator in the region (Cloud console, IAM & Admin > "
        "Quotas), try again later, or set cloud.region to a region that offers it",
    )


def classify_job(
    spec: Spec, task: Task, end: JobEnd, executed: dict[str, Any] | None, *, image_uri: str
) -> Verdict:
    """The verdict of one job, as the local runner classifies a container: same outcomes, same hints."""
    message = " ".join(end.error.split())
    if end.deadline_hit and end.never_started:
        return capacity_verdict(
            spec,
            f"the job waited {job_timeout(spec)} s for a machine without starting; envctl cancelled it",
        )
    failed = end.state in {"JOB_STATE_FAILED", "JOB_STATE_EXPIRED"}
    if failed and (end.error_code == RESOURCE_EXHAUSTED or CAPACITY.search(message)):
        return capacity_verdict(spec, message)
    if failed and IMAGE_PULL.search(message):
        return Verdict(
            outcome="image_pull",
            error=f"Vertex AI could not pull {image_uri}: {message}",
            hint="check that the version is still in Artifact Registry and that the job's service account "
            f"({spec.cloud.service_account or 'the Vertex AI service agent'}) has "
            "roles/artifactregistry.reader on the repository",
        )
    if end.state == "JOB_STATE_CANCELLED" and not end.deadline_hit:
        return Verdict(
            outcome="infrastructure",
            error="the job was cancelled outside envctl",
            hint="run the tests again",
        )
    timed_out = end.deadline_hit or (
        failed
        and (
            end.error_code == DEADLINE_EXCEEDED
            or end.state == "JOB_STATE_EXPIRED"
            or TIMED_OUT.search(message) is not None
        )
    )
    status = EXIT_STATUS.search(message)
    oom = failed and bool(OUT_OF_MEMORY.search(message))
    if end.state == SUCCEEDED:
        exit_code: int | None = 0
    elif status:
        exit_code = int(status[1])
    elif failed and not timed_out and not oom:
        exit_code = 1
    else:
        exit_code = None
    if failed and exit_code == 1 and not status and not (executed and task.kind == "notebook"):
        return Verdict(
            outcome="infrastructure",
            error=message or "the job failed without a message",
            hint="read the job's log in the Cloud console (Vertex AI > Training > Custom jobs)",
        )
    ran = ContainerExit(
        exit_code=exit_code,
        oom_killed=oom,
        deadline_hit=timed_out,
        logs=end.logs,
        seconds=end.seconds,
    )
    timeout = job_timeout(spec)
    memory = f"the memory of {spec.cloud.machine_type}"
    if task.kind == "smoke":
        verdict = classify_command(
            ran, command=task.name.removeprefix("smoke: "), dockerfile=spec.build.dockerfile, memory=memory
        )
    else:
        verdict = classify_notebook(
            ran,
            executed,
            dockerfile=spec.build.dockerfile,
            timeout=spec.tests.timeout,
            memory=memory,
            deadline=timeout,
        )
    if verdict.outcome == "oom":
        return Verdict(
            outcome="oom",
            error=f"out of memory on {spec.cloud.machine_type}",
            cell_index=verdict.cell_index,
            execution_count=verdict.execution_count,
            hint=f"use a machine type with more memory (cloud.machine_type, now {spec.cloud.machine_type}) "
            "or use less memory in this cell",
        )
    if verdict.outcome == "timeout" and timed_out:
        why = "cancelled by envctl" if end.deadline_hit else "stopped by Vertex AI"
        return Verdict(
            outcome="timeout",
            error=f"still running after its timeout of {timeout} s; {why}",
            cell_index=verdict.cell_index,
            execution_count=verdict.execution_count,
            hint="the notebook ran past cloud.timeout (its job's budget: machine start, image pull and every "
            "cell), or waited for a machine that long: shorten it or raise cloud.timeout in the spec",
        )
    return verdict
