"""The Docker Engine of the local stack: use one that answers, else install and start dockerd."""

from __future__ import annotations

from typing import Any

from pipeline import output
from pipeline.build.engine import answers
from pipeline.errors import Unavailable
from pipeline.proc import which
from pipeline.settings import Settings
from pipeline.stack import apt, daemons

NAME = "dockerd"
SOCKET = "unix:///var/run/docker.sock"


def install() -> None:
    apt.install("docker.io")


def up(settings: Settings) -> dict[str, Any]:
    host = settings.docker_host
    if answers(host):
        record = daemons.read(settings.stack_dir, NAME)
        managed = record is not None and daemons.alive(record)
        return {"part": "engine", "ready": True, "managed": managed, "address": host or SOCKET}
    if host and host != SOCKET:
        raise Unavailable(f"the Docker Engine at {host} does not answer; start it or unset docker_host")
    if which("dockerd") is None:
        install()
    with output.step("starting dockerd"):
        daemons.start(
            settings.stack_dir,
            NAME,
            [
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--experimental",
                f"--host={SOCKET}",
            ],
            ready=lambda: answers(SOCKET),
            deadline=90,
        )
    return {"part": "engine", "ready": True, "managed": True, "address": SOCKET}


def status(settings: Settings) -> dict[str, Any]:
    record = daemons.read(settings.stack_dir, NAME)
    managed = record is not None and daemons.alive(record)
    return {
        "part": "engine",
        "ready": answers(settings.docker_host),
        "managed": managed,
        "address": settings.docker_host or SOCKET,
        "pid": record.pid if record and managed else None,
        "log": record.log if record else None,
    }


def down(settings: Settings) -> bool:
    return daemons.stop(settings.stack_dir, NAME, grace=30)
