"""The local builder: the Docker Engine builds, envctl takes the SBOM and pushes.

The machine's CA bundle and pip settings reach the build's RUN steps so that
`pip install` finds the package index; see `pipeline.build.dockerfile`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline import machine, output
from pipeline.backends import BuildRequest, Built, ContextFile, LineSink
from pipeline.build import dockerfile, sbom
from pipeline.build.engine import TRANSPORT_ERRORS, build, connect, context_tar, push
from pipeline.errors import Unavailable
from pipeline.publish import login
from pipeline.publish.oci import Credentials
from pipeline.settings import Settings


@dataclass(frozen=True)
class EngineBuilder:
    """Builds on the Docker Engine at `docker_host` (empty: the environment's default).

    `push_auth` goes to the engine with the push only, never to the build.
    """

    docker_host: str = ""
    push_auth: Credentials = field(default_factory=Credentials, repr=False)

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
        squash = bool(engine_call(lambda: client.info()).get("ExperimentalBuild"))
        files = dict(request.files)
        docker_text = files[request.dockerfile].data.decode()
        if squash:
            ca = machine.ca_bundle()
            files[f"{dockerfile.BUILD_DIR}/ca.crt"] = ContextFile(ca.read_bytes() if ca else b"")
            files[f"{dockerfile.BUILD_DIR}/pip.conf"] = ContextFile(machine.pip_conf().encode())
            files[request.dockerfile] = ContextFile(dockerfile.inject_build_files(docker_text).encode())
        else:
            output.warn(
                "the Docker Engine has no experimental squash; the machine's CA bundle and pip settings "
                "are not passed to this build"
            )
        with output.step(f"building {request.image} at {request.sha[:12]}"):
            image_id = build(
                client,
                context=context_tar(files),
                dockerfile=request.dockerfile,
                tag=request.tag,
                buildargs=request.buildargs,
                labels=request.labels,
                network_mode="host",
                squash=squash,
                no_cache=request.no_cache,
                on_line=on_line,
            )
        with output.step("taking the SBOM"):
            bill = sbom.collect(client, image_id)
        size = int(engine_call(lambda: client.images.get(image_id)).attrs.get("Size") or 0)
        with output.step(f"pushing {request.tag}"):
            digest = push(client, request.tag, auth=self.push_auth)
        return Built(digest=digest, size=size, sbom=bill)
