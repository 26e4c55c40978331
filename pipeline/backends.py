"""The protocols each stage calls, and the one place that picks their implementation.

A stage receives a `Builder`, a `Publisher`, a `TestRunner` or an `InstanceHost` and
never tests which backend is configured. The `*_for` functions below are the only code
that reads `settings.backend`; they import the chosen implementation when called, so a
local command never pays for the Google client libraries (about 0.4 s to import).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    from pipeline.instances.model import Instance, Target
    from pipeline.ledger.db import Ledger, Version
    from pipeline.settings import Settings
    from pipeline.source import Tree
    from pipeline.spec.model import Cloud, Spec
    from pipeline.testing.model import Result, TestReport

LineSink = Callable[[str], None]
CloudOf = Callable[[], "Cloud"]


@dataclass(frozen=True)
class ContextFile:
    """One file of a build context: its bytes and mode."""

    data: bytes
    mode: int = 0o644


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """Everything a builder needs to build one version and push it as `tag`."""

    image: str
    sha: str
    files: Mapping[str, ContextFile]
    dockerfile: str  # path inside the context
    tag: str  # full reference `<registry>/<repo>:<sha>`
    buildargs: Mapping[str, str]
    labels: Mapping[str, str]
    no_cache: bool = False


@dataclass(frozen=True, kw_only=True)
class Built:
    """What a builder reports: the pushed manifest's digest, the image size and its SBOM."""

    digest: str
    size: int
    sbom: dict[str, Any] = field(default_factory=dict)


class Builder(Protocol):
    """Builds a context into an image, pushes it under the request's tag, reads its SBOM.

    Raises `BuildFailed` (exit 1) naming the failing step, `Unavailable` (exit 3) when
    its part is down. Never writes to the ledger.
    """

    @property
    def platform(self) -> str:
        """Which base of a spec it builds on (`build.base.local` or `.gcp`); part of the build key."""
        ...

    def build(self, request: BuildRequest, *, on_line: LineSink | None = None) -> Built: ...


class Publisher(Protocol):
    """Tags in a registry: reads them and moves them at manifest level (no layer moves).

    `repo`, `tag_ref` and `image_ref` name things; `digest_of` reads a tag or checks a
    digest (None: not there); `tag` points a tag at a digest the registry already holds;
    `tags` and `delete` serve retention (`envctl prune`).
    """

    @property
    def host(self) -> str: ...

    def repo(self, image: str) -> str: ...

    def tag_ref(self, image: str, tag: str) -> str: ...

    def image_ref(self, image: str, digest: str) -> str: ...

    def ping(self) -> bool: ...

    def require(self) -> None: ...

    def digest_of(self, image: str, reference: str) -> str | None: ...

    def tag(self, image: str, digest: str, tag: str) -> str: ...

    def tags(self, image: str) -> dict[str, str]:
        """Every tag of the image's repository and the digest it names (retention reads them)."""
        ...

    def delete(self, image: str, digest: str, tags: list[str]) -> bool:
        """Delete the version `digest` and its `tags` (which must be all that name it); False: gone.

        Raises `Refused` when another tag names it now, and never deletes it then.
        """
        ...


class TestRunner(Protocol):
    """Runs a spec's test notebooks inside one version (by digest) and records the evidence.

    No job or container it starts outlives the call, KeyboardInterrupt included.
    """

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
        on_warning: LineSink | None = None,
    ) -> TestReport: ...


class InstanceHost(Protocol):
    """Notebook instances started from an environment's version; names are checked first.

    `port` is where a local instance listens; `cloud` reads the spec's `cloud` section (machine
    type, accelerator) at the version's commit, for the hosts that use it; each host ignores
    what it has no use for.
    """

    def check_free(self, name: str, port: int | None = None) -> int | None: ...

    def create(self, name: str, target: Target, *, cloud: CloudOf, port: int | None = None) -> Instance: ...

    def list(self) -> list[Instance]: ...

    def get(self, name: str) -> Instance: ...

    def restart(self, name: str, target: Target, *, cloud: CloudOf) -> Instance: ...

    def delete(self, name: str, *, purge: bool = False) -> str | None: ...


def publisher_for(settings: Settings, *, timeout: float = 30.0) -> Publisher:
    """The publisher for `settings.registry`: Artifact Registry's API on gcp, else OCI distribution."""
    if settings.backend == "gcp":
        from pipeline.publish.artifact_registry import ArtifactRegistryPublisher

        return ArtifactRegistryPublisher.for_settings(settings, timeout=timeout)
    from pipeline.publish.distribution import OciPublisher

    return OciPublisher.for_settings(settings, timeout=timeout)


def platform_for(settings: Settings) -> str:
    """Which base of a spec the builder builds on (`base.local` or `base.gcp`), with no builder made."""
    return "gcp" if settings.backend == "gcp" else "local"


def builder_for(settings: Settings) -> Builder:
    """The builder: Cloud Build on gcp, else the Docker Engine."""
    if settings.backend == "gcp":
        from pipeline.build.cloudbuild import CloudBuildBuilder

        return CloudBuildBuilder.for_settings(settings)
    from pipeline.build.docker_builder import EngineBuilder

    return EngineBuilder.for_settings(settings)


def test_runner_for(settings: Settings, *, allow_cpu: bool = False) -> TestRunner:
    """The test runner: Vertex AI custom jobs on gcp, else containers on the Docker Engine.

    On gcp each notebook runs as one custom job on the spec's `cloud` machine and
    accelerator (`pipeline.testing.vertex`). Locally a spec that asks for an accelerator
    runs only with `allow_cpu` (on the CPU, recorded as such).
    """
    if settings.backend == "gcp":
        from pipeline.testing.vertex import VertexTestRunner

        return VertexTestRunner(settings)
    from pipeline.testing.stage import LocalTestRunner

    return LocalTestRunner(settings, allow_cpu=allow_cpu)


def base_reader_for(settings: Settings) -> Callable[[str, bool], tuple[str | None, list[str]]]:
    """How `envctl bases` reads a base reference: its digest now and its repository's tags.

    On gcp a base on Artifact Registry (Deep Learning Containers) is read through the
    Artifact Registry API; everything else through the registry protocol.
    """
    from pipeline.build.bases import read_oci

    def oci(reference: str, with_tags: bool) -> tuple[str | None, list[str]]:
        return read_oci(reference, with_tags, settings.auth_hosts)

    if settings.backend != "gcp":
        return oci
    from pipeline.gcp import Google, is_artifact_registry
    from pipeline.publish.artifact_registry import read_base

    google = Google(settings)

    def read(reference: str, with_tags: bool) -> tuple[str | None, list[str]]:
        if is_artifact_registry(reference.partition("/")[0]):
            return read_base(google, reference, with_tags)
        return oci(reference, with_tags)

    return read


def garbage_collector_for(settings: Settings) -> Callable[[], int] | None:
    """What frees the bytes of deleted manifests: the local stack's registry GC; None on gcp.

    Artifact Registry frees a deleted version's storage itself. Locally the collector
    returns the bytes freed on disk; it needs the registry to run under
    `envctl stack up` (see `pipeline.stack.registry_server.collect_garbage`).
    """
    if settings.backend == "gcp":
        return None
    from pipeline.stack import registry_server

    return lambda: registry_server.collect_garbage(settings)


def instance_host_for(
    settings: Settings, *, project: str | None, zone: str | None, command: str = "envctl instances"
) -> InstanceHost:
    """Where instances run: Vertex AI Workbench on gcp (needs project and zone), else local JupyterLab.

    On gcp, zone "-" lists the instances of every zone (what `envctl prune` must protect).
    """
    if settings.backend == "gcp":
        from pipeline.instances.gcp import GcpInstances

        return GcpInstances.for_settings(settings, project=project, zone=zone, command=command)
    from pipeline.instances.local import LocalInstances

    return LocalInstances.for_settings(settings)


def _not_yet(part: str) -> NoReturn:
    from pipeline.errors import ConfigError

    raise ConfigError(f"the gcp backend has no {part} in this version of envctl; use ENVCTL_BACKEND=local")
