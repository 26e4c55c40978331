"""`envctl cloud setup`: the Google Cloud side of the pipelines, made idempotently.

Checks that the Artifact Registry Docker repository exists, then creates or updates
three Cloud Build triggers: staging (`^staging$`), production (`^production$`) and the
base refresh (a manual trigger; its command is `envctl pipeline run --branch staging
--refresh-base`, `pipeline.pipelines.refresh`), and the Cloud Scheduler job
`envctl-base-refresh` that runs the base refresh on a schedule (POST to the trigger's
`:run` with an OAuth token of `--scheduler-service-account`; without one, no job).
Only the fields envctl owns are compared and written (an update names them in its
update mask), so a second run sends no write, and fields a user set by hand (a service
account, other substitutions, a job's retry policy) are kept. A dry run reads and
prints, as JSON, every write it would send.

The staging and production triggers carry their build inline, read at setup time from
cloudbuild/staging.yaml and production.yaml of the checkout `cloud setup` runs in (the
operator's, at a release): a trigger that named a file would run whatever config the
pushed commit holds, so one push to staging could add a step that reads the ledger
password. What a push changes in cloudbuild/ takes effect only through `cloud setup`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline import output
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from pipeline.gcp import Google, Location

DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9.:_/-]*@sha256:[0-9a-f]{64}$")
GITHUB = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
CONNECTION = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/connections/(?P<name>[^/]+)$"
)
BRANCHES = {"staging": "^staging$", "production": "^production$"}
REFRESH_COMMAND = ["--repo", ".", "pipeline", "run", "--branch", "staging", "--refresh-base"]
SUBSTITUTIONS = ("_REGISTRY", "_LEDGER_URL", "_ENVCTL_IMAGE", "_ARTIFACTS_BUCKET")
SOURCES = ("repository_event_config", "github", "source_to_build", "build", "git_file_source")
# The top-level trigger fields envctl writes; everything else on a trigger is the user's.
OWNED = (
    "description",
    "tags",
    "repository_event_config",
    "github",
    "source_to_build",
    "git_file_source",
    "build",
    "substitutions",
)


NOTIFY_ENV = "ENVCTL_NOTIFY_URL"
REFRESH = "envctl-base-refresh"  # the trigger's name, and the Cloud Scheduler job's
# The Cloud Scheduler job fields envctl writes (its update mask); state, times, retries are the service's.
JOB_OWNED = ("description", "schedule", "time_zone", "http_target")
CRON = re.compile(r"^\S+( \S+){4}$")
SERVICE_ACCOUNT = re.compile(r"^[a-z0-9-]+@[a-z0-9.-]+\.gserviceaccount\.com$")


@dataclass(frozen=True, kw_only=True)
class SetupConfig:
    """What `cloud setup` makes: where, from which repository, with which substitutions."""

    where: Location
    connection: str = ""  # a 2nd-gen connection's name or full resource name
    repo_name: str = ""
    github: str = ""  # OWNER/NAME, 1st-gen GitHub app
    envctl_image: str
    ledger_urls: dict[str, str]  # by branch: each trigger's own ledger role (README: PostgreSQL roles)
    artifacts_bucket: str
    configs: dict[str, str]  # by branch: the text of cloudbuild/<branch>.yaml from the operator's checkout
    ledger_secret: str = "envctl-ledger-staging-password"  # the base refresh's, a staging run
    notify_secret: str = ""  # a secret holding the webhook URL (ENVCTL_NOTIFY_URL); none: no events
    refresh_schedule: str = "0 6 * * *"  # cron, the Cloud Scheduler job's
    refresh_timezone: str = "UTC"
    scheduler_service_account: str = ""  # the job calls the trigger as it; none: no job

    @property
    def job_name(self) -> str:
        return f"{self.where.parent}/jobs/{REFRESH}"

    def notify_version(self) -> str:
        return f"projects/{self.where.project}/secrets/{self.notify_secret}/versions/latest"

    def secret_of(self, branch: str) -> str:
        """The Secret Manager version holding `branch`'s ledger password (a role of its own)."""
        name = self.ledger_secret if branch == "staging" else self.ledger_secret.replace("staging", branch)
        return f"projects/{self.where.project}/secrets/{name}/versions/latest"

    @property
    def registry(self) -> str:
        return f"{self.where.registry_host}/{self.where.project}/{self.where.repository}"

    @property
    def connection_repository(self) -> str:
        found = CONNECTION.match(self.connection)
        base = self.connection if found else f"{self.where.parent}/connections/{self.connection}"
        return f"{base}/repositories/{self.repo_name}"

    def check(self) -> None:
        """Refuse bad input before any request (exit 2, naming the flag)."""
        if bool(self.github) == bool(self.connection or self.repo_name):
            raise UsageError(
                "name the source repository one way: --connection CONN --repo-name NAME (2nd gen) "
                "or --github OWNER/NAME (GitHub app)"
            )
        if self.github and not GITHUB.match(self.github):
            raise UsageError(f"--github {self.github!r}: expected OWNER/NAME")
        if not self.github and not (self.connection and self.repo_name):
            raise UsageError("a 2nd-gen connection needs both --connection and --repo-name")
        found = CONNECTION.match(self.connection)
        if found and (found["project"], found["region"]) != (self.where.project, self.where.region):
            raise UsageError(
                f"connection {self.connection} is in {found['project']}/{found['region']} but the "
                f"triggers go to {self.where.project}/{self.where.region}: a trigger uses a connection "
                f"of its own region; pass --region {found['region']} or a connection in {self.where.region}"
            )
        if not DIGEST_REF.match(self.envctl_image):
            raise UsageError(
                f"--envctl-image {self.envctl_image!r} is not pinned by digest: the pipelines run "
                "IMAGE@sha256:<64 hex> (the digest cloudbuild/release.yaml printed), never a tag"
            )
        for branch in BRANCHES:
            url = self.ledger_urls.get(branch, "")
            if not url or url.startswith("sqlite"):
                raise UsageError(
                    f"--{branch}-ledger-url (or --ledger-url): the pipelines need a ledger they all reach "
                    "(PostgreSQL, e.g. Cloud SQL), not a SQLite file"
                )
        if not CRON.match(self.refresh_schedule):
            raise UsageError(
                f"--refresh-schedule {self.refresh_schedule!r}: expected a cron schedule of 5 fields, "
                "e.g. '0 6 * * *'"
            )
        if not self.refresh_timezone.strip() or " " in self.refresh_timezone:
            raise UsageError(f"--refresh-timezone {self.refresh_timezone!r}: expected a tz name, e.g. UTC")
        if self.scheduler_service_account and not SERVICE_ACCOUNT.match(self.scheduler_service_account):
            raise UsageError(
                f"--scheduler-service-account {self.scheduler_service_account!r}: expected a service "
                "account's email, NAME@PROJECT.iam.gserviceaccount.com"
            )
        if not self.artifacts_bucket.startswith("gs://"):
            raise UsageError(f"--artifacts-bucket {self.artifacts_bucket!r}: expected gs://BUCKET")

    def substitutions(self, branch: str) -> dict[str, str]:
        return {
            "_REGISTRY": self.registry,
            "_LEDGER_URL": _without_password(self.ledger_urls[branch]),
            "_ENVCTL_IMAGE": self.envctl_image,
            "_ARTIFACTS_BUCKET": self.artifacts_bucket,
        }


def _without_password(url: str) -> str:
    """The ledger URL as a trigger may hold it: a password goes through Secret Manager only."""
    from pipeline.settings import database_url, without_password

    return without_password(database_url(url, "--ledger-url"))[0]


def desired_triggers(config: SetupConfig) -> list[Any]:
    """The three triggers as envctl wants them (owned fields only)."""
    from google.cloud.devtools import cloudbuild_v1 as cb

    def source(branch_regex: str) -> dict[str, Any]:
        push = cb.PushFilter(branch=branch_regex)
        if config.github:
            owner, name = config.github.split("/")
            return {"github": cb.GitHubEventsConfig(owner=owner, name=name, push=push)}
        return {
            "repository_event_config": cb.RepositoryEventConfig(
                repository=config.connection_repository, push=push
            )
        }

    triggers = [
        cb.BuildTrigger(
            name=f"envctl-{branch}",
            description=f"envctl: the {branch} pipeline on a push to {branch} (made by `envctl cloud setup`)",
            tags=["envctl"],
            build=pipeline_build(config, branch),
            substitutions=config.substitutions(branch),
            **source(regex),
        )
        for branch, regex in BRANCHES.items()
    ]
    if config.github:
        repo = cb.GitRepoSource(
            uri=f"https://github.com/{config.github}",
            ref="refs/heads/staging",
            repo_type=cb.GitFileSource.RepoType.GITHUB,
        )
    else:
        repo = cb.GitRepoSource(
            repository=config.connection_repository,
            ref="refs/heads/staging",
            repo_type=cb.GitFileSource.RepoType.GITHUB,
        )
    triggers.append(
        cb.BuildTrigger(
            name=REFRESH,
            description=(
                "envctl: rebuild on the newest base images (run by the Cloud Scheduler job "
                "envctl-base-refresh; made by `envctl cloud setup`)"
            ),
            tags=["envctl"],
            source_to_build=repo,
            build=_refresh_build(config),
            substitutions=config.substitutions("staging"),
        )
    )
    return triggers


def pipeline_build(config: SetupConfig, branch: str) -> Any:
    """`branch`'s build, inline: cloudbuild/<branch>.yaml as the operator's checkout has it.

    The config's sample substitutions give way to the trigger's, and its secrets name the
    branch's own ledger password in this project.
    """
    import yaml
    from google.cloud.devtools import cloudbuild_v1 as cb

    try:
        data = yaml.safe_load(config.configs[branch])
        data.pop("substitutions", None)
        for secret in (data.get("availableSecrets") or {}).get("secretManager") or []:
            if secret.get("env") == "ENVCTL_LEDGER_PASSWORD":
                secret["versionName"] = config.secret_of(branch)
        if config.notify_secret:  # the webhook URL may hold a token: a secret, like the password
            for step in data.get("steps") or []:
                if "ENVCTL_LEDGER_PASSWORD" in (step.get("secretEnv") or []):
                    step["secretEnv"] = [*step["secretEnv"], NOTIFY_ENV]
            secrets = data.setdefault("availableSecrets", {}).setdefault("secretManager", [])
            secrets.append({"versionName": config.notify_version(), "env": NOTIFY_ENV})
        return cb.Build.from_json(json.dumps(data), ignore_unknown_fields=False)
    except (KeyError, AttributeError, ValueError, yaml.YAMLError) as e:
        raise UsageError(f"cloudbuild/{branch}.yaml is not a Cloud Build config envctl can use: {e}") from e


def _refresh_build(config: SetupConfig) -> Any:
    """The base refresh's build: the pinned envctl image runs the refresh on staging."""
    from google.cloud.devtools import cloudbuild_v1 as cb

    secret = f"projects/{config.where.project}/secrets/{config.ledger_secret}/versions/latest"
    return cb.Build(
        steps=[
            # The refresh plans from staging's commits and compares them: it needs the history.
            # A full clone has nothing to unshallow, hence allow_failure. No secret here.
            cb.BuildStep(
                id="history",
                name="gcr.io/cloud-builders/git",
                args=["fetch", "--unshallow", "--quiet"],
                allow_failure=True,
            ),
            cb.BuildStep(
                id="base-refresh",
                name="${_ENVCTL_IMAGE}",
                entrypoint="envctl",
                args=REFRESH_COMMAND,
                env=[
                    "ENVCTL_BACKEND=gcp",
                    "ENVCTL_REGISTRY=${_REGISTRY}",
                    "ENVCTL_LEDGER_URL=${_LEDGER_URL}",
                    "ENVCTL_ARTIFACTS_DIR=/workspace/artifacts",
                    "ENVCTL_ARTIFACTS_URL=${_ARTIFACTS_BUCKET}",
                    "ENVCTL_ACTOR=cloud-build",
                    "ENVCTL_CI_RUN_ID=$BUILD_ID",
                    "DOCKER_HOST=unix:///var/run/docker.sock",
                ],
                secret_env=["ENVCTL_LEDGER_PASSWORD"] + ([NOTIFY_ENV] if config.notify_secret else []),
            ),
        ],
        available_secrets=cb.Secrets(
            secret_manager=[cb.SecretManagerSecret(version_name=secret, env="ENVCTL_LEDGER_PASSWORD")]
            + (
                [cb.SecretManagerSecret(version_name=config.notify_version(), env=NOTIFY_ENV)]
                if config.notify_secret
                else []
            )
        ),
        options=cb.BuildOptions(logging=cb.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY),
        timeout="7200s",
    )


def owned(trigger: Any) -> dict[str, Any]:
    """The fields of `trigger` envctl owns, as JSON; envctl's substitutions only."""
    from google.cloud.devtools import cloudbuild_v1 as cb

    data = json.loads(
        cb.BuildTrigger.to_json(trigger, use_integers_for_enums=False, preserving_proto_field_name=True)
    )
    kept = {key: data[key] for key in OWNED if key in data and data[key] not in ({}, [], "")}
    event = kept.get("repository_event_config")
    if event is not None:
        event.pop("repository_type", None)  # output only: the server fills it
    subs = {k: v for k, v in (kept.get("substitutions") or {}).items() if k in SUBSTITUTIONS}
    if subs:
        kept["substitutions"] = subs
    else:
        kept.pop("substitutions", None)
    return kept


def as_json(message: Any) -> Any:
    return json.loads(
        type(message).to_json(message, use_integers_for_enums=False, preserving_proto_field_name=True)
    )


@dataclass
class Change:
    """One write `cloud setup` sends (or would send, in a dry run)."""

    method: str
    resource: str
    request: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "resource": self.resource, "request": self.request}


@dataclass
class SetupResult:
    repository: str
    triggers: dict[str, str] = field(default_factory=dict)  # name -> created, updated, unchanged
    schedule: str = "not created"  # the Cloud Scheduler job: created, updated, unchanged, not created
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "repository": self.repository,
            "triggers": self.triggers,
            "schedule": self.schedule,
            "requests": [c.to_json() for c in self.changes],
            "changed": self.changed,
        }


def setup(config: SetupConfig, google: Google, *, dry_run: bool = False) -> SetupResult:
    """Check the repository, then create or update the triggers; a dry run sends no write."""
    from google.api_core import exceptions as gapi
    from google.cloud.devtools import cloudbuild_v1 as cb

    from pipeline.gcp import translated

    config.check()
    where = config.where
    result = SetupResult(repository=where.repository_name, dry_run=dry_run)
    with translated(
        f"the Artifact Registry repository {where.repository_name}",
        api="artifactregistry",
        missing=where.create_repository_fix(),
    ):
        repository = google.artifact_registry().get_repository(name=where.repository_name, **google.call())
    if repository.format_.name != "DOCKER":
        raise UsageError(
            f"the Artifact Registry repository {where.repository_name} holds {repository.format_.name} "
            "packages, not Docker images; name a Docker repository"
        )
    client = google.cloud_build()
    refresh_id = ""
    for wanted in desired_triggers(config):
        name = f"{where.parent}/triggers/{wanted.name}"
        what = f"the Cloud Build trigger {name}"
        with translated(what, api="cloudbuild"):
            try:
                existing = client.get_build_trigger(
                    name=name, project_id=where.project, trigger_id=wanted.name, **google.call()
                )
            except gapi.NotFound:
                existing = None
        if existing is None:
            request = cb.CreateBuildTriggerRequest(
                parent=where.parent, project_id=where.project, trigger=wanted
            )
            result.changes.append(Change("CreateBuildTrigger", name, as_json(request)))
            result.triggers[wanted.name] = "created"
            if not dry_run:
                made = _send(what, client.create_build_trigger, request, google)
                refresh_id = made.id if wanted.name == REFRESH else refresh_id
            continue
        refresh_id = existing.id if wanted.name == REFRESH else refresh_id
        if owned(existing) == owned(wanted):
            result.triggers[wanted.name] = "unchanged"
            continue
        merged = _merge(existing, wanted)
        request = cb.UpdateBuildTriggerRequest(
            project_id=where.project,
            trigger_id=existing.id,
            trigger=merged,
            update_mask={"paths": list(OWNED)},
        )
        result.changes.append(Change("UpdateBuildTrigger", name, as_json(request)))
        result.triggers[wanted.name] = "updated"
        if not dry_run:
            _send(what, client.update_build_trigger, request, google)
    if config.scheduler_service_account:
        _schedule(config, google, result, refresh_id or f"<the id of {REFRESH}, once created>")
    return result


def _send(
    what: str, method: Callable[..., Any], request: Any, google: Google, *, api: str = "cloudbuild"
) -> Any:
    from pipeline.gcp import translated

    with translated(what, api=api):
        answer = method(request=request, **google.call())
    output.info(f"{what}: written")
    return answer


def run_uri(config: SetupConfig, trigger_id: str) -> str:
    """The Cloud Build REST URL that runs the trigger `trigger_id` (regional: the location in the path)."""
    return f"https://cloudbuild.googleapis.com/v1/{config.where.parent}/triggers/{trigger_id}:run"


def desired_job(config: SetupConfig, trigger_id: str) -> Any:
    """The Cloud Scheduler job that runs the base-refresh trigger on `refresh_schedule` (owned fields)."""
    from google.cloud import scheduler_v1 as cs

    # RunBuildTriggerRequest on the regional path: the body is the whole request.
    body = {"projectId": config.where.project, "triggerId": trigger_id, "source": {"branchName": "staging"}}
    return cs.Job(
        name=config.job_name,
        description=f"envctl: runs the Cloud Build trigger {REFRESH} (made by `envctl cloud setup`)",
        schedule=config.refresh_schedule,
        time_zone=config.refresh_timezone,
        http_target=cs.HttpTarget(
            uri=run_uri(config, trigger_id),
            http_method=cs.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=json.dumps(body, sort_keys=True).encode(),
            oauth_token=cs.OAuthToken(
                service_account_email=config.scheduler_service_account,
                scope="https://www.googleapis.com/auth/cloud-platform",
            ),
        ),
    )


def job_owned(job: Any) -> dict[str, Any]:
    """The fields of `job` envctl owns, as JSON; of its headers, envctl's only (the service adds some)."""
    data = as_json(job)
    kept = {key: data[key] for key in JOB_OWNED if key in data and data[key] not in ({}, [], "")}
    target = kept.get("http_target")
    if target is not None:
        target["headers"] = {k: v for k, v in (target.get("headers") or {}).items() if k == "Content-Type"}
    return kept


def _schedule(config: SetupConfig, google: Google, result: SetupResult, trigger_id: str) -> None:
    """Create or update the Cloud Scheduler job; a dry run reads and records, and sends nothing."""
    from google.api_core import exceptions as gapi
    from google.cloud import scheduler_v1 as cs

    from pipeline.gcp import translated

    client = google.scheduler()
    name = config.job_name
    what = f"the Cloud Scheduler job {name}"
    wanted = desired_job(config, trigger_id)
    with translated(what, api="scheduler"):
        try:
            existing = client.get_job(name=name, **google.call())
        except gapi.NotFound:
            existing = None
    if existing is None:
        request = cs.CreateJobRequest(parent=config.where.parent, job=wanted)
        result.changes.append(Change("CreateJob", name, as_json(request)))
        result.schedule = "created"
        if not result.dry_run:
            _send(what, client.create_job, request, google, api="scheduler")
        return
    if job_owned(existing) == job_owned(wanted):
        result.schedule = "unchanged"
        return
    merged = cs.Job.deserialize(cs.Job.serialize(existing))
    headers = {**dict(existing.http_target.headers), **dict(wanted.http_target.headers)}
    for key in JOB_OWNED:
        setattr(merged, key, getattr(wanted, key))
    merged.http_target.headers = headers  # the service's own headers stay
    request = cs.UpdateJobRequest(job=merged, update_mask={"paths": list(JOB_OWNED)})
    result.changes.append(Change("UpdateJob", name, as_json(request)))
    result.schedule = "updated"
    if not result.dry_run:
        _send(what, client.update_job, request, google, api="scheduler")


def _merge(existing: Any, wanted: Any) -> Any:
    """`existing` with envctl's fields from `wanted`: the user's fields and substitutions stay."""
    from google.cloud.devtools import cloudbuild_v1 as cb

    merged = cb.BuildTrigger.deserialize(cb.BuildTrigger.serialize(existing))
    raw = cb.BuildTrigger.pb(merged)
    for key in SOURCES:
        raw.ClearField(key)  # the trigger's source is envctl's: the wanted one replaces it
    for key in OWNED:
        if key == "substitutions":
            continue
        value = getattr(wanted, key)
        if value:
            setattr(merged, key, value)
        elif key not in SOURCES:
            raw.ClearField(key)
    merged.substitutions = {**dict(existing.substitutions), **dict(wanted.substitutions)}
    return merged
