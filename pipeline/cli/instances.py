"""`envctl instances create | list | restart | delete`: JupyterLab from an environment ID."""

from __future__ import annotations

import dataclasses

import click

from pipeline import output
from pipeline.backends import InstanceHost, instance_host_for
from pipeline.cli import complete
from pipeline.cli.common import Group, emit_json, settings_of, table
from pipeline.instances import model
from pipeline.instances.model import Instance, Target
from pipeline.ledger.db import Ledger
from pipeline.settings import Settings
from pipeline.source import open_repo, resolve
from pipeline.spec import model as specs

_json = click.option("--json", "as_json", is_flag=True, help="Print the instance(s) as JSON.")


def _host(ctx: click.Context, settings: Settings) -> InstanceHost:
    found = ctx.find_object(dict) or {}
    return instance_host_for(settings, project=found.get("gcp_project"), zone=found.get("gcp_zone"))


def _cloud(settings: Settings, target: Target) -> specs.Cloud:
    """The `cloud` section of the spec as it was at the version's commit."""
    return specs.load(resolve(open_repo(settings.repo), target.sha), target.env.image).cloud


def _stale(instance: Instance) -> str:
    if instance.stale is None:
        return "unknown"
    return "stale: restart to upgrade" if instance.stale else "current"


def _show(instance: Instance, as_json: bool) -> None:
    if as_json:
        emit_json(instance.to_json())
    else:
        click.echo(instance.url or "")


@click.group("instances", cls=Group)
@click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", help="gcp backend: the Google Cloud project.")
@click.option("--zone", envvar="CLOUDSDK_COMPUTE_ZONE", help="gcp backend: the zone, e.g. us-central1-a.")
@click.pass_context
def group(ctx: click.Context, project: str | None, zone: str | None) -> None:
    """Notebook instances started from an environment ID (IMAGE.STAGE).

    \b
    Local backend: a JupyterLab container on 127.0.0.1, run by digest, with the
    user's work in a volume at /home/jupyter that outlives restarts and `delete`
    (`delete --purge` removes it too; creating the same name again reuses it).
    gcp backend: a Vertex AI Workbench instance with the image as its container.
    """
    ctx.obj = {**(ctx.obj or {}), "gcp_project": project, "gcp_zone": zone}


@group.command("create")
@click.argument("name")
@click.option(
    "--env",
    "env_id",
    required=True,
    metavar="ENV_ID",
    shell_complete=complete.env_ids,
    help="e.g. nlp.keras-batch.production",
)
@click.option(
    "--port", type=click.IntRange(1024, 65535), help="local: the port on 127.0.0.1 (default: a free one)."
)
@_json
@click.pass_context
def create(ctx: click.Context, name: str, env_id: str, port: int | None, as_json: bool) -> None:
    """Start NAME from the digest ENV_ID points to now; prints the URL with its token.

    NAME: lowercase letters, digits and '-'. Exits 2 for an unknown or empty
    environment, a name already taken or a port in use.
    """
    model.check_name(name)
    settings = settings_of(ctx)
    target = model.target(Ledger.for_settings(settings), env_id)
    title = f"instance {name}: {target.env} at {target.sha[:12]} ({target.digest})"
    host = _host(ctx, settings)
    port = host.check_free(name, port)
    with output.step(title):
        instance = host.create(name, target, cloud=lambda: _cloud(settings, target), port=port)
    _show(dataclasses.replace(instance, current_digest=target.digest), as_json)


@group.command("list")
@_json
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Every instance: environment, the version it runs (SHA, digest), status, and whether stale."""
    settings = settings_of(ctx)
    ledger = Ledger.for_settings(settings)
    found = [
        dataclasses.replace(
            i,
            current_digest=model.current_digest(ledger, i.environment),
            sha=i.sha or model.sha_of(ledger, i.environment, i.digest),
        )
        for i in _host(ctx, settings).list()
    ]
    if as_json:
        emit_json([i.to_json() for i in found])
        return
    rows = [
        [i.name, i.environment, (i.sha or "-")[:12], i.digest[:19], i.status, _stale(i), i.url or "-"]
        for i in found
    ]
    table(["NAME", "ENVIRONMENT", "SHA", "DIGEST", "STATUS", "STALE", "URL"], rows)


@group.command("restart")
@click.argument("name")
@_json
@click.pass_context
def restart(ctx: click.Context, name: str, as_json: bool) -> None:
    """Restart NAME on the digest its environment points to now (same URL, same work volume)."""
    model.check_name(name)
    settings = settings_of(ctx)
    host = _host(ctx, settings)
    before = host.get(name)
    target = model.target(Ledger.for_settings(settings), before.environment)
    moved = "already current" if before.digest == target.digest else f"{before.digest} -> {target.digest}"
    with output.step(f"instance {name}: restart on {target.env} ({moved})"):
        instance = host.restart(name, target, cloud=lambda: _cloud(settings, target))
    _show(dataclasses.replace(instance, current_digest=target.digest), as_json)


@group.command("delete", short_help="Remove NAME; locally its work volume is kept unless --purge.")
@click.argument("name")
@click.option("--purge", is_flag=True, help="local: remove the work volume too (default: keep it).")
@click.pass_context
def delete(ctx: click.Context, name: str, purge: bool) -> None:
    """Remove NAME. Locally its work volume is kept unless --purge."""
    model.check_name(name)
    settings = settings_of(ctx)
    kept = _host(ctx, settings).delete(name, purge=purge)
    kept_text = f"; its work stays in volume {kept} (`delete --purge` removes it)" if kept else ""
    output.info(f"instance {name}: deleted{kept_text}")
