"""The local builder: BuildKit on the Docker Engine builds, envctl takes the SBOM and pushes.

The machine's pip settings and CA bundle reach the build as BuildKit secrets, which a
`RUN` step mounts for its own duration only; nothing of either is in a layer, the image
config or its history. A Dockerfile reaches them the documented way (README, "Reaching
the package index in a build"):

    RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \\
        PIP_CONFIG_FILE=/run/secrets/pipconf pip install ...

The pip settings name the CA bundle at its mount point (`cert = /run/secrets/cacert`),
so the step works unchanged where a builder offers no secrets: pip ignores a missing
PIP_CONFIG_FILE. A Dockerfile that mounts neither builds without them; envctl warns
when it runs pip without them. envctl adds no instruction to the Dockerfile, so the
image keeps the base image's user and everything else the Dockerfile says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import machine, output
from pipeline.backends import BuildRequest, Built, LineSink
from pipeline.build import dockerfile, sbom
from pipeline.build.engine import TRANSPORT_ERRORS, buildkit_build, connect, push
from pipeline.errors import Unavailable
from pipeline.publish import login
from pipeline.publish.oci import Credentials
from pipeline.settings import Settings

PIP_SECRET = "pipconf"
CA_SECRET = "cacert"
SECRETS_DIR = "/run/secrets"  # where BuildKit mounts a secret with no target


def build_secrets() -> dict[str, bytes]:
    """The secrets every build is offered: this machine's pip settings and CA bundle (both always)."""
    ca = machine.ca_bundle()
    if ca is None:
        import certifi  # the bundle requests ships: pip's own default

        ca = Path(certifi.where())
    pip_conf = machine.pip_conf().rstrip("\n") + f"\ncert = {SECRETS_DIR}/{CA_SECRET}\n"
    return {PIP_SECRET: pip_conf.encode(), CA_SECRET: ca.read_bytes()}


@dataclass(frozen=True)
class EngineBuilder:
    """Builds on the Docker Engine at `docker_host` (empty: the environment's default).

    `push_auth` goes to the engine with the push only, never to the build.
    """

    docker_host: str = ""
    push_auth: Credentials = field(default_factory=Credentials, repr=False)

    @property
    def platform(self) -> str:
        return "local"

    @classmethod
    def for_settings(cls, settings: Settings) -> EngineBuilder:
        host = settings.registry.partition("/")[0]
        return cls(settings.docker_host, push_auth=login.credentials(settings, host))

    def build(self, request: BuildRequest, *, on_line: LineSink | None = None) -> Built:
        import docker.errors

        def engine_call(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except (docker.errors.DockerException, *TRANSPORT_ERRORS) as e:
                raise Unavailable(f"the Docker Engine failed: {e}") from e

        client = connect(self.docker_host)
        text = request.files[request.dockerfile].data.decode(errors="replace")
        if dockerfile.runs_pip_without(text, PIP_SECRET):
            output.warn(
                f"{request.image}: the Dockerfile runs pip without `--mount=type=secret,id={PIP_SECRET}`; "
                "pip gets no package index settings (see README, Reaching the package index in a build)"
            )
        with output.step(f"building {request.image} at {request.sha[:12]}"):
            image_id = buildkit_build(
                docker_host=self.docker_host,
                files=request.files,
                dockerfile=request.dockerfile,
                tag=request.tag,
                buildargs=request.buildargs,
                labels=request.labels,
                secrets=build_secrets(),
                network="host",
                no_cache=request.no_cache,
                on_line=on_line,
            )
        with output.step("taking the SBOM"):
            bill = sbom.collect(client, image_id)
        size = int(engine_call(lambda: client.images.get(image_id)).attrs.get("Size") or 0)
        with output.step(f"pushing {request.tag}"):
            digest = push(client, request.tag, auth=self.push_auth)
        return Built(digest=digest, size=size, sbom=bill)
