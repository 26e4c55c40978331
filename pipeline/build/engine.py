"""The Docker Engine: connect, build from a context, push.

The docker SDK connects, pushes and runs the legacy builder (`build`, for images that
need no index settings). Its builder has no BuildKit, so builds that reach the package
index (`buildkit_build`) run BuildKit through Debian's Docker CLI, whose `--secret`
mounts hand the pip settings and CA bundle to `RUN` steps without writing them into
any layer. Log lines of both arrive as they come; pushes read their stream and raise
on errors it reports (docker/docker-py #3161).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker.errors
import requests
import urllib3.exceptions
from docker.client import DockerClient, from_env

from pipeline import proc, progress
from pipeline.backends import ContextFile
from pipeline.errors import BuildFailed, Unavailable, UsageError
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


# Debian's CLI (docker.io): the newer client first on PATH refuses BuildKit builds without buildx.
DOCKER_CLI = "/usr/bin/docker"
BUILD_TIMEOUT = 3600.0
_BK_STEP = re.compile(r"^#(\d+) (\[.+)$")
_BK_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
_BK_NOISE = re.compile(r"^#\d+ sha256:[0-9a-f]{64}$")
_ENGINE_GONE = ("Cannot connect to the Docker daemon", "error during connect")


def buildkit_build(
    *,
    docker_host: str,
    files: Mapping[str, ContextFile],
    dockerfile: str,
    tag: str,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
    secrets: Mapping[str, bytes],
    network: str = "host",
    no_cache: bool = False,
    on_line: LineSink | None = None,
    timeout: float = BUILD_TIMEOUT,
) -> str:
    """Build with BuildKit and return the image ID; `BuildFailed` names the failing step.

    `files` is the context (`dockerfile` a path inside it); each of `secrets` is offered
    as `RUN --mount=type=secret,id=<name>`. Context and secrets are written to a 0700
    folder that is removed on every exit path; nothing of a secret reaches a layer, the
    image config or its history.
    """
    work = Path(tempfile.mkdtemp(prefix="envctl-build-"))
    try:
        os.chmod(work, 0o700)
        context = work / "context"
        _write_context(context, files)
        secret_args: list[str] = []
        for name in sorted(secrets):
            path = work / "secrets" / name
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.touch(mode=0o600)
            path.write_bytes(secrets[name])
            secret_args += ["--secret", f"id={name},src={path}"]
        iidfile = work / "iid"
        args: list[str] = [DOCKER_CLI, "build", "--network", network, "--progress", "plain"]
        args += ["--iidfile", str(iidfile), "-f", str(context / dockerfile), "-t", tag, *secret_args]
        for key in sorted(buildargs):
            args += ["--build-arg", f"{key}={buildargs[key]}"]
        for key in sorted(labels):
            args += ["--label", f"{key}={labels[key]}"]
        if no_cache:
            args.append("--no-cache")
        args.append(str(context))
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        if docker_host:
            env["DOCKER_HOST"] = docker_host
        log_ = _BuildLog(on_line)
        code = proc.stream(args, timeout=timeout, on_line=log_.line, env=env, cwd=work)
        if code != 0:
            failure = log_.failure()
            if isinstance(failure, BuildFailed) and not answers(docker_host):
                last = log_.tail[-1] if log_.tail else "no output"
                raise Unavailable(f"the Docker Engine went away during the build: {last}")
            raise failure
        image_id = iidfile.read_text().strip() if iidfile.is_file() else ""
        if not image_id:
            raise Unavailable(f"the Docker Engine built {tag} but reported no image ID")
        return image_id
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_context(root: Path, files: Mapping[str, ContextFile]) -> None:
    """The context as a folder: files with their modes, every time 0 (layers stay reproducible)."""
    root.mkdir()
    for name in sorted(files):
        target = (root / name).resolve()
        if not target.is_relative_to(root.resolve()) or target == root.resolve():
            raise UsageError(f"build context path {name!r} leaves the context")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[name].data)
        target.chmod(files[name].mode)
        os.utime(target, (0, 0))


class _BuildLog:
    """Reads BuildKit's plain progress: steps by number, the failing one, the last lines."""

    def __init__(self, on_line: LineSink | None) -> None:
        self.on_line = on_line
        self.tail: deque[str] = deque(maxlen=30)
        self.steps: dict[str, str] = {}
        self.failed: tuple[str, str] | None = None

    def line(self, text: str) -> None:
        if not text.strip() or _BK_NOISE.match(text):
            return
        self.tail.append(text)
        if match := _BK_ERROR.match(text):
            self.failed = self.failed or (match.group(1), match.group(2))
        elif match := _BK_STEP.match(text):
            self.steps.setdefault(match.group(1), match.group(2))
        if self.on_line:
            self.on_line(text)

    def failure(self) -> Exception:
        last = self.tail[-1] if self.tail else "no output"
        if any(sign in last for sign in _ENGINE_GONE):
            return Unavailable(f"the Docker Engine failed during the build: {last}")
        if self.failed is not None:
            number, error = self.failed
            where = f"step {self.steps.get(number, '#' + number)}"
        else:
            where, error = "the Dockerfile", last
        return BuildFailed(
            f"build failed at {where}: {error}\n--- last {len(self.tail)} log lines ---\n"
            + "\n".join(self.tail)
        )


def push(client: Any, ref: str, *, auth: Credentials | None = None, on_line: LineSink | None = None) -> str:
    """Push `repo:tag` and return the manifest digest the registry reported.

    On a terminal a status line shows the layers and bytes sent and the rate; a summary
    line follows when it succeeded (`progress.Transfer`).

    `auth` goes to the engine with this push only (never to a build); without it the
    docker SDK uses the Docker client's login for the registry, if any.
    """
    repository, _, tag = ref.rpartition(":")
    auth_config = (
        {"username": auth.username, "password": auth.password} if auth is not None and auth.password else None
    )
    digest = ""
    transfer = progress.Transfer(ref)
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config):
            transfer.update(chunk)
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("error") or chunk["errorDetail"].get("message", "")
                digest = ""
                raise Unavailable(f"push of {ref} failed: {detail}")
            aux = chunk.get("aux") or {}
            if "Digest" in aux:
                digest = aux["Digest"]
            status = chunk.get("status")
            if on_line and status and "progress" not in chunk:
                on_line(f"{chunk.get('id', '')} {status}".strip())
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        raise Unavailable(f"push of {ref} failed: {e}") from e
    finally:
        transfer.close(summary=bool(digest))  # no "pushed N layer(s)" before an error
    if not digest:
        raise Unavailable(f"push of {ref} reported no digest")
    return digest
