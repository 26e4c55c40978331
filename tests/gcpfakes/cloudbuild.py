"""A stateful fake of the Cloud Build REST API (v1, regional), for the real `CloudBuildClient`.

State: triggers (by id, found by id or name), builds and their long-running operations.
A build moves QUEUED -> WORKING -> a final status, one step per read (get_build or the
operation), to the outcome a test scripts with `script(...)`:

- SUCCESS: `results.images[]` carries a digest for every image of `Build.images`; the
  fake Artifact Registry (when given) gets a version for that digest and the tag the
  build pushed, so the digest is served afterwards; `artifacts.objects` are written to
  the fake Cloud Storage from `Outcome.artifacts` (file name -> bytes).
- FAILURE (with `failure_info` and the failing step), TIMEOUT, CANCELLED, INTERNAL_ERROR,
  EXPIRED.

With `logs_bucket` set, the log is written to the fake Cloud Storage as
`log-<build id>.txt`: the first lines when the build starts working, all at the end.

The REST transport sends project-qualified calls to the global paths
(`/v1/projects/P/builds?parent=projects/P/locations/L`); the fake takes the regional
name from the `parent`/`name` query parameter when there is one, as the service does.
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from google.cloud.devtools import cloudbuild_v1

from tests.gcpfakes.rest import FakeRequest, FakeRestServer, GoogleError, iter_json, pages, proto_json

Build = cloudbuild_v1.Build
Status = cloudbuild_v1.Build.Status
FINAL = {
    "SUCCESS": Status.SUCCESS,
    "FAILURE": Status.FAILURE,
    "TIMEOUT": Status.TIMEOUT,
    "CANCELLED": Status.CANCELLED,
    "INTERNAL_ERROR": Status.INTERNAL_ERROR,
    "EXPIRED": Status.EXPIRED,
}
SUBSTITUTION_KEY = re.compile(r"^_[A-Z0-9_]+$")
SBOM = b'{"python": "3.11.2", "pip": [{"name": "papermill", "version": "2.6.0"}], "dpkg": []}'
_PARENT = r"/v1/projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?"


@dataclass
class Outcome:
    """What the next build does: its final status, log, failing step, digest and artifacts."""

    status: str = "SUCCESS"
    log: list[str] = field(default_factory=lambda: ["Step #0: building", "Step #0: done"])
    failing_step: int = 0
    failure_detail: str = ""
    digest: str = ""  # "" : one derived from the build ID
    artifacts: dict[str, bytes] = field(default_factory=lambda: {"envctl-sbom.json": SBOM})
    size: int = 123_456_789  # the pushed image's size, as Artifact Registry reports it
    reads_to_finish: int = 2  # reads of the build until it is final (QUEUED, WORKING, final)


def _snake(path: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", path).lower()


class CloudBuildFake(FakeRestServer):
    """Cloud Build v1 at `endpoint`; `storage` and `registry` are the fakes it writes to."""

    def __init__(self, *, storage: Any = None, registry: Any = None) -> None:
        super().__init__()
        self.storage = storage
        self.registry = registry
        self.triggers: dict[str, cloudbuild_v1.BuildTrigger] = {}  # id -> trigger
        self.builds: dict[str, Build] = {}
        self.repository_locations: dict[str, str] = {}  # connection repository -> its region
        self._outcomes: deque[Outcome] = deque()
        self._planned: dict[str, Outcome] = {}
        self._reads: dict[str, int] = {}
        self.route("POST", _PARENT + r"/builds")(self._create_build)
        self.route("GET", _PARENT + r"/builds/(?P<id>[^/:]+)")(self._get_build)
        self.route("POST", _PARENT + r"/builds/(?P<id>[^/:]+):cancel")(self._cancel_build)
        self.route("POST", _PARENT + r"/triggers")(self._create_trigger)
        self.route("GET", _PARENT + r"/triggers")(self._list_triggers)
        self.route("GET", _PARENT + r"/triggers/(?P<id>[^/:]+)")(self._get_trigger)
        self.route("PATCH", _PARENT + r"/triggers/(?P<id>[^/:]+)")(self._update_trigger)
        self.route("POST", _PARENT + r"/triggers/(?P<id>[^/:]+):run")(self._run_trigger)

    # -- what tests script and read ------------------------------------------------------

    def script(self, *outcomes: Outcome) -> None:
        """The outcomes of the next builds, in order; without one a build succeeds."""
        with self.lock:
            self._outcomes.extend(outcomes)

    def trigger_named(self, name: str) -> cloudbuild_v1.BuildTrigger | None:
        with self.lock:
            return next((t for t in self.triggers.values() if t.name == name), None)

    def writes(self) -> list[FakeRequest]:
        """Every request that could change state (not a GET)."""
        return [r for r in self.sent() if r.method != "GET"]

    # -- names -----------------------------------------------------------------------

    @staticmethod
    def _location(request: FakeRequest, key: str) -> tuple[str, str]:
        """(project, location) from the path, or from the `parent`/`name` query parameter."""
        qualified = request.param(key)
        found = re.match(r"^projects/([^/]+)/locations/([^/]+)", qualified)
        if found:
            return found.group(1), found.group(2)
        return request.groups["project"], request.groups.get("location", "global")

    # -- builds ------------------------------------------------------------------------

    def _create_build(self, request: FakeRequest) -> str:
        project, location = self._location(request, "parent")
        build = request.message(Build)
        return self._start_build(project, location, build)

    def _start_build(self, project: str, location: str, build: Build) -> str:
        for step in build.steps:
            if not step.name:
                raise GoogleError("INVALID_ARGUMENT", "invalid build: every step needs a name")
        with self.lock:
            build_id = str(uuid.uuid4())
            build.id = build_id
            build.project_id = project
            build.name = f"projects/{project}/locations/{location}/builds/{build_id}"
            build.status = Status.QUEUED
            build.log_url = (
                f"https://console.cloud.google.com/cloud-build/builds;region={location}/{build_id}"
            )
            if not build.timeout:
                build.timeout = "600s"
            self.builds[build_id] = build
            self._planned[build_id] = self._outcomes.popleft() if self._outcomes else Outcome()
            self._reads[build_id] = 0
            return self._keep_operation(build)

    def _operation_name(self, build: Build) -> str:
        location = build.name.split("/")[3]
        return f"projects/{build.project_id}/locations/{location}/operations/op-{build.id}"

    def _keep_operation(self, build: Build) -> str:
        final = build.status in FINAL.values()
        return self.add_operation(
            self._operation_name(build),
            done=final,
            metadata=cloudbuild_v1.BuildOperationMetadata(build=build),
            response=build if final else None,
        )

    def _find_build(self, request: FakeRequest) -> Build:
        build_id = request.groups["id"]
        with self.lock:
            build = self.builds.get(build_id)
        if build is None:
            raise GoogleError("NOT_FOUND", f"build {build_id} not found")
        return build

    def _get_build(self, request: FakeRequest) -> str:
        build = self._find_build(request)
        with self.lock:
            self._advance(build)
            return proto_json(build)

    def _get_operation(self, request: FakeRequest) -> Any:
        name = request.groups["name"]
        build_id = name.rsplit("/", 1)[-1].removeprefix("op-")
        with self.lock:
            build = self.builds.get(build_id)
            if build is not None:
                self._advance(build)
        return super()._get_operation(request)

    def _cancel_build(self, request: FakeRequest) -> str:
        build = self._find_build(request)
        with self.lock:
            if build.status not in FINAL.values():
                self._finish(build, Outcome(status="CANCELLED", log=[]))
            return proto_json(build)

    def _advance(self, build: Build) -> None:
        if build.status in FINAL.values():
            return
        outcome = self._planned[build.id]
        self._reads[build.id] += 1
        if self._reads[build.id] >= outcome.reads_to_finish:
            self._finish(build, outcome)
        elif build.status == Status.QUEUED:
            build.status = Status.WORKING
            for step in build.steps:
                step.status = Status.WORKING
                break
            self._write_log(build, outcome.log[: max(1, len(outcome.log) // 2)])
            self._keep_operation(build)

    def _finish(self, build: Build, outcome: Outcome) -> None:
        build.status = FINAL[outcome.status]
        for index, step in enumerate(build.steps):
            if outcome.status == "SUCCESS" or index < outcome.failing_step:
                step.status = Status.SUCCESS
            elif index == outcome.failing_step:
                step.status = FINAL[outcome.status]
            else:
                step.status = Status.QUEUED
        if outcome.status == "FAILURE":
            step = build.steps[outcome.failing_step] if build.steps else None
            detail = outcome.failure_detail or (
                f'Build step failure: build step {outcome.failing_step} "{step.name if step else ""}" '
                "failed: step exited with non-zero status: 1"
            )
            build.failure_info = cloudbuild_v1.Build.FailureInfo(
                type_=cloudbuild_v1.Build.FailureInfo.FailureType.USER_BUILD_STEP, detail=detail
            )
            build.status_detail = detail
        if outcome.status == "TIMEOUT":
            build.status_detail = f"Build timeout after {build.timeout.total_seconds():.0f}s"
        if outcome.status == "SUCCESS":
            digest = outcome.digest or "sha256:" + hashlib.sha256(build.id.encode()).hexdigest()
            for image in build.images:
                build.results.images.append(cloudbuild_v1.BuiltImage(name=image, digest=digest))
                if self.registry is not None:
                    self._serve(image, digest, outcome.size)
            self._write_artifacts(build, outcome)
        self._write_log(build, outcome.log)
        self._keep_operation(build)

    def _serve(self, image: str, digest: str, size: int) -> None:
        """What Cloud Build's push leaves in Artifact Registry: a version and the pushed tag."""
        host, _, rest = image.partition("/")
        name, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
        project, repository, package = name.split("/", 2)
        location = host.removesuffix("-docker.pkg.dev")
        self.registry.push(
            f"projects/{project}/locations/{location}/repositories/{repository}",
            package,
            digest,
            (tag,),
            size=size,
        )

    def _write_log(self, build: Build, lines: list[str]) -> None:
        if self.storage is None or not build.logs_bucket:
            return
        bucket = build.logs_bucket.removeprefix("gs://").split("/", 1)[0]
        text = "".join(f"{line}\n" for line in lines)
        self.storage.put(bucket, f"log-{build.id}.txt", text.encode())

    def _write_artifacts(self, build: Build, outcome: Outcome) -> None:
        objects = build.artifacts.objects
        if self.storage is None or not objects.location:
            return
        bucket, _, prefix = objects.location.removeprefix("gs://").partition("/")
        for path in objects.paths:
            name = path.rsplit("/", 1)[-1]
            if name in outcome.artifacts:
                self.storage.put(bucket, f"{prefix.rstrip('/')}/{name}".lstrip("/"), outcome.artifacts[name])

    # -- triggers ----------------------------------------------------------------------

    def _find_trigger(
        self, request: FakeRequest, where: tuple[str, str] | None = None
    ) -> cloudbuild_v1.BuildTrigger:
        key = request.param("name").rsplit("/", 1)[-1] or request.groups["id"]
        project, location = where or self._location(request, "name")
        with self.lock:
            for trigger in self.triggers.values():
                if key in {trigger.id, trigger.name} and trigger.resource_name.startswith(
                    f"projects/{project}/locations/{location}/"
                ):
                    return trigger
        raise GoogleError("NOT_FOUND", f"trigger {key} not found in projects/{project}/locations/{location}")

    def _check_trigger(self, trigger: cloudbuild_v1.BuildTrigger, location: str) -> None:
        for key in trigger.substitutions:
            if not SUBSTITUTION_KEY.match(key):
                raise GoogleError(
                    "INVALID_ARGUMENT", f"invalid trigger: substitution key {key!r} is not valid"
                )
        repository = trigger.repository_event_config.repository
        if repository:
            found = re.match(
                r"^projects/[^/]+/locations/([^/]+)/connections/[^/]+/repositories/[^/]+$", repository
            )
            if not found:
                raise GoogleError("INVALID_ARGUMENT", f"invalid repository name {repository!r}")
            if found.group(1) != location:
                raise GoogleError(
                    "INVALID_ARGUMENT",
                    f"repository {repository} is in region {found.group(1)}; "
                    f"a trigger in region {location} cannot use it",
                )

    def _create_trigger(self, request: FakeRequest) -> str:
        project, location = self._location(request, "parent")
        trigger = request.message(cloudbuild_v1.BuildTrigger)
        self._check_trigger(trigger, location)
        with self.lock:
            if trigger.name and any(
                t.name == trigger.name
                and t.resource_name.startswith(f"projects/{project}/locations/{location}/")
                for t in self.triggers.values()
            ):
                raise GoogleError("ALREADY_EXISTS", f"trigger {trigger.name} already exists")
            trigger.id = str(uuid.uuid4())
            trigger.resource_name = (
                f"projects/{project}/locations/{location}/triggers/{trigger.name or trigger.id}"
            )
            trigger.create_time = "2026-11-23T00:00:00Z"
            self._fill_output_only(trigger)
            self.triggers[trigger.id] = trigger
            return proto_json(trigger)

    @staticmethod
    def _fill_output_only(trigger: cloudbuild_v1.BuildTrigger) -> None:
        if trigger.repository_event_config.repository:
            trigger.repository_event_config.repository_type = (
                cloudbuild_v1.RepositoryEventConfig.RepositoryType.GITHUB
            )

    def _get_trigger(self, request: FakeRequest) -> str:
        with self.lock:
            return proto_json(self._find_trigger(request))

    def _list_triggers(self, request: FakeRequest) -> dict[str, Any]:
        project, location = self._location(request, "parent")
        with self.lock:
            found = [
                t
                for t in self.triggers.values()
                if t.resource_name.startswith(f"projects/{project}/locations/{location}/")
            ]
        return pages(list(iter_json(found)), request, "triggers")

    def _update_trigger(self, request: FakeRequest) -> str:
        # The project-qualified PATCH names no region: the body's resource_name routes it.
        trigger = request.message(cloudbuild_v1.BuildTrigger)
        found = re.match(r"^projects/([^/]+)/locations/([^/]+)/", trigger.resource_name)
        project, location = (found.group(1), found.group(2)) if found else self._location(request, "name")
        existing = self._find_trigger(request, (project, location))
        mask = [_snake(p) for p in request.param("updateMask").split(",") if p]
        if mask:
            merged = cloudbuild_v1.BuildTrigger.deserialize(cloudbuild_v1.BuildTrigger.serialize(existing))
            for path in mask:
                cloudbuild_v1.BuildTrigger.pb(merged).ClearField(path)
                if path == "substitutions":
                    merged.substitutions = dict(trigger.substitutions)
                elif getattr(trigger, path):
                    setattr(merged, path, getattr(trigger, path))
            trigger = merged
        self._check_trigger(trigger, location)
        wanted = request.param("triggerId")
        if wanted and wanted not in {existing.id, existing.name}:
            raise GoogleError(
                "INVALID_ARGUMENT", f"trigger_id {wanted} does not name {existing.resource_name}"
            )
        with self.lock:
            trigger.id = existing.id
            trigger.resource_name = existing.resource_name
            trigger.create_time = existing.create_time
            trigger.name = trigger.name or existing.name
            self._fill_output_only(trigger)
            self.triggers[existing.id] = trigger
            return proto_json(trigger)

    def _run_trigger(self, request: FakeRequest) -> str:
        project, location = self._location(request, "name")
        trigger = self._find_trigger(request)
        wanted = request.json().get("triggerId")
        if wanted and wanted not in {trigger.id, trigger.name}:
            raise GoogleError(
                "INVALID_ARGUMENT", f"trigger_id {wanted} does not name {trigger.resource_name}"
            )
        source = request.json().get("source") or {}
        build = copy.deepcopy(trigger.build) if trigger.build else Build()
        build.build_trigger_id = trigger.id
        build.substitutions.update(dict(trigger.substitutions))
        build.substitutions.update(source.get("substitutions") or {})
        if not build.steps:
            build.steps.append(cloudbuild_v1.BuildStep(name="from:" + (trigger.filename or "inline")))
        return self._start_build(project, location, build)
