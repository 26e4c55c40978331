"""`envctl cloud setup` through the real Cloud Build, Artifact Registry and Cloud Scheduler clients, against fakes."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.devtools.cloudbuild_v1")

from google.cloud.devtools import cloudbuild_v1 as cb

from tests.gcpfakes.artifactregistry import FakeArtifactRegistry
from tests.gcpfakes.cloudbuild import CloudBuildFake
from tests.gcpfakes.rest import GoogleError, service_disabled
from tests.gcpfakes.scheduler import CloudSchedulerFake
from tests.helpers import ROOT, envctl

PROJECT, REGION, REPOSITORY = "proj", "europe-west4", "images"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
IMAGE = "europe-west4-docker.pkg.dev/proj/tools/envctl@sha256:" + "e" * 64
LEDGER = "postgresql+psycopg://envctl@/envctl?host=/cloudsql/proj:europe-west4:envctl"
FLAGS = [
    "--project", PROJECT, "--region", REGION, "--repository", REPOSITORY,
    "--connection", "github", "--repo-name", "notebook-envs",
    "--envctl-image", IMAGE, "--ledger-url", LEDGER, "--artifacts-bucket", "gs://proj-artifacts",
]  # fmt: skip


SA = f"envctl-scheduler@{PROJECT}.iam.gserviceaccount.com"
JOB = f"{PARENT}/jobs/envctl-base-refresh"


class Fakes:
    def __init__(
        self,
        cloudbuild: CloudBuildFake,
        registry: FakeArtifactRegistry,
        scheduler: CloudSchedulerFake,
        root: Path,
    ) -> None:
        self.cloudbuild, self.registry, self.scheduler, self.root = cloudbuild, registry, scheduler, root

    def env(self) -> dict[str, str]:
        return {
            "ENVCTL_BACKEND": "gcp",
            "ENVCTL_GCP_ENDPOINTS": (
                f"cloudbuild={self.cloudbuild.endpoint},artifactregistry={self.registry.endpoint},"
                f"scheduler={self.scheduler.endpoint}"
            ),
            "ENVCTL_GCP_TIMEOUT": "5",
            "ENVCTL_GCP_RETRY": "false",
            "ENVCTL_STATE_DIR": str(self.root / "state"),
        }

    def setup(self, *args: str) -> tuple[int, str, str]:
        result = envctl("cloud", "setup", *args, cwd=self.root, env=self.env(), timeout=60)
        return result.returncode, result.stdout, result.stderr


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    shutil.copytree(ROOT / "cloudbuild", tmp_path / "cloudbuild")
    registry = FakeArtifactRegistry(f"{PARENT}/repositories/{REPOSITORY}")
    with CloudBuildFake() as cloudbuild, registry, CloudSchedulerFake() as scheduler:
        yield Fakes(cloudbuild, registry, scheduler, tmp_path)


def test_setup_creates_three_triggers_then_a_second_run_changes_nothing(fakes: Fakes) -> None:
    code, out, err = fakes.setup(*FLAGS, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["triggers"] == {
        "envctl-staging": "created",
        "envctl-production": "created",
        "envctl-base-refresh": "created",
    }
    staging = fakes.cloudbuild.trigger_named("envctl-staging")
    assert staging is not None
    assert staging.filename == ""  # never the pushed commit's config
    assert [s.id for s in staging.build.steps] == ["history", "staging-pipeline"]
    step = staging.build.steps[1]
    assert "ENVCTL_ARTIFACTS_URL=${_ARTIFACTS_BUCKET}" in step.env  # envctl copies each run's artifacts
    assert (step.name, step.entrypoint, list(step.secret_env)) == (
        "${_ENVCTL_IMAGE}", "envctl", ["ENVCTL_LEDGER_PASSWORD"],
    )  # fmt: skip
    assert [s.version_name for s in staging.build.available_secrets.secret_manager] == [
        f"projects/{PROJECT}/secrets/envctl-ledger-staging-password/versions/latest"
    ]
    assert "_ENVCTL_IMAGE" not in staging.build.substitutions  # the trigger's value, not a sample
    assert staging.repository_event_config.push.branch == "^staging$"
    assert staging.repository_event_config.repository == (
        f"{PARENT}/connections/github/repositories/notebook-envs"
    )
    assert dict(staging.substitutions) == {
        "_REGISTRY": f"{REGION}-docker.pkg.dev/{PROJECT}/{REPOSITORY}",
        "_LEDGER_URL": LEDGER,
        "_ENVCTL_IMAGE": IMAGE,
        "_ARTIFACTS_BUCKET": "gs://proj-artifacts",
    }
    production = fakes.cloudbuild.trigger_named("envctl-production")
    assert production is not None and production.filename == ""
    assert [s.version_name for s in production.build.available_secrets.secret_manager] == [
        f"projects/{PROJECT}/secrets/envctl-ledger-production-password/versions/latest"
    ]
    assert production.repository_event_config.push.branch == "^production$"
    refresh = fakes.cloudbuild.trigger_named("envctl-base-refresh")
    assert refresh is not None
    assert refresh.source_to_build.ref == "refs/heads/staging"
    assert [s.id for s in refresh.build.steps] == ["history", "base-refresh"]
    assert list(refresh.build.steps[0].args) == ["fetch", "--unshallow", "--quiet"]
    assert refresh.build.steps[0].allow_failure
    assert list(refresh.build.steps[1].args) == [
        "--repo", ".", "pipeline", "run", "--branch", "staging", "--refresh-base",
    ]  # fmt: skip
    assert refresh.build.steps[1].name == "${_ENVCTL_IMAGE}"
    creates = fakes.cloudbuild.sent("POST", r".*/triggers")
    assert len(creates) == 3
    assert all(r.query.get("parent") == [PARENT] or PARENT in r.path for r in creates)

    writes = len(fakes.cloudbuild.writes())
    code, out, err = fakes.setup(*FLAGS, "--json")
    assert code == 0, err
    assert json.loads(out)["changed"] is False
    assert set(json.loads(out)["triggers"].values()) == {"unchanged"}
    assert "nothing to change" in err
    assert len(fakes.cloudbuild.writes()) == writes


def test_a_changed_setting_updates_only_envctls_fields_and_keeps_the_users(fakes: Fakes) -> None:
    assert fakes.setup(*FLAGS)[0] == 0
    staging = fakes.cloudbuild.trigger_named("envctl-staging")
    assert staging is not None
    staging.service_account = f"projects/{PROJECT}/serviceAccounts/ci@{PROJECT}.iam.gserviceaccount.com"
    staging.substitutions["_TEAM"] = "nlp"
    staging.repository_event_config.repository_type = cb.RepositoryEventConfig.RepositoryType.GITHUB
    other = "europe-west4-docker.pkg.dev/proj/tools/envctl@sha256:" + "f" * 64
    flags = [other if f == IMAGE else f for f in FLAGS]
    code, out, err = fakes.setup(*flags, "--json")
    assert code == 0, err
    assert json.loads(out)["triggers"]["envctl-staging"] == "updated"
    (patch, *_) = fakes.cloudbuild.sent("PATCH")
    assert "substitutions" in patch.param("updateMask").split(",")
    assert "serviceAccount" not in patch.param("updateMask")
    updated = fakes.cloudbuild.trigger_named("envctl-staging")
    assert updated is not None
    assert updated.substitutions["_ENVCTL_IMAGE"] == other
    assert updated.substitutions["_TEAM"] == "nlp"
    assert updated.service_account.endswith("ci@proj.iam.gserviceaccount.com")
    assert updated.id == staging.id


def test_dry_run_prints_every_write_as_stable_json_and_sends_none(fakes: Fakes) -> None:
    code, out, err = fakes.setup(*FLAGS, "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert [r["method"] for r in plan["requests"]] == ["CreateBuildTrigger"] * 3
    assert "filename" not in plan["requests"][0]["request"]["trigger"]
    assert plan["requests"][0]["request"]["trigger"]["build"]["steps"][1]["name"] == "${_ENVCTL_IMAGE}"
    assert out == json.dumps(plan, indent=2, sort_keys=True) + "\n"
    assert fakes.cloudbuild.writes() == []
    assert fakes.cloudbuild.triggers == {}
    assert {r.method for r in fakes.registry.sent()} <= {"GET"}
    assert fakes.setup(*FLAGS, "--dry-run")[1] == out  # stable


def test_a_missing_repository_is_exit_2_with_the_gcloud_fix(fakes: Fakes) -> None:
    flags = ["other-repo" if f == REPOSITORY else f for f in FLAGS]
    code, _, err = fakes.setup(*flags)
    assert code == 2
    assert "gcloud artifacts repositories create other-repo --repository-format=docker" in err
    assert "Traceback" not in err
    assert fakes.cloudbuild.sent() == []


def test_a_tag_reference_for_the_envctl_image_is_refused(fakes: Fakes) -> None:
    flags = ["europe-west4-docker.pkg.dev/proj/tools/envctl:1.0" if f == IMAGE else f for f in FLAGS]
    code, _, err = fakes.setup(*flags)
    assert code == 2
    assert "not pinned by digest" in err
    assert fakes.cloudbuild.sent() == [] and fakes.registry.sent() == []


def test_permission_denied_and_api_disabled_are_one_line_exit_3(fakes: Fakes) -> None:
    fakes.cloudbuild.fail(
        "GET",
        r".*/triggers/.*",
        GoogleError("PERMISSION_DENIED", "caller lacks cloudbuild.builds.get"),
        times=1,
    )
    code, _, err = fakes.setup(*FLAGS)
    assert code == 3, err
    assert "permission denied" in err and "envctl-staging" in err
    assert len(err.strip().splitlines()) == 1
    fakes.cloudbuild.clear_failures()
    fakes.cloudbuild.fail("GET", r".*/triggers/.*", service_disabled("cloudbuild.googleapis.com", PROJECT))
    code, _, err = fakes.setup(*FLAGS)
    assert code == 3
    assert "gcloud services enable cloudbuild.googleapis.com" in err
    assert fakes.cloudbuild.writes() == []


def test_a_connection_in_another_region_is_refused_before_any_request(fakes: Fakes) -> None:
    flags = [
        f"projects/{PROJECT}/locations/us-central1/connections/github" if f == "github" else f for f in FLAGS
    ]
    code, _, err = fakes.setup(*flags)
    assert code == 2
    assert "us-central1" in err and "own region" in err
    assert fakes.cloudbuild.sent() == []


def test_the_service_refusing_a_region_mismatch_is_exit_2(fakes: Fakes) -> None:
    fakes.cloudbuild.fail(
        "POST",
        r".*/triggers",
        GoogleError(
            "INVALID_ARGUMENT", "repository is in region us-central1; a trigger in europe-west4 cannot use it"
        ),
    )
    code, _, err = fakes.setup(*FLAGS)
    assert code == 2, err
    assert "envctl-staging" in err and "us-central1" in err


def test_each_trigger_gets_its_own_ledger_role_and_no_password_reaches_a_trigger(fakes: Fakes) -> None:
    staging_url = "postgresql+psycopg://ci_staging:s3cret@/envctl?host=/cloudsql/proj:europe-west4:envctl"
    production_url = "postgresql+psycopg://ci_production@/envctl?host=/cloudsql/proj:europe-west4:envctl"
    flags = [*FLAGS, "--staging-ledger-url", staging_url, "--production-ledger-url", production_url]
    code, out, err = fakes.setup(*flags, "--dry-run")
    assert code == 0, err
    assert "s3cret" not in out + err
    code, _, err = fakes.setup(*flags)
    assert code == 0, err
    staging = fakes.cloudbuild.trigger_named("envctl-staging")
    production = fakes.cloudbuild.trigger_named("envctl-production")
    refresh = fakes.cloudbuild.trigger_named("envctl-base-refresh")
    assert staging is not None and production is not None and refresh is not None
    assert staging.substitutions["_LEDGER_URL"] == staging_url.replace(":s3cret", "")
    assert production.substitutions["_LEDGER_URL"] == production_url
    assert refresh.substitutions["_LEDGER_URL"] == staging.substitutions["_LEDGER_URL"]
    assert refresh.build.available_secrets.secret_manager[0].version_name == (
        f"projects/{PROJECT}/secrets/envctl-ledger-staging-password/versions/latest"
    )
    assert all("s3cret" not in r.body.decode() for r in fakes.cloudbuild.sent())


def test_setup_reads_its_options_from_settings(fakes: Fakes) -> None:
    (fakes.root / "pyproject.toml").write_text(
        "[tool.envctl]\n"
        f'registry = "{REGION}-docker.pkg.dev/{PROJECT}/{REPOSITORY}"\n'
        'gcp_github = "acme/notebook-envs"\n'
        f'gcp_envctl_image = "{IMAGE}"\n'
        'gcp_artifacts_bucket = "gs://proj-artifacts"\n'
    )
    result = envctl(
        "cloud",
        "setup",
        "--json",
        cwd=fakes.root,
        env={**fakes.env(), "ENVCTL_LEDGER_URL": LEDGER},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["triggers"].values()) == {"created"}
    staging = fakes.cloudbuild.trigger_named("envctl-staging")
    assert staging is not None
    assert (staging.github.owner, staging.github.name) == ("acme", "notebook-envs")
    assert staging.github.push.branch == "^staging$"
    assert not staging.repository_event_config.repository
    refresh = fakes.cloudbuild.trigger_named("envctl-base-refresh")
    assert refresh is not None and refresh.source_to_build.uri == "https://github.com/acme/notebook-envs"


def test_a_push_cannot_change_what_the_triggers_run(fakes: Fakes) -> None:
    """The triggers carry the operator's config inline: the pushed cloudbuild/ is never read."""
    assert fakes.setup(*FLAGS)[0] == 0
    for name in ("envctl-staging", "envctl-production"):
        trigger = fakes.cloudbuild.trigger_named(name)
        assert trigger is not None
        assert trigger.filename == "" and not trigger.git_file_source.path
        assert all(
            s.name in {"${_ENVCTL_IMAGE}", "gcr.io/cloud-builders/git", "gcr.io/cloud-builders/gsutil"}
            for s in trigger.build.steps
        )
    # A changed config takes effect only through `cloud setup` in the operator's checkout.
    staging_yaml = fakes.root / "cloudbuild" / "staging.yaml"
    staging_yaml.write_text(
        staging_yaml.read_text().replace("machineType: E2_HIGHCPU_8", "machineType: E2_HIGHCPU_32")
    )
    code, out, err = fakes.setup(*FLAGS, "--json")
    assert code == 0, err
    assert json.loads(out)["triggers"]["envctl-staging"] == "updated"
    staging = fakes.cloudbuild.trigger_named("envctl-staging")
    assert staging is not None and staging.build.options.machine_type.name == "E2_HIGHCPU_32"


def test_missing_credentials_are_exit_3_naming_the_login(fakes: Fakes, tmp_path: Path) -> None:
    """With no endpoint override, the real clients need Application Default Credentials."""
    env = {k: v for k, v in fakes.env().items() if k != "ENVCTL_GCP_ENDPOINTS"}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "no-such-key.json")
    env["HOME"] = str(tmp_path)  # no gcloud configuration either
    result = envctl("cloud", "setup", *FLAGS, cwd=fakes.root, env=env, timeout=60)
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "gcloud auth application-default login" in line and "Traceback" not in result.stderr
    assert fakes.cloudbuild.writes() == [] and fakes.registry.sent() == []


def test_a_notify_secret_reaches_every_trigger_as_a_secret(fakes: Fakes) -> None:
    env = {**fakes.env(), "ENVCTL_GCP_NOTIFY_SECRET": "envctl-notify-url"}
    result = envctl("cloud", "setup", *FLAGS, cwd=fakes.root, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    version = f"projects/{PROJECT}/secrets/envctl-notify-url/versions/latest"
    for name in ("envctl-staging", "envctl-production", "envctl-base-refresh"):
        trigger = fakes.cloudbuild.trigger_named(name)
        assert trigger is not None
        found = {s.env: s.version_name for s in trigger.build.available_secrets.secret_manager}
        assert found["ENVCTL_NOTIFY_URL"] == version, name
        holders = [list(step.secret_env) for step in trigger.build.steps if step.secret_env]
        assert holders and all(h[-1] == "ENVCTL_NOTIFY_URL" for h in holders), name
    # without it, no trigger names the secret (a missing secret would fail every build)
    code, _, err = fakes.setup(*FLAGS)
    assert code == 0, err
    again = fakes.cloudbuild.trigger_named("envctl-staging")
    assert again is not None
    assert "ENVCTL_NOTIFY_URL" not in {s.env for s in again.build.available_secrets.secret_manager}


# -- the Cloud Scheduler job that runs the base refresh -----------------------------------


def test_setup_schedules_the_base_refresh_trigger_as_the_service_account(fakes: Fakes) -> None:
    flags = [*FLAGS, "--scheduler-service-account", SA]
    flags += ["--refresh-schedule", "30 5 * * 1", "--refresh-timezone", "Europe/Amsterdam"]
    code, out, err = fakes.setup(*flags, "--json")
    assert code == 0, err
    assert json.loads(out)["schedule"] == "created"
    assert f"schedule {JOB}: created" in err
    refresh = fakes.cloudbuild.trigger_named("envctl-base-refresh")
    job = fakes.scheduler.job(JOB)
    assert refresh is not None and job is not None and refresh.id
    assert (job.schedule, job.time_zone) == ("30 5 * * 1", "Europe/Amsterdam")
    target = job.http_target
    assert target.uri == f"https://cloudbuild.googleapis.com/v1/{PARENT}/triggers/{refresh.id}:run"
    assert target.http_method.name == "POST"
    assert target.oauth_token.service_account_email == SA
    assert target.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"
    assert target.headers["Content-Type"] == "application/json"
    assert json.loads(target.body) == {
        "projectId": PROJECT, "triggerId": refresh.id, "source": {"branchName": "staging"},
    }  # fmt: skip
    (create,) = fakes.scheduler.writes()
    assert (create.method, create.path) == ("POST", f"/v1/{PARENT}/jobs")
    assert create.json()["name"] == JOB

    # What the job sends is a RunBuildTrigger the Cloud Build API takes: fire it once.
    path = target.uri.removeprefix("https://cloudbuild.googleapis.com")
    fire = urllib.request.Request(
        fakes.cloudbuild.endpoint + path, data=target.body, method="POST", headers=dict(target.headers)
    )
    with urllib.request.urlopen(fire, timeout=10) as answer:
        assert answer.status == 200
    assert [b.build_trigger_id for b in fakes.cloudbuild.builds.values()] == [refresh.id]

    # A second run sends no write; a changed schedule updates the job and keeps the rest.
    cloudbuild_writes = len(fakes.cloudbuild.writes())
    code, out, err = fakes.setup(*flags, "--json")
    assert code == 0, err
    assert json.loads(out)["schedule"] == "unchanged" and json.loads(out)["changed"] is False
    assert len(fakes.scheduler.writes()) == 1
    assert len(fakes.cloudbuild.writes()) == cloudbuild_writes
    with fakes.scheduler.lock:
        fakes.scheduler.jobs[JOB].retry_config.retry_count = 3  # set by hand: the user's
    changed = ["0 7 * * *" if f == "30 5 * * 1" else f for f in flags]
    code, out, err = fakes.setup(*changed, "--json")
    assert code == 0, err
    assert json.loads(out)["schedule"] == "updated"
    assert json.loads(out)["triggers"]["envctl-base-refresh"] == "unchanged"
    (patch,) = fakes.scheduler.sent("PATCH")
    assert patch.path == f"/v1/{JOB}"
    assert set(patch.param("updateMask").split(",")) == {"description", "schedule", "timeZone", "httpTarget"}
    updated = fakes.scheduler.job(JOB)
    assert updated is not None
    assert (updated.schedule, updated.time_zone) == ("0 7 * * *", "Europe/Amsterdam")
    assert updated.retry_config.retry_count == 3
    assert updated.http_target.uri == target.uri
    assert updated.http_target.headers["User-Agent"] == "Google-Cloud-Scheduler"  # the service's header


def test_without_a_scheduler_service_account_one_line_says_so_and_no_job_is_made(fakes: Fakes) -> None:
    code, out, err = fakes.setup(*FLAGS, "--json")
    assert code == 0, err
    assert json.loads(out)["schedule"] == "not created"
    (line,) = [line for line in err.splitlines() if "schedule" in line]
    assert "not created" in line and "--scheduler-service-account" in line
    assert fakes.scheduler.sent() == [] and fakes.scheduler.jobs == {}
    assert fakes.cloudbuild.trigger_named("envctl-base-refresh") is not None


def test_dry_run_plans_the_job_and_sends_no_write(fakes: Fakes) -> None:
    flags = [*FLAGS, "--scheduler-service-account", SA]
    code, out, err = fakes.setup(*flags, "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert [r["method"] for r in plan["requests"]] == ["CreateBuildTrigger"] * 3 + ["CreateJob"]
    job = plan["requests"][-1]["request"]["job"]
    assert job["name"] == JOB and job["schedule"] == "0 6 * * *" and job["time_zone"] == "UTC"
    assert "would be created" in err
    assert fakes.scheduler.writes() == [] and fakes.scheduler.jobs == {}
    assert fakes.cloudbuild.writes() == []

    assert fakes.setup(*flags)[0] == 0
    writes = len(fakes.scheduler.writes())
    code, out, err = fakes.setup(*flags, "--refresh-schedule", "15 3 * * *", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert [r["method"] for r in plan["requests"]] == ["UpdateJob"]
    refresh = fakes.cloudbuild.trigger_named("envctl-base-refresh")
    assert refresh is not None
    assert plan["requests"][0]["request"]["job"]["http_target"]["uri"].endswith(f"/triggers/{refresh.id}:run")
    assert len(fakes.scheduler.writes()) == writes
    job_now = fakes.scheduler.job(JOB)
    assert job_now is not None and job_now.schedule == "0 6 * * *"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--refresh-schedule", "every day"], "--refresh-schedule"),
        (["--scheduler-service-account", "someone@example.com"], "--scheduler-service-account"),
    ],
)
def test_a_bad_schedule_or_service_account_is_exit_2_before_any_request(
    fakes: Fakes, extra: list[str], named: str
) -> None:
    code, _, err = fakes.setup(*FLAGS, "--scheduler-service-account", SA, *extra)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("envctl: error:") and named in line
    assert fakes.scheduler.sent() == [] and fakes.cloudbuild.sent() == [] and fakes.registry.sent() == []


def test_a_disabled_scheduler_api_is_exit_3_naming_the_command(fakes: Fakes) -> None:
    fakes.scheduler.fail("GET", r".*/jobs/.*", service_disabled("cloudscheduler.googleapis.com", PROJECT))
    code, _, err = fakes.setup(*FLAGS, "--scheduler-service-account", SA)
    assert code == 3, err
    assert "gcloud services enable cloudscheduler.googleapis.com" in err and "Traceback" not in err
    assert fakes.scheduler.writes() == []


def test_the_schedule_reads_its_options_from_settings(fakes: Fakes) -> None:
    env = {
        **fakes.env(),
        "ENVCTL_GCP_SCHEDULER_SERVICE_ACCOUNT": SA,
        "ENVCTL_GCP_REFRESH_SCHEDULE": "45 2 * * *",
        "ENVCTL_GCP_REFRESH_TIMEZONE": "America/New_York",
    }
    result = envctl("cloud", "setup", *FLAGS, "--json", cwd=fakes.root, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schedule"] == "created"
    job = fakes.scheduler.job(JOB)
    assert job is not None
    assert (job.schedule, job.time_zone) == ("45 2 * * *", "America/New_York")
    assert job.http_target.oauth_token.service_account_email == SA
