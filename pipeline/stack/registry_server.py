"""The local OCI distribution registry: Debian's docker-registry on a unix socket, behind its front.

The registry itself listens only on `registry.sock` in the stack folder; the network
reaches it through the front on `registry_listen` (`registry_front`), which lets anyone
read and only the stack's credentials write. Deletes are on in the registry, so through
the front only the stack's credentials delete (`envctl prune`); `up` restarts a registry
that runs with another configuration (an older envctl's, deletes off).

Garbage collection (`collect_garbage`) stops the registry, so that no write lands while
`docker-registry garbage-collect` decides which blobs no manifest names, and starts it
again; the bytes freed are measured on the storage folder.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
from pathlib import Path
from typing import Any

import yaml

from pipeline import output
from pipeline.errors import Unavailable
from pipeline.proc import run, which
from pipeline.publish import login
from pipeline.publish.login import write_private
from pipeline.publish.oci import docker_config_path
from pipeline.settings import Settings
from pipeline.stack import apt, daemons, registry_front

log = logging.getLogger(__name__)

NAME = "registry"
SOCKET_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def socket_path(settings: Settings) -> Path:
    return settings.stack_dir / "registry.sock"


def storage_path(settings: Settings) -> Path:
    return settings.stack_dir / "registry"


def config_path(settings: Settings) -> Path:
    return settings.stack_dir / "registry.yml"


def render(settings: Settings, *, deletes: bool = True) -> str:
    storage = storage_path(settings)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": deletes},
        },
        "http": {"net": "unix", "addr": str(socket_path(settings))},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _config(settings: Settings) -> Path:
    storage_path(settings).mkdir(parents=True, exist_ok=True)
    path = config_path(settings)
    write_private(path, render(settings))
    return path


def _stale_config(settings: Settings) -> bool:
    """The running registry was started with another configuration than this envctl writes."""
    try:
        return config_path(settings).read_text() != render(settings)
    except OSError:
        return True


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=3)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(3)
        sock.connect(self._path)
        self.sock = sock


def answers_on_socket(path: Path) -> bool:
    """The registry behind the front answers `/v2/` on its socket."""
    connection = _UnixHTTPConnection(path)
    try:
        connection.request("GET", "/v2/")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _running(settings: Settings) -> daemons.Record | None:
    record = daemons.read(settings.stack_dir, NAME)
    return record if record is not None and daemons.alive(record) else None


def _start_backend(settings: Settings) -> None:
    path = socket_path(settings)
    if len(str(path)) > SOCKET_MAX:
        raise Unavailable(
            f"the registry's socket path {path} is longer than {SOCKET_MAX} bytes; "
            "set ENVCTL_STATE_DIR to a shorter folder"
        )
    if which("docker-registry") is None:
        apt.install("docker-registry")
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # left by a registry that was killed; none runs now
    with output.step(f"starting the registry on {path}"):
        daemons.start(
            settings.stack_dir,
            NAME,
            ["docker-registry", "serve", str(_config(settings))],
            ready=lambda: answers_on_socket(path),
            deadline=30,
        )


def up(settings: Settings) -> dict[str, Any]:
    if not settings.registry_listen.startswith(("127.", "localhost", "[::1]")):
        raise Unavailable(f"registry_listen {settings.registry_listen} is not a loopback address")
    if registry_front.running(settings) is None and registry_front.serves(settings):
        # Something else serves the address: an older envctl's registry or not ours at all.
        if _running(settings) is not None:
            output.warn(
                f"the registry on {settings.registry_listen} was started without its write front, so "
                "builds can write to it; run `envctl stack down && envctl stack up`"
            )
        return status(settings)
    if _running(settings) is not None and _stale_config(settings):
        with output.step(
            "the registry's configuration changed (deletes for the stack's credentials); restarting it"
        ):
            daemons.stop(settings.stack_dir, NAME)
    if _running(settings) is None:
        _start_backend(settings)
    keys = login.ensure(settings.stack_dir, settings.registry)
    if login.docker_login(settings.registry, keys.credentials):
        output.info(f"logged the Docker client in to {settings.registry} ({docker_config_path()})")
    registry_front.up(settings, keys, socket_path(settings))
    return status(settings)


def status(settings: Settings) -> dict[str, Any]:
    record = daemons.read(settings.stack_dir, NAME)
    backend = record is not None and daemons.alive(record)
    front = registry_front.running(settings) is not None
    return {
        "part": "registry",
        "ready": registry_front.serves(settings),
        "managed": backend and front,
        "address": settings.registry,
        "writes": registry_front.writes(settings),
        "storage": str(settings.stack_dir / "registry"),
        "socket": str(socket_path(settings)) if backend and front else None,
        "pid": record.pid if record and backend else None,
        "log": record.log if record else None,
        **registry_front.status(settings),
    }


def down(settings: Settings) -> bool:
    """Stop the front, then the registry; True when either was running."""
    front = registry_front.down(settings)
    backend = daemons.stop(settings.stack_dir, NAME)
    if backend:
        socket_path(settings).unlink(missing_ok=True)
    return front or backend


def is_stack_registry(settings: Settings) -> bool:
    """`settings.registry` names the address the stack's front listens on (any loopback name)."""
    from pipeline.gcp import is_loopback  # no Google library is imported by this

    host, _, port = settings.registry.partition("/")[0].rpartition(":")
    listen_host, _, listen_port = settings.registry_listen.rpartition(":")
    return port == listen_port and is_loopback(host.strip("[]")) and is_loopback(listen_host.strip("[]"))


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


def collect_garbage(settings: Settings, *, dry_run: bool = False) -> int:
    """Delete the blobs no manifest names, with the registry stopped; the bytes freed on disk.

    The front stays up and answers 502 while the registry is down, so no write (and no
    read) reaches the storage during the collection. The registry starts again on every
    exit path.
    """
    if _running(settings) is None or not is_stack_registry(settings):
        raise Unavailable(
            f"registry {settings.registry} is not the one `envctl stack up` runs from {settings.stack_dir}; "
            "garbage collection runs only on the stack's own registry"
        )
    storage = storage_path(settings)
    before = _size(storage)
    config = _config(settings)
    command = ["docker-registry", "garbage-collect", str(config), *(["--dry-run"] if dry_run else [])]
    with output.step("registry garbage collection (registry stopped, no writes)"):
        daemons.stop(settings.stack_dir, NAME)
        try:
            result = run(command, timeout=3600)
            log.info("%s", result.stdout.decode(errors="replace")[-2000:])
        finally:
            try:
                _start_backend(settings)
            except Unavailable as e:
                raise RegistryDown(
                    f"the registry did not start again after garbage collection ({e}); run `envctl stack up`"
                ) from e
    return before - _size(storage)


class RegistryDown(Unavailable):
    """The stack's registry stayed down after garbage collection: exit 3, unlike a skipped collection."""
