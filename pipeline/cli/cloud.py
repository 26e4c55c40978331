"""`envctl cloud setup`: Cloud Build triggers and the checks they need, idempotently."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline import output
from pipeline.cli.common import Group, deprecated_repo, emit_json, settings_of
from pipeline.errors import UsageError


@click.group("cloud", cls=Group, short_help="Set up the Google Cloud side of the pipelines.")
def group() -> None:
    """Google Cloud: Cloud Build triggers and the Artifact Registry repository."""


@group.command("setup", short_help="Create or update the Cloud Build triggers.")
@click.option("--project", help="Google Cloud project (default: from the registry setting).")
@click.option("--region", help="Region of the triggers and the repository (default: from the registry).")
@click.option("--repository", help="Artifact Registry Docker repository (default: from the registry).")
@click.option("--connection", help="Cloud Build 2nd-gen connection (name or full resource name).")
@click.option("--repo-name", help="The connection's repository holding environments/.")
@click.option("--github", help="OWNER/NAME through the Cloud Build GitHub app (instead of a connection).")
@click.option("--envctl-image", help="The pinned envctl image the pipelines run: IMAGE@sha256:...")
@click.option("--ledger-url", help="The ledger both pipelines use (PostgreSQL; no password in it).")
@click.option(
    "--staging-ledger-url", help="The staging trigger's ledger URL (its own role), over --ledger-url."
)
@click.option("--production-ledger-url", help="The production trigger's ledger URL, over --ledger-url.")
@click.option("--artifacts-bucket", help="gs://BUCKET for the test runs' artifacts.")
@click.option(
    "--refresh-schedule",
    help="Cron schedule of the Cloud Scheduler job that runs envctl-base-refresh (default: 0 6 * * *).",
)
@click.option("--refresh-timezone", help="The schedule's time zone, a tz name (default: UTC).")
@click.option(
    "--scheduler-service-account",
    help="Email of the service account the schedule calls the trigger as (without it: no schedule).",
)
@click.option("--dry-run", is_flag=True, help="Print every write as JSON and send none.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@deprecated_repo
@click.pass_context
def setup_command(
    ctx: click.Context,
    project: str | None,
    region: str | None,
    repository: str | None,
    connection: str | None,
    repo_name: str | None,
    github: str | None,
    envctl_image: str | None,
    ledger_url: str | None,
    staging_ledger_url: str | None,
    production_ledger_url: str | None,
    artifacts_bucket: str | None,
    refresh_schedule: str | None,
    refresh_timezone: str | None,
    scheduler_service_account: str | None,
    dry_run: bool,
    as_json: bool,
    repo: Path | None,
) -> None:
    """Check the Artifact Registry repository and create or update the Cloud Build triggers.

    \b
    Triggers: envctl-staging (^staging$), envctl-production (^production$), each with
    cloudbuild/<branch>.yaml of THIS checkout inline (a push can't change what runs),
    and envctl-base-refresh (manual), and the Cloud Scheduler job envctl-base-refresh
    that runs it on --refresh-schedule as --scheduler-service-account (without that
    flag, no job). A second run sends no write and says "nothing to change".
    Every option can come from settings (gcp_project, gcp_connection, ...).

    \b
    Example:
      envctl cloud setup --project my-project --region europe-west4 --repository notebook-images \\
        --connection github --repo-name notebook-envs \\
        --envctl-image europe-west4-docker.pkg.dev/my-project/tools/envctl@sha256:...
    """
    from pipeline.pipelines.cloud_setup import SetupConfig, setup

    flags = {"gcp_project": project, "gcp_region": region}
    if project and region and repository:
        flags["registry"] = f"{region}-docker.pkg.dev/{project}/{repository}"
    settings = settings_of(ctx, repo=repo, **flags)
    from pipeline.gcp import Google, location

    config = SetupConfig(
        where=location(settings),
        connection=connection or settings.gcp_connection,
        repo_name=repo_name or settings.gcp_repo_name,
        github=github or settings.gcp_github,
        envctl_image=envctl_image or settings.gcp_envctl_image,
        ledger_urls={
            "staging": staging_ledger_url or ledger_url or _configured_ledger(settings.ledger_url),
            "production": production_ledger_url or ledger_url or _configured_ledger(settings.ledger_url),
        },
        artifacts_bucket=artifacts_bucket or settings.gcp_artifacts_bucket,
        configs={branch: _config_text(settings.repo, branch) for branch in ("staging", "production")},
        ledger_secret=settings.gcp_ledger_secret,
        notify_secret=settings.gcp_notify_secret,
        refresh_schedule=refresh_schedule or settings.gcp_refresh_schedule,
        refresh_timezone=refresh_timezone or settings.gcp_refresh_timezone,
        scheduler_service_account=scheduler_service_account or settings.gcp_scheduler_service_account,
    )
    result = setup(config, Google(settings), dry_run=dry_run)
    if as_json or dry_run:
        emit_json(result.to_json())
    for name, action in sorted(result.triggers.items()):
        output.info(f"{name}: {'would be ' + action if dry_run and action != 'unchanged' else action}")
    if not config.scheduler_service_account:
        output.info(
            "schedule: not created (no --scheduler-service-account); to run envctl-base-refresh on "
            "--refresh-schedule, run `cloud setup` again with --scheduler-service-account "
            "NAME@PROJECT.iam.gserviceaccount.com (it needs roles/cloudbuild.builds.editor)"
        )
    else:
        action = result.schedule
        shown = "would be " + action if dry_run and action != "unchanged" else action
        output.info(f"schedule {config.job_name}: {shown}")
    if not result.changed:
        output.info("nothing to change")
    elif dry_run:
        output.info(f"dry run: {len(result.changes)} request(s) not sent")


def _config_text(repo: Path, branch: str) -> str:
    """cloudbuild/<branch>.yaml of this checkout: the trigger's build, inline."""
    path = repo / "cloudbuild" / f"{branch}.yaml"
    try:
        return path.read_text()
    except OSError as e:
        raise UsageError(
            f"{path}: cannot read it ({e.strerror}); run `cloud setup` in the envctl repository"
        ) from e


def _configured_ledger(url: str) -> str:
    """The ledger setting unless it is the local default (a SQLite file under .envctl)."""
    return "" if url.startswith("sqlite") else url
