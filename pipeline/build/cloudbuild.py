"""The Cloud Build builder: the same build as the local one, run by Cloud Build.

The build context (the request's files, a reproducible .tar.gz) goes to a Cloud Storage
bucket; one build runs `docker build` with the request's build args, labels, Dockerfile
and tag, then a second step runs the SBOM script of `pipeline.build.sbom` inside the
image just built and leaves its JSON as a build artifact in the same bucket. Cloud
Build pushes the tag (`images`) and reports its digest. The log (`GCS_ONLY`, in the
bucket as `log-<build id>.txt`) is relayed line by line while the build runs. The size
is the image's size as Artifact Registry reports it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline import output
from pipeline.backends import BuildRequest, Built, LineSink
from pipeline.build.engine import context_tar
from pipeline.build.sbom import SCRIPT as SBOM_SCRIPT
from pipeline.errors import BuildFailed, Unavailable, UsageError

if TYPE_CHECKING:
    from pipeline.gcp import Api, Google
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

DOCKER = "gcr.io/cloud-builders/docker"
SBOM_FILE = "envctl-sbom.json"
TAIL = 30
# Final statuses and what they mean to envctl; SUCCESS and FAILURE are handled apart.
_NOT_BUILT = {
    "TIMEOUT": "timed out",
    "CANCELLED": "was cancelled",
    "EXPIRED": "expired in the queue before it started",
    "INTERNAL_ERROR": "hit an internal Cloud Build error",
}
_FINAL = {"SUCCESS", "FAILURE", *_NOT_BUILT}


def escape(value: str) -> str:
    """A value Cloud Build passes through as is: `$` starts a substitution, `$$` is a dollar."""
    return value.replace("$", "$$")


def source_archive(request: BuildRequest) -> bytes:
    """The build context as a reproducible .tar.gz (sorted, fixed times and owners, no gzip time)."""
    return gzip.compress(context_tar(request.files), compresslevel=6, mtime=0)


def archive_object(request: BuildRequest, archive: bytes) -> str:
    """The source object's name: addressed by content, so the same context is uploaded once."""
    return f"envctl/source/{request.image}/{hashlib.sha256(archive).hexdigest()}.tar.gz"


def sbom_location(bucket: str, request: BuildRequest, archive: bytes) -> str:
    return (
        f"gs://{bucket}/envctl/sbom/{request.image}/{request.sha}/{hashlib.sha256(archive).hexdigest()[:16]}/"
    )


def docker_args(request: BuildRequest) -> list[str]:
    # Not `--network=cloudbuild`: on that network the metadata server hands out the build's
    # credentials, which can push to Artifact Registry; a pushed Dockerfile's RUN steps get
    # the default network (the package indexes, no metadata server).
    args = ["build", "-f", request.dockerfile, "-t", request.tag]
    for key in sorted(request.buildargs):
        args += ["--build-arg", f"{key}={request.buildargs[key]}"]
    for key in sorted(request.labels):
        args += ["--label", f"{key}={request.labels[key]}"]
    if request.no_cache:
        args.append("--no-cache")
    args.append(".")
    return args


SBOM_SHELL = (
    'docker run --rm --network=none -e ENVCTL_SBOM_SCRIPT --entrypoint python3 "$0" '
    f'-c "$ENVCTL_SBOM_SCRIPT" > /workspace/{SBOM_FILE}'
)


def sbom_step(request: BuildRequest) -> Any:
    """The SBOM step: the built image runs its own SBOM script with no network (so no credentials)."""
    from google.cloud.devtools import cloudbuild_v1

    return cloudbuild_v1.BuildStep(
        id="sbom",
        name=DOCKER,
        entrypoint="bash",
        args=["-c", escape(SBOM_SHELL), escape(request.tag)],
        env=[f"ENVCTL_SBOM_SCRIPT={escape(SBOM_SCRIPT)}"],
        wait_for=["build"],
    )


def build_message(
    request: BuildRequest, *, bucket: str, source_object: str, sbom_at: str, timeout_seconds: int
) -> Any:
    """The `cloudbuild_v1.Build` to submit for `request`."""
    from google.cloud.devtools import cloudbuild_v1

    return cloudbuild_v1.Build(
        source=cloudbuild_v1.Source(
            storage_source=cloudbuild_v1.StorageSource(bucket=bucket, object_=source_object)
        ),
        steps=[
            cloudbuild_v1.BuildStep(
                id="build",
                name=DOCKER,
                args=[escape(a) for a in docker_args(request)],
                env=["DOCKER_BUILDKIT=1"],  # the documented `RUN --mount=type=secret` needs BuildKit
            ),
            sbom_step(request),
        ],
        images=[request.tag],
        artifacts=cloudbuild_v1.Artifacts(
            objects=cloudbuild_v1.Artifacts.ArtifactObjects(location=sbom_at, paths=[SBOM_FILE])
        ),
        logs_bucket=f"gs://{bucket}",
        options=cloudbuild_v1.BuildOptions(logging=cloudbuild_v1.BuildOptions.LoggingMode.GCS_ONLY),
        timeout=f"{timeout_seconds}s",
        tags=["envctl", _tag_safe(request.image)],
    )


def _tag_safe(image: str) -> str:
    """Build tags allow `[\\w][\\w.-]{0,127}`; image names already fit."""
    return image[:128]


@dataclass
class LogRelay:
    """Relays the lines of a growing log object once each; keeps the last ones for errors."""

    on_line: LineSink | None
    seen: int = 0
    tail: list[str] = field(default_factory=list)

    def feed(self, text: str, *, final: bool) -> None:
        lines = text.splitlines()
        if not final and not text.endswith("\n"):
            lines = lines[:-1]  # a line still being written
        for line in lines[self.seen :]:
            self.tail = [*self.tail[-(TAIL - 1) :], line]
            if self.on_line:
                self.on_line(line)
        self.seen = max(self.seen, len(lines))


def docker_image_name(tag: str, digest: str) -> str:
    """Artifact Registry's name of the image `REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG` at `digest`."""
    host, _, rest = tag.partition("/")
    parts = rest.rsplit(":", 1)[0].split("/")
    if not host.endswith("-docker.pkg.dev") or len(parts) < 3:
        raise UsageError(
            f"{tag} is not in Artifact Registry (REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE)"
        )
    package = urllib.parse.quote("/".join(parts[2:]), safe="")
    region = host.removesuffix("-docker.pkg.dev")
    return f"projects/{parts[0]}/locations/{region}/repositories/{parts[1]}/dockerImages/{package}@{digest}"


@dataclass(frozen=True, kw_only=True)
class CloudBuildBuilder:
    """Builds with Cloud Build in `project`/`region`; source, SBOM and logs go to `bucket`.

    Every call goes through `google` (clients, deadline and retry from the settings) and
    `pipeline.gcp.translated` (Google's errors as envctl's: one line, the exit code).
    """

    project: str
    region: str
    bucket: str
    google: Google
    build_timeout: int = 7200
    poll_seconds: float = 2.0

    @property
    def platform(self) -> str:
        return "gcp"

    @classmethod
    def for_settings(cls, settings: Settings) -> CloudBuildBuilder:
        from pipeline.gcp import Google, location

        where = location(settings)
        return cls(
            project=where.project,
            region=where.region,
            bucket=settings.gcp_build_bucket or f"{where.project}_cloudbuild",
            google=Google(settings),
            build_timeout=settings.gcp_build_timeout,
            poll_seconds=float(settings.gcp_build_poll),
        )

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def call(self, what: str, api: Api, fn: Callable[[], Any]) -> Any:
        from pipeline.gcp import translated

        with translated(what, api=api):
            return fn()

    def build(self, request: BuildRequest, *, on_line: LineSink | None = None) -> Built:
        archive = source_archive(request)
        source_object = archive_object(request, archive)
        sbom_at = sbom_location(self.bucket, request, archive)
        with output.step(f"uploading the build context of {request.image} to gs://{self.bucket}"):
            self._upload(source_object, archive)
        message = build_message(
            request,
            bucket=self.bucket,
            source_object=source_object,
            sbom_at=sbom_at,
            timeout_seconds=self.build_timeout,
        )
        with output.step(f"building {request.image} at {request.sha[:12]} on Cloud Build"):
            operation = self.call(
                f"Cloud Build in {self.parent}",
                "cloudbuild",
                lambda: self.google.cloud_build().create_build(
                    project_id=self.project, parent=self.parent, build=message, **self.google.call()
                ),
            )
            build_id = str(operation.metadata.build.id)
            output.info(f"  Cloud Build {build_id}: {operation.metadata.build.log_url or self.parent}")
            with self._cancel_on_interrupt(build_id):
                final = self._follow(build_id, LogRelay(on_line))
        digest = self._digest(final, request)
        size = self._size(request, digest)
        bill = self._sbom(sbom_at)
        return Built(digest=digest, size=size, sbom=bill)

    # -- steps -------------------------------------------------------------------------

    def _bucket(self) -> Any:
        return self.google.storage(self.project).bucket(self.bucket)

    def _upload(self, name: str, data: bytes) -> None:
        self.call(
            f"the Cloud Storage bucket gs://{self.bucket}",
            "storage",
            lambda: (
                self._bucket()
                .blob(name)
                .upload_from_string(data, content_type="application/gzip", **self.google.call())
            ),
        )

    def _read_object(self, name: str) -> bytes | None:
        from google.api_core import exceptions

        def read() -> bytes | None:
            try:
                data: bytes = self._bucket().blob(name).download_as_bytes(**self.google.call())
            except exceptions.NotFound:
                return None
            return data

        result: bytes | None = self.call(f"gs://{self.bucket}/{name}", "storage", read)
        return result

    def _get_build(self, build_id: str) -> Any:
        name = f"{self.parent}/builds/{build_id}"
        return self.call(
            f"the Cloud Build build {name}",
            "cloudbuild",
            lambda: self.google.cloud_build().get_build(
                name=name, project_id=self.project, id=build_id, **self.google.call()
            ),
        )

    def _follow(self, build_id: str, relay: LogRelay) -> Any:
        """Poll the build and its log until it is final; relay the log and the status."""
        deadline = time.monotonic() + self.build_timeout + 600
        status = ""
        while True:
            build = self._get_build(build_id)
            now_status = build.status.name
            if now_status != status:
                status = now_status
                output.info(f"  Cloud Build {build_id}: {status}")
            final = status in _FINAL
            text = self._read_object(f"log-{build_id}.txt")
            if text is not None:
                relay.feed(text.decode(errors="replace"), final=final)
            if final:
                self._raise_unless_success(build, relay)
                return build
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"Cloud Build {build_id} is still {status} after {self.build_timeout + 600} s; "
                    f"see {build.log_url or self.parent}"
                )
            time.sleep(self.poll_seconds)

    @contextmanager
    def _cancel_on_interrupt(self, build_id: str) -> Iterator[None]:
        try:
            yield
        except KeyboardInterrupt:
            output.warn(f"interrupted: cancelling Cloud Build {build_id}")
            name = f"{self.parent}/builds/{build_id}"
            try:
                self.google.cloud_build().cancel_build(
                    name=name, project_id=self.project, id=build_id, timeout=10, retry=None
                )
            except Exception as e:  # the interrupt matters more than a failed cancel
                log.warning("cancelling %s failed: %s", name, e)
            raise

    def _raise_unless_success(self, build: Any, relay: LogRelay) -> None:
        status = build.status.name
        if status == "SUCCESS":
            return
        where = f"see {build.log_url}" if build.log_url else f"build {build.id}"
        if status == "FAILURE":
            failing = next(
                ((i, s) for i, s in enumerate(build.steps) if s.status.name in {"FAILURE", "TIMEOUT"}), None
            )
            step = f'step #{failing[0]} "{failing[1].id or failing[1].name}"' if failing else "a step"
            detail = build.failure_info.detail or build.status_detail or "the build failed"
            lines = relay.tail or ["(no log lines: the log bucket had none)"]
            raise BuildFailed(
                f"build failed at {step} on Cloud Build {build.id}: {detail}\n"
                f"--- last {len(lines)} log lines ({where}) ---\n" + "\n".join(lines)
            )
        why = _NOT_BUILT.get(status, f"ended as {status}")
        if status == "TIMEOUT":
            raise BuildFailed(
                f"Cloud Build {build.id} {why} after {build.timeout.total_seconds():.0f} s ({where}); "
                "nothing was recorded: make the build faster or raise gcp_build_timeout"
            )
        raise Unavailable(
            f"Cloud Build {build.id} {why} ({where}); nothing was recorded: run the build again"
        )

    def _digest(self, build: Any, request: BuildRequest) -> str:
        digests = [i.digest for i in build.results.images if i.name == request.tag and i.digest]
        if not digests:
            raise Unavailable(
                f"Cloud Build {build.id} succeeded but reported no digest for {request.tag}; "
                "nothing was recorded"
            )
        return str(digests[0])

    def _size(self, request: BuildRequest, digest: str) -> int:
        name = docker_image_name(request.tag, digest)
        image = self.call(
            f"the Artifact Registry image {name}",
            "artifactregistry",
            lambda: self.google.artifact_registry().get_docker_image(name=name, **self.google.call()),
        )
        return int(image.image_size_bytes or 0)

    def _sbom(self, location: str) -> dict[str, Any]:
        name = location.removeprefix(f"gs://{self.bucket}/") + SBOM_FILE
        data = self._read_object(name)
        if data is None:
            raise Unavailable(f"the build left no SBOM at {location}{SBOM_FILE}; nothing was recorded")
        try:
            bill: dict[str, Any] = json.loads(data)
        except ValueError as e:
            raise Unavailable(f"the SBOM at {location}{SBOM_FILE} is not JSON: {e}") from e
        return bill
