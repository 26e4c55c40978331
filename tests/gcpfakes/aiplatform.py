"""A fake of Vertex AI's JobService (custom jobs), as `aiplatform_v1.JobServiceClient` calls it over REST.

Serves create, get and cancel of `projects/*/locations/*/customJobs/*`. Jobs are kept
with every field the client sent and move through QUEUED, PENDING, RUNNING to a terminal
state on a thread of their own. Running a job runs its container for real: the image
(`image_uri`, by digest; `images` maps an Artifact Registry reference to where the local
Docker Engine can pull it) with the job's command, args and env, `--network none`, and
the fake Cloud Storage mounted at `/gcs/BUCKET/...` as Vertex AI mounts buckets for
custom jobs (objects are copied in before and new or changed files copied back after).
An image that can't be pulled fails the job the way Vertex does; a container that runs
past `Scheduling.timeout` is killed and the job fails with DEADLINE_EXCEEDED; a
cancelled job's container is killed.

Scenarios (`scenario(substring of display_name, kind)`) stand in for what can't happen
here: "quota" (create answers RESOURCE_EXHAUSTED for the accelerator's quota),
"stockout" (the job fails with RESOURCE_EXHAUSTED: no machines in the region) and
"stuck" (the job waits for a machine, PENDING, until cancelled) and "slow-create" (the
job is created but create answers only after `create_delay` seconds, past a client's
timeout). List takes the `labels.KEY="VALUE"` filter (clauses joined by AND).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import aiplatform_v1 as aip
from google.rpc import status_pb2

from tests.gcpfakes.rest import FakeRequest, FakeRestServer, GoogleError, proto_json
from tests.gcpfakes.storage import FakeStorage

JOB = r"/v1/(?P<name>projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/customJobs/(?P<id>[^/:]+))"
PARENT = r"/v1/(?P<parent>projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+))/customJobs"
FAKE_LABEL = "org.envctl.fake-vertex"
State = aip.JobState
TERMINAL = {State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED}


@dataclass
class Job:
    job: Any  # aip.CustomJob as stored
    cancel: threading.Event = field(default_factory=threading.Event)
    container: Any = None
    states: list[str] = field(default_factory=list)  # every state it went through


def _now() -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class FakeVertex(FakeRestServer):
    """Custom jobs in memory, run by the Docker Engine against the fake Cloud Storage."""

    def __init__(self, storage: FakeStorage, *, images: Callable[[str], str] = lambda ref: ref) -> None:
        super().__init__()
        self.storage = storage
        self.images = images
        self.jobs: dict[str, Job] = {}
        self.scenarios: dict[str, str] = {}
        self._ids = itertools.count(1000)
        self.route("POST", PARENT)(self._create)
        self.route("GET", JOB)(self._get)
        self.route("GET", PARENT)(self._list)
        self.create_delay = 5.0
        self.route("POST", JOB + r":cancel")(self._cancel)

    # -- for tests -----------------------------------------------------------------------

    def scenario(self, match: str, kind: str) -> None:
        if kind not in {"quota", "stockout", "stuck", "slow-create"}:
            raise ValueError(kind)
        self.scenarios[match] = kind

    def created(self) -> list[Any]:
        """The CustomJobs as the client sent them, in order."""
        return [r.message(aip.CustomJob) for r in self.sent("POST", PARENT)]

    def state_of(self, name: str) -> str:
        with self.lock:
            return str(self.jobs[name].job.state.name)

    def wait_all(self, timeout: float = 60) -> None:
        """Wait until every job has ended (and its container is gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(j.job.state in TERMINAL and j.container is None for j in self.jobs.values()):
                    return
            time.sleep(0.1)
        raise TimeoutError("fake Vertex jobs still running")

    # -- routes --------------------------------------------------------------------------

    def _kind(self, job: Any) -> str:
        return next((k for m, k in self.scenarios.items() if m in job.display_name), "")

    def _create(self, request: FakeRequest) -> str:
        job = request.message(aip.CustomJob)
        if not job.display_name or not job.job_spec.worker_pool_specs:
            raise GoogleError("INVALID_ARGUMENT", "display_name and job_spec.worker_pool_specs are required")
        pool = job.job_spec.worker_pool_specs[0]
        if "@sha256:" not in pool.container_spec.image_uri:
            raise GoogleError("INVALID_ARGUMENT", "fake: envctl sends images by digest")
        if self._kind(job) == "quota":
            accelerator = pool.machine_spec.accelerator_type.name.lower().replace("tesla_", "")
            raise GoogleError(
                "RESOURCE_EXHAUSTED",
                "The following quota metrics exceed quota limits: "
                f"aiplatform.googleapis.com/custom_model_training_{accelerator}_gpus",
            )
        name = f"{request.groups['parent']}/customJobs/{next(self._ids)}"
        job.name = name
        job.state = State.JOB_STATE_QUEUED
        job.create_time = _now()
        job.update_time = _now()
        kept = Job(job=job, states=["JOB_STATE_QUEUED"])
        with self.lock:
            self.jobs[name] = kept
        threading.Thread(target=self._run, args=(kept,), name=f"fake-vertex-{name}", daemon=True).start()
        if self._kind(job) == "slow-create":
            time.sleep(self.create_delay)
        return proto_json(job)

    def _list(self, request: FakeRequest) -> dict[str, Any]:
        wanted: dict[str, str] = {}
        for clause in filter(None, (c.strip() for c in request.param("filter").split(" AND "))):
            match = re.fullmatch(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?', clause)
            if match is None:
                raise GoogleError("INVALID_ARGUMENT", f"fake: unsupported filter {clause!r}")
            wanted[match[1]] = match[2]
        size = int(request.param("pageSize") or 0) or 100
        start = int(request.param("pageToken") or 0)
        with self.lock:
            jobs = [
                j.job
                for name, j in self.jobs.items()
                if name.startswith(request.groups["parent"] + "/")
                and all(j.job.labels.get(k) == v for k, v in wanted.items())
            ]
            page = [json.loads(proto_json(j)) for j in jobs[start : start + size]]
        more = start + size < len(jobs)
        return {"customJobs": page, **({"nextPageToken": str(start + size)} if more else {})}

    def _find(self, request: FakeRequest) -> Job:
        with self.lock:
            found = self.jobs.get(request.groups["name"])
        if found is None:
            raise GoogleError("NOT_FOUND", f"The CustomJob {request.groups['name']} does not exist.")
        return found

    def _get(self, request: FakeRequest) -> str:
        found = self._find(request)
        with self.lock:
            return proto_json(found.job)

    def _cancel(self, request: FakeRequest) -> dict[str, Any]:
        found = self._find(request)
        with self.lock:
            if found.job.state in TERMINAL:
                raise GoogleError(
                    "FAILED_PRECONDITION", f"Cannot cancel {found.job.name}: it is {found.job.state.name}"
                )
            self._move(found, State.JOB_STATE_CANCELLING)
            found.cancel.set()
            container = found.container
        if container is not None:
            with contextlib.suppress(Exception):
                container.kill()
        return {}

    # -- the job's life ------------------------------------------------------------------

    def _move(self, job: Job, state: Any, *, code: int = 0, message: str = "") -> None:
        with self.lock:
            if job.job.state in TERMINAL:
                return
            job.job.state = state
            job.job.update_time = _now()
            job.states.append(state.name)
            if state == State.JOB_STATE_RUNNING:
                job.job.start_time = _now()
            if state in TERMINAL:
                job.job.end_time = _now()
            if code:
                job.job.error = status_pb2.Status(code=code, message=message)

    def _run(self, job: Job) -> None:
        try:
            self._life(job)
        except Exception as e:  # a bug in the fake: the job fails loudly
            self._move(job, State.JOB_STATE_FAILED, code=13, message=f"fake: {e!r}")

    def _life(self, job: Job) -> None:
        time.sleep(0.1)
        self._move(job, State.JOB_STATE_PENDING)
        kind = self._kind(job.job)
        if kind == "stuck":
            job.cancel.wait()
        if kind == "stockout":
            time.sleep(0.2)
            self._move(
                job,
                State.JOB_STATE_FAILED,
                code=8,
                message="Resources are insufficient in region: europe-west4. Please try a different region.",
            )
            return
        if job.cancel.is_set():
            self._move(job, State.JOB_STATE_CANCELLED, code=1, message="CANCELED")
            return
        from pipeline.build.engine import connect

        client = connect()
        try:
            self._container(job, client)
        finally:
            client.close()

    def _container(self, job: Job, client: Any) -> None:
        import docker.errors

        pool = job.job.job_spec.worker_pool_specs[0]
        spec = pool.container_spec
        local = self.images(spec.image_uri)
        try:
            client.images.get(local)
        except docker.errors.ImageNotFound:
            try:
                client.images.pull(local)
            except docker.errors.APIError as e:
                explanation = str(getattr(e, "explanation", "") or e).splitlines()[0]
                self._move(
                    job,
                    State.JOB_STATE_FAILED,
                    code=3,
                    message=f'Unable to pull the container image "{spec.image_uri}": {explanation}',
                )
                return
        timeout = job.job.job_spec.scheduling.timeout.total_seconds() or 7 * 86400
        mount = Path(tempfile.mkdtemp(prefix="fake-vertex-"))
        try:
            before = self._mount(mount, [*spec.command, *spec.args, *(e.value for e in spec.env)])
            container = client.containers.create(
                local,
                command=list(spec.args),
                entrypoint=list(spec.command) or None,
                environment={e.name: e.value for e in spec.env},
                network_mode="none",
                labels={FAKE_LABEL: job.job.name},
                volumes={str(mount): {"bind": "/gcs", "mode": "rw"}},
                detach=True,
            )
            with self.lock:
                cancelled = job.cancel.is_set()
                job.container = None if cancelled else container
            try:
                if cancelled:
                    self._move(job, State.JOB_STATE_CANCELLED, code=1, message="CANCELED")
                    return
                container.start()
                self._move(job, State.JOB_STATE_RUNNING)
                code, timed_out = self._wait(container, timeout)
                container.reload()
                oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            finally:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                with self.lock:
                    job.container = None
            self._copy_back(mount, before)
            if job.cancel.is_set():
                self._move(job, State.JOB_STATE_CANCELLED, code=1, message="CANCELED")
            elif timed_out:
                self._move(
                    job,
                    State.JOB_STATE_FAILED,
                    code=4,
                    message=f"Job timed out: it ran longer than its timeout of {int(timeout)} s.",
                )
            elif oom:
                self._move(
                    job,
                    State.JOB_STATE_FAILED,
                    code=3,
                    message="The replica workerpool0-0 ran out of memory and exited with a non-zero status of 137.",
                )
            elif code:
                self._move(
                    job,
                    State.JOB_STATE_FAILED,
                    code=3,
                    message=f"The replica workerpool0-0 exited with a non-zero status of {code}. "
                    "To find out more about why your job exited please check the logs.",
                )
            else:
                self._move(job, State.JOB_STATE_SUCCEEDED)
        finally:
            shutil.rmtree(mount, ignore_errors=True)

    @staticmethod
    def _wait(container: Any, timeout: float) -> tuple[int, bool]:
        import requests

        try:
            return int(container.wait(timeout=timeout)["StatusCode"]), False
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            with contextlib.suppress(Exception):
                container.kill()
            return 137, True

    def _mount(self, root: Path, words: list[str]) -> dict[tuple[str, str], bytes]:
        """Copy every object into `root/BUCKET/NAME`; make every folder the job names writable.

        Cloud Storage has no folders: the mount shows every prefix as one, so the folders
        of the paths in the job's command, args and env exist (and any user may write there).
        """
        with self.storage.lock:
            objects = {(b, n): o.data for (b, n), o in self.storage.objects.items()}
        for (bucket, name), data in objects.items():
            target = root / bucket / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for word in words:
            if word.startswith("/gcs/"):
                (root / word.removeprefix("/gcs/")).parent.mkdir(parents=True, exist_ok=True)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        return objects

    def _copy_back(self, root: Path, before: dict[tuple[str, str], bytes]) -> None:
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            bucket, _, name = path.relative_to(root).as_posix().partition("/")
            if bucket not in self.storage.buckets:
                continue
            data = path.read_bytes()
            if before.get((bucket, name)) != data:
                self.storage.put(bucket, name, data, "application/octet-stream")


def remove_fake_containers() -> None:
    """Remove whatever container a fake job left (a test's clean-up)."""
    from pipeline.build.engine import connect

    client = connect()
    try:
        for container in client.containers.list(all=True, filters={"label": FAKE_LABEL}):
            with contextlib.suppress(Exception):
                container.remove(force=True)
    finally:
        client.close()
