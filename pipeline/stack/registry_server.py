"""The local OCI distribution registry: Debian's docker-registry on a unix socket, behind its front.

The registry itself listens only on `registry.sock` in the stack folder; the network
reaches it through the front on `registry_listen` (`registry_front`), which lets anyone
read and only the stack's credentials write. Deletes are off unless a command turns them
on for its own run (`deletes=True`); nothing does today.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from typing import Any

import yaml

from pipeline import output
from pipeline.errors import Unavailable
from pipeline.proc import which
from pipeline.publish import login
from pipeline.publish.login import write_private
from pipeline.publish.oci import docker_config_path
from pipeline.settings import Settings
from pipeline.stack import apt, daemons, registry_front

NAME = "registry"
SOCKET_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def socket_path(settings: Settings) -> Path:
    return settings.stack_dir / "registry.sock"


def _config(settings: Settings, *, deletes: bool = False) -> Path:
    storage = settings.stack_dir / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": deletes},
        },
        "http": {"net": "unix", "addr": str(socket_path(settings))},
    }
    path = settings.stack_dir / "registry.yml"
    write_private(path, yaml.safe_dump(config, sort_keys=False))
    return path


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
