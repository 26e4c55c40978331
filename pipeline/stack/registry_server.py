"""The local OCI distribution registry: Debian's docker-registry bound to loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline import output
from pipeline.errors import Unavailable
from pipeline.proc import which
from pipeline.publish.oci import Registry
from pipeline.settings import Settings
from pipeline.stack import apt, daemons

NAME = "registry"


def _config(settings: Settings) -> Path:
    storage = settings.stack_dir / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
        },
        "http": {"addr": settings.registry_listen},
    }
    path = settings.stack_dir / "registry.yml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
    return path


def _client(settings: Settings) -> Registry:
    return Registry(settings.registry, timeout=5)


def up(settings: Settings) -> dict[str, Any]:
    if not settings.registry_listen.startswith(("127.", "localhost", "[::1]")):
        raise Unavailable(f"registry_listen {settings.registry_listen} is not a loopback address")
    if _client(settings).ping():
        record = daemons.read(settings.stack_dir, NAME)
        managed = record is not None and daemons.alive(record)
        return {"part": "registry", "ready": True, "managed": managed, "address": settings.registry}
    if which("docker-registry") is None:
        apt.install("docker-registry")
    with output.step(f"starting the registry on {settings.registry_listen}"):
        daemons.start(
            settings.stack_dir,
            NAME,
            ["docker-registry", "serve", str(_config(settings))],
            ready=_client(settings).ping,
            deadline=30,
        )
    return {"part": "registry", "ready": True, "managed": True, "address": settings.registry}


def status(settings: Settings) -> dict[str, Any]:
    record = daemons.read(settings.stack_dir, NAME)
    managed = record is not None and daemons.alive(record)
    return {
        "part": "registry",
        "ready": _client(settings).ping(),
        "managed": managed,
        "address": settings.registry,
        "storage": str(settings.stack_dir / "registry"),
        "pid": record.pid if record and managed else None,
        "log": record.log if record else None,
    }


def down(settings: Settings) -> bool:
    return daemons.stop(settings.stack_dir, NAME)
