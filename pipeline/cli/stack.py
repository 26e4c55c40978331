"""`envctl stack up | down | status`: the local Docker Engine, registry and base image."""

from __future__ import annotations

import time
from typing import Any

import click

from pipeline import output
from pipeline.cli.common import Group, emit_json, settings_of, table
from pipeline.errors import Unavailable
from pipeline.stack import base_image, engine, registry_server


@click.group("stack", cls=Group)
def group() -> None:
    """The local parts: Docker Engine, OCI registry on 127.0.0.1, base image."""


def _print(parts: list[dict[str, Any]]) -> None:
    rows = []
    for part in parts:
        extra = part.get("digest") or part.get("log") or ""
        rows.append([part["part"], "ready" if part["ready"] else "not ready", part.get("address", ""), extra])
    table(["PART", "STATE", "WHERE", "DETAIL"], rows)


@group.command("up")
@click.option("--skip-base", is_flag=True, help="Start engine and registry only.")
@click.option("--rebuild-base", is_flag=True, help="Rebuild the base image even if it is current.")
@click.option("--json", "as_json", is_flag=True, help="Print the parts as JSON.")
@click.pass_context
def up(ctx: click.Context, skip_base: bool, rebuild_base: bool, as_json: bool) -> None:
    """Start what is missing and use what already answers; safe to run again.

    Installs Debian's docker.io, docker-registry and nginx when missing (as root),
    starts dockerd, the registry (on a unix socket) and its front on registry_listen
    (reads for anyone, writes with the credentials it keeps in .envctl/stack/ and logs
    the Docker client in with) with their PIDs and logs under .envctl/stack/, then
    builds and pushes the base image unless the registry already has its inputs.
    """
    settings = settings_of(ctx)
    started = time.monotonic()
    parts = [engine.up(settings), registry_server.up(settings)]
    if not skip_base:
        parts.append(base_image.ensure(settings, force=rebuild_base))
    output.info(f"stack up in {time.monotonic() - started:.1f} s")
    emit_json(parts) if as_json else _print(parts)


@group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the parts as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Say which parts run; exits 3 when any part is not ready."""
    settings = settings_of(ctx)
    parts = [engine.status(settings), registry_server.status(settings), base_image.status(settings)]
    emit_json(parts) if as_json else _print(parts)
    missing = [p["part"] for p in parts if not p["ready"]]
    if missing:
        raise Unavailable(f"not ready: {', '.join(missing)}; run `envctl stack up`")


@group.command("down")
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop what `stack up` started (by recorded PID); images and registry data stay."""
    settings = settings_of(ctx)
    for name, stop in (("registry", registry_server.down), ("dockerd", engine.down)):
        output.info(f"{name}: {'stopped' if stop(settings) else 'not started by envctl; left alone'}")
