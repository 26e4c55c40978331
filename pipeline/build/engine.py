"""The Docker Engine through the docker SDK: connect, build from a context, push.

Builds use the low-level streaming API so log lines arrive as they come; pushes read
their stream and raise on errors it reports (docker/docker-py #3161).
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import docker.errors
import requests
import urllib3.exceptions
from docker.client import DockerClient, from_env

from pipeline.backends import ContextFile
from pipeline.errors import BuildFailed, Unavailable
from pipeline.publish.oci import Credentials

log = logging.getLogger(__name__)
LineSink = Callable[[str], None]
# How a connection to the engine fails when it goes away: requests or urllib3 errors, or the
# socket's own ConnectionError, depending on when it drops.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)


def connect(docker_host: str = "", *, timeout: int = 600) -> Any:
    """A docker client that answers, or `Unavailable`."""
    try:
        client = (
            DockerClient(base_url=docker_host, timeout=timeout) if docker_host else from_env(timeout=timeout)
        )
        client.ping()
    except (docker.errors.DockerException, *TRANSPORT_ERRORS) as e:
        raise Unavailable(
            f"the Docker Engine does not answer ({type(e).__name__}); start it with `envctl stack up`"
        ) from e
    return client


def answers(docker_host: str = "") -> bool:
    try:
        connect(docker_host, timeout=5).close()
    except Unavailable:
        return False
    return True


def context_tar(files: Mapping[str, ContextFile]) -> bytes:
    """A reproducible build context: sorted, fixed times and owners."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            item = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(item.data)
            info.mode = item.mode
            info.mtime = 0
            info.uid = info.gid = 0
            tar.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


_STEP = re.compile(r"^Step \d+/\d+ : ")


def build(
    client: Any,
    *,
    context: bytes,
    dockerfile: str,
    tag: str,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
    network_mode: str = "host",
    squash: bool = False,
    no_cache: bool = False,
    on_line: LineSink | None = None,
) -> str:
    """Build and return the image ID; `BuildFailed` names the failing step."""
    tail: deque[str] = deque(maxlen=30)
    current_step = ""
    image_id = ""
    try:
        stream = client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            dockerfile=dockerfile,
            tag=tag,
            buildargs=dict(buildargs),
            labels=dict(labels),
            network_mode=network_mode,
            rm=True,
            forcerm=True,
            pull=False,
            squash=squash,
            nocache=no_cache,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if not line.strip():
                        continue
                    tail.append(line)
                    if _STEP.match(line):
                        current_step = line
                    if on_line:
                        on_line(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                error = str(chunk["error"]).strip()
                tail.append(error)
                where = current_step or "the Dockerfile"
                raise BuildFailed(
                    f"build failed at {where}: {error}\n--- last {len(tail)} log lines ---\n"
                    + "\n".join(tail)
                )
    except docker.errors.APIError as e:
        if e.is_client_error():
            raise BuildFailed(f"build failed: {e.explanation or e}") from e
        raise Unavailable(f"the Docker Engine failed during the build: {e}") from e
    except TRANSPORT_ERRORS as e:
        raise Unavailable(f"the Docker Engine failed during the build: {e}") from e
    if not image_id:
        image_id = client.images.get(tag).id
    return image_id


def push(client: Any, ref: str, *, auth: Credentials | None = None, on_line: LineSink | None = None) -> str:
    """Push `repo:tag` and return the manifest digest the registry reported.

    `auth` goes to the engine with this push only (never to a build); without it the
    docker SDK uses the Docker client's login for the registry, if any.
    """
    repository, _, tag = ref.rpartition(":")
    auth_config = (
        {"username": auth.username, "password": auth.password} if auth is not None and auth.password else None
    )
    digest = ""
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("error") or chunk["errorDetail"].get("message", "")
                raise Unavailable(f"push of {ref} failed: {detail}")
            aux = chunk.get("aux") or {}
            if "Digest" in aux:
                digest = aux["Digest"]
            status = chunk.get("status")
            if on_line and status and "progress" not in chunk:
                on_line(f"{chunk.get('id', '')} {status}".strip())
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        raise Unavailable(f"push of {ref} failed: {e}") from e
    if not digest:
        raise Unavailable(f"push of {ref} reported no digest")
    return digest
