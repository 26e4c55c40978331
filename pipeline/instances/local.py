"""Local instances: JupyterLab in a container on the Docker Engine, run by digest.

The container's labels are the record: `list` is the containers labelled
`org.envctl.instance`, each naming its environment, digest, port and token (anyone who
can read them can use the Docker Engine, which is root on this machine anyway). The
token reaches JupyterLab through the container's environment (`JUPYTER_TOKEN`), never
its command line, which `ps` shows to every local user.
JupyterLab listens on 127.0.0.1 with the host's network (the engine runs with
`--bridge=none`). The user's work lives in a named volume at /home/jupyter that
outlives restarts, upgrades and `delete` (unless `purge`): creating an instance of
the same name picks it up again.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests

from pipeline.backends import CloudOf
from pipeline.build.engine import TRANSPORT_ERRORS, connect
from pipeline.errors import Refused, Unavailable, UsageError
from pipeline.instances.model import Instance, Target, check_name
from pipeline.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "org.envctl."
LABEL = PREFIX + "instance"
HOME = "/home/jupyter"


def container_name(name: str) -> str:
    return f"envctl-{name}"


def volume_name(name: str) -> str:
    return f"envctl-{name}-work"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def check_port(port: int, host: str = "127.0.0.1") -> int:
    """The port, or `UsageError` when something listens on it (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise UsageError(
                f"port {port} on {host} is in use; pick another with --port or leave it out"
            ) from e
    return port


TOKEN_VARIABLE = "JUPYTER_TOKEN"


def jupyter_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """JupyterLab's command line: no secret on it (the token comes from `TOKEN_VARIABLE`)."""
    return [
        "jupyter",
        "lab",
        f"--ServerApp.ip={host}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={HOME}",
        "--allow-root",
        "--no-browser",
    ]


@dataclass(frozen=True, kw_only=True)
class LocalInstances:
    """Instances as containers on one Docker Engine; `repository` maps an image to `<registry>/<image>`."""

    client: Any
    registry: str
    host: str = "127.0.0.1"
    ready_timeout: float = 120.0

    @classmethod
    def for_settings(cls, settings: Settings) -> LocalInstances:
        return cls(client=connect(settings.docker_host, timeout=120), registry=settings.registry)

    def image_ref(self, target: Target) -> str:
        return f"{self.registry}/{target.env.image}@{target.digest}"

    def url(self, port: int | str, token: str) -> str:
        return f"http://{self.host}:{port}/lab?token={token}"

    # reads --------------------------------------------------------------------

    def list(self) -> list[Instance]:
        try:
            found = self.client.containers.list(all=True, filters={"label": LABEL})
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(f"the Docker Engine failed to list instances: {e}") from e
        return sorted((self._instance(c) for c in found), key=lambda i: i.name)

    def get(self, name: str) -> Instance:
        return self._instance(self._container(name))

    def _find(self, name: str) -> Any | None:
        check_name(name)
        try:
            found = self.client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(f"the Docker Engine failed to list instances: {e}") from e
        return found[0] if found else None

    def _container(self, name: str) -> Any:
        container = self._find(name)
        if container is None:
            raise UsageError(f"no instance named {name!r}; `envctl instances list` shows them")
        return container

    def _instance(self, container: Any) -> Instance:
        labels: dict[str, str] = container.labels
        port, token = labels.get(PREFIX + "port"), labels.get(PREFIX + "token")
        return Instance(
            name=labels[LABEL],
            environment=labels.get(PREFIX + "environment", ""),
            digest=labels.get(PREFIX + "digest", ""),
            image_ref=labels.get(PREFIX + "image-ref", ""),
            status=container.status,
            url=self.url(port, token) if port and token else None,
            volume=labels.get(PREFIX + "volume"),
            created_at=labels.get(PREFIX + "created"),
            sha=labels.get(PREFIX + "sha"),
        )

    # writes -------------------------------------------------------------------

    def check_free(self, name: str, port: int | None = None) -> int:
        """The port to use; `UsageError` when the name or the port is taken."""
        taken = self._find(name)
        if taken is not None:
            raise UsageError(
                f"instance {name!r} exists (environment {taken.labels.get(PREFIX + 'environment')}); "
                "delete it first or pick another name"
            )
        return check_port(port, self.host) if port is not None else free_port(self.host)

    def create(
        self, name: str, target: Target, *, cloud: CloudOf | None = None, port: int | None = None
    ) -> Instance:
        """Start JupyterLab from the target's digest; the URL answers when this returns."""
        port = self.check_free(name, port)
        ref = self._pull(target)
        volume, new_volume = self._volume(name)
        try:
            container = self._run(name, target, ref, port=port, token=secrets.token_hex(24))
        except BaseException:
            if new_volume:
                with contextlib.suppress(docker.errors.APIError):
                    volume.remove(force=True)
            raise
        return self._instance(container)

    def restart(self, name: str, target: Target, *, cloud: CloudOf | None = None) -> Instance:
        """Replace the container with one of the target's digest: same port, token and volume.

        If the new one doesn't answer, the old one is started again and the error raised.
        """
        old = self._container(name)
        labels: dict[str, str] = old.labels
        port, token = int(labels[PREFIX + "port"]), labels[PREFIX + "token"]
        ref = self._pull(target)
        try:
            old.stop(timeout=10)
            old.rename(f"{container_name(name)}-old-{secrets.token_hex(3)}")
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(f"the Docker Engine failed to stop instance {name!r}: {e}") from e
        try:
            container = self._run(
                name, target, ref, port=port, token=token, created=labels.get(PREFIX + "created")
            )
        except BaseException:
            try:
                old.rename(container_name(name))
                old.start()
            except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
                log.warning("could not start the previous container of %s again: %s", name, e)
            raise
        with contextlib.suppress(docker.errors.APIError):
            old.remove(force=True)
        return self._instance(container)

    def delete(self, name: str, *, purge: bool = False) -> str | None:
        """Remove the container; with `purge` its volume too. Returns the volume kept, if any."""
        container = self._container(name)
        volume = container.labels.get(PREFIX + "volume") or volume_name(name)
        try:
            container.remove(force=True)
            if purge:
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.volumes.get(volume).remove(force=True)
                return None
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(f"the Docker Engine failed to delete instance {name!r}: {e}") from e
        return volume

    # parts --------------------------------------------------------------------

    def _pull(self, target: Target) -> str:
        """The image by digest, pulled from the registry unless the engine has it."""
        ref = self.image_ref(target)
        try:
            self.client.images.get(ref)
            return ref
        except docker.errors.ImageNotFound:
            pass
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(f"the Docker Engine failed to look up {ref}: {e}") from e
        repository = ref.rpartition("@")[0]
        try:
            for chunk in self.client.api.pull(repository, tag=target.digest, stream=True, decode=True):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("error") or chunk["errorDetail"].get("message", "")
                    raise Unavailable(f"pull of {ref} failed: {detail}")
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(
                f"pull of {ref} failed: {e}; is the registry up (`envctl stack status`)?"
            ) from e
        return ref

    def _volume(self, name: str) -> tuple[Any, bool]:
        """The instance's work volume and whether it was made now (an old one is reused)."""
        try:
            return self.client.volumes.get(volume_name(name)), False
        except docker.errors.NotFound:
            pass
        try:
            return self.client.volumes.create(volume_name(name), labels={LABEL: name}), True
        except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
            raise Unavailable(f"the Docker Engine failed to create volume {volume_name(name)}: {e}") from e

    def _run(
        self, name: str, target: Target, ref: str, *, port: int, token: str, created: str | None = None
    ) -> Any:
        labels = {
            LABEL: name,
            PREFIX + "environment": str(target.env),
            PREFIX + "digest": target.digest,
            PREFIX + "sha": target.sha,
            PREFIX + "image-ref": ref,
            PREFIX + "port": str(port),
            PREFIX + "token": token,
            PREFIX + "volume": volume_name(name),
            PREFIX + "created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            container = self.client.containers.run(
                ref,
                command=jupyter_command(port, self.host),
                environment={TOKEN_VARIABLE: token},
                name=container_name(name),
                labels=labels,
                network_mode="host",
                volumes={volume_name(name): {"bind": HOME, "mode": "rw"}},
                working_dir=HOME,
                restart_policy={"Name": "unless-stopped"},
                detach=True,
            )
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise UsageError(
                    f"a container named {container_name(name)} exists; pick another name or remove it"
                ) from e
            raise Unavailable(f"the Docker Engine failed to start instance {name!r}: {e}") from e
        except requests.RequestException as e:
            raise Unavailable(f"the Docker Engine failed to start instance {name!r}: {e}") from e
        try:
            self._wait_ready(name, container, port, token)
        except BaseException:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise
        return container

    def _wait_ready(self, name: str, container: Any, port: int, token: str) -> None:
        """Until JupyterLab's /api/status answers with the token, the container exits, or the deadline."""
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://{self.host}:{port}/api/status"
        while True:
            try:
                answer = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=3)
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            container.reload()
            if container.status in {"exited", "dead"}:
                tail = container.logs(tail=5).decode(errors="replace").strip().splitlines()
                last = tail[-1] if tail else "no output"
                raise Refused(f"instance {name!r} exited before JupyterLab answered: {last}")
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"instance {name!r}: JupyterLab did not answer on {url} within {self.ready_timeout:.0f} s"
                )
            time.sleep(0.5)
