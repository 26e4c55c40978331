"""A stateful fake of the Cloud Scheduler REST API (v1), for the real `CloudSchedulerClient`.

State: jobs by full name (`projects/P/locations/L/jobs/J`). Create refuses a job that
exists (ALREADY_EXISTS) or names another parent, and checks what the service checks
for an HTTP job: a schedule, an https target URI, a method and, for a Google API, an
OAuth token's service account. Update (PATCH) applies only the fields its update mask
names, as the service does; a missing job is NOT_FOUND. Like the service, the fake
fills `state`, `user_update_time` and adds a `User-Agent` header of its own to an HTTP
target, so a caller that compared whole jobs would never see "unchanged".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from google.cloud import scheduler_v1

from tests.gcpfakes.rest import FakeRequest, FakeRestServer, GoogleError, proto_json

Job = scheduler_v1.Job
_PARENT = r"/v1/(?P<parent>projects/[^/]+/locations/[^/]+)"
SERVICE_HEADERS = {"User-Agent": "Google-Cloud-Scheduler"}


def _snake(path: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", path).lower()


class CloudSchedulerFake(FakeRestServer):
    """Cloud Scheduler v1 at `endpoint`."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, Job] = {}
        self.route("POST", _PARENT + r"/jobs")(self._create_job)
        self.route("GET", _PARENT + r"/jobs/(?P<id>[^/:]+)")(self._get_job)
        self.route("PATCH", _PARENT + r"/jobs/(?P<id>[^/:]+)")(self._update_job)

    def writes(self) -> list[FakeRequest]:
        """Every request that could change state (not a GET)."""
        return [r for r in self.sent() if r.method != "GET"]

    def job(self, name: str) -> Job | None:
        with self.lock:
            found = self.jobs.get(name)
            return Job.deserialize(Job.serialize(found)) if found is not None else None

    # -- routes ---------------------------------------------------------------------------

    def _get_job(self, request: FakeRequest) -> str:
        name = f"{request.groups['parent']}/jobs/{request.groups['id']}"
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                raise GoogleError("NOT_FOUND", f"Job not found: {name}")
            return proto_json(job)

    def _create_job(self, request: FakeRequest) -> str:
        parent = request.groups["parent"]
        job = request.message(Job)
        if not job.name.startswith(parent + "/jobs/") or "/" in job.name.removeprefix(parent + "/jobs/"):
            raise GoogleError("INVALID_ARGUMENT", f"job name {job.name!r} is not under {parent}")
        self._check(job)
        with self.lock:
            if job.name in self.jobs:
                raise GoogleError("ALREADY_EXISTS", f"Job {job.name} already exists")
            self._fill(job)
            self.jobs[job.name] = job
            return proto_json(job)

    def _update_job(self, request: FakeRequest) -> str:
        name = f"{request.groups['parent']}/jobs/{request.groups['id']}"
        sent = request.message(Job)
        if sent.name and sent.name != name:
            raise GoogleError("INVALID_ARGUMENT", f"job name {sent.name} does not match {name}")
        mask = [_snake(p) for p in request.param("updateMask").split(",") if p]
        with self.lock:
            existing = self.jobs.get(name)
            if existing is None:
                raise GoogleError("NOT_FOUND", f"Job not found: {name}")
            merged = Job.deserialize(Job.serialize(existing))
            for path in mask or ["description", "schedule", "time_zone", "http_target"]:
                if path not in Job.meta.fields:
                    raise GoogleError("INVALID_ARGUMENT", f"update_mask: unknown field {path}")
                Job.pb(merged).ClearField(path)
                value = getattr(sent, path)
                if value:
                    setattr(merged, path, value)
            self._check(merged)
            self._fill(merged)
            self.jobs[name] = merged
            return proto_json(merged)

    # -- the service's rules --------------------------------------------------------------

    @staticmethod
    def _check(job: Job) -> None:
        if not job.schedule:
            raise GoogleError("INVALID_ARGUMENT", "schedule is required")
        target = job.http_target
        if not target.uri:
            raise GoogleError(
                "INVALID_ARGUMENT", "the fake serves HTTP targets only: http_target.uri is required"
            )
        if not target.uri.startswith("https://"):
            raise GoogleError("INVALID_ARGUMENT", f"http_target.uri {target.uri!r} must be https")
        if target.http_method == scheduler_v1.HttpMethod.HTTP_METHOD_UNSPECIFIED:
            raise GoogleError("INVALID_ARGUMENT", "http_target.http_method is required")
        if (
            target.uri.split("/")[2].endswith(".googleapis.com")
            and not target.oauth_token.service_account_email
        ):
            raise GoogleError(
                "INVALID_ARGUMENT", "a Google API target needs an OAuth token's service account"
            )

    @staticmethod
    def _fill(job: Job) -> None:
        job.state = Job.State.ENABLED
        job.user_update_time = datetime.now(UTC)
        for key, value in SERVICE_HEADERS.items():
            if key not in job.http_target.headers:
                job.http_target.headers[key] = value
