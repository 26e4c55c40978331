"""cloudbuild/*.yaml: only fields Cloud Build accepts, substitutions that resolve, real commands.

And the trust boundary: a step that holds a secret runs the pinned envctl image (by
digest) and nothing from the pushed commit; cloudbuild/release.yaml builds that image.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from sqlalchemy.engine import make_url

from pipeline.cli.main import cli
from pipeline.settings import Settings
from tests.helpers import ROOT

# The fields of Cloud Build's Build resource and BuildStep (cloudbuild.googleapis.com v1).
BUILD_FIELDS = {
    "steps",
    "timeout",
    "queueTtl",
    "logsBucket",
    "options",
    "substitutions",
    "tags",
    "secrets",
    "availableSecrets",
    "artifacts",
    "images",
    "serviceAccount",
    "source",
    "name",
}
STEP_FIELDS = {
    "name",
    "args",
    "env",
    "dir",
    "id",
    "waitFor",
    "entrypoint",
    "secretEnv",
    "volumes",
    "timeout",
    "script",
    "allowFailure",
    "allowExitCodes",
    "automapSubstitutions",
}
OPTION_FIELDS = {
    "sourceProvenanceHash",
    "requestedVerifyOption",
    "machineType",
    "diskSizeGb",
    "substitutionOption",
    "dynamicSubstitutions",
    "automapSubstitutions",
    "logStreamingOption",
    "logging",
    "env",
    "secretEnv",
    "volumes",
    "pool",
    "defaultLogsBucketBehavior",
    "workerPool",
}
LOGGING = {"LOGGING_UNSPECIFIED", "LEGACY", "GCS_ONLY", "STACKDRIVER_ONLY", "CLOUD_LOGGING_ONLY", "NONE"}
MACHINE_TYPES = {"UNSPECIFIED", "N1_HIGHCPU_8", "N1_HIGHCPU_32", "E2_HIGHCPU_8", "E2_HIGHCPU_32", "E2_MEDIUM"}
BUILT_IN = {
    "PROJECT_ID",
    "BUILD_ID",
    "PROJECT_NUMBER",
    "LOCATION",
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
DURATION = re.compile(r"^\d+(\.\d+)?s$")
CONFIGS = sorted((ROOT / "cloudbuild").glob("*.yaml"))
PIPELINES = [p for p in CONFIGS if p.stem in {"staging", "production"}]
ENVCTL_IMAGE = "${_ENVCTL_IMAGE}"
DIGEST_REF = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")


def test_there_is_one_config_per_branch_and_one_for_releases() -> None:
    assert [p.name for p in CONFIGS] == ["production.yaml", "release.yaml", "staging.yaml"]
    assert [p.stem for p in PIPELINES] == ["production", "staging"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_fields_are_ones_cloud_build_accepts(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert set(config) <= BUILD_FIELDS, set(config) - BUILD_FIELDS
    assert DURATION.match(config["timeout"])
    for step in config["steps"]:
        assert set(step) <= STEP_FIELDS, set(step) - STEP_FIELDS
        assert isinstance(step["name"], str) and step["name"]
        assert all(isinstance(a, str) for a in step.get("args", []))
        assert all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", e) for e in step.get("env", []))
    options = config.get("options", {})
    assert set(options) <= OPTION_FIELDS
    assert options.get("logging", "LEGACY") in LOGGING
    assert options.get("machineType", "UNSPECIFIED") in MACHINE_TYPES
    for key in config.get("substitutions", {}):
        assert re.match(r"^_[A-Z0-9_]+$", key), f"user substitutions start with _ and are upper case: {key}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_substitution_resolves_and_secrets_exist(path: Path) -> None:
    text = path.read_text()
    config = yaml.safe_load(text)
    defined = set(config.get("substitutions", {})) | BUILT_IN
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", text))
    assert used <= defined, f"undefined substitutions: {used - defined}"
    secrets = {s["env"] for s in config.get("availableSecrets", {}).get("secretManager", [])}
    for step in config["steps"]:
        assert set(step.get("secretEnv", [])) <= secrets


def _envctl_step(config: dict[str, Any]) -> dict[str, Any]:
    steps = [s for s in config["steps"] if s["name"] == ENVCTL_IMAGE]
    assert len(steps) == 1, "one step runs the pinned envctl image"
    return steps[0]


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_steps_run_real_envctl_commands_with_known_settings(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    step = _envctl_step(config)
    assert step.get("entrypoint") == "envctl"
    argv = [a.replace("$BRANCH_NAME", path.stem).replace("$COMMIT_SHA", "0" * 40) for a in step["args"]]
    # click parses the command exactly as envctl would, without running it.
    context = cli.make_context("envctl", list(argv), resilient_parsing=False)
    assert context.params["repo"] == Path("."), "the global --repo names the checkout"
    rest = [*context._protected_args, *context.args]  # what follows the global options
    sub = cli.get_command(context, rest[0])
    assert isinstance(sub, click.Group)
    leaf = sub.get_command(context, rest[1])
    assert leaf is not None
    params = leaf.make_context(rest[1], list(rest[2:]), parent=context).params
    assert params["branch"] == path.stem
    assert params["rev"] == "0" * 40
    keys = {f for f in Settings.__dataclass_fields__ if f != "repo"}
    names = [e.split("=", 1)[0] for e in step.get("env", [])] + step.get("secretEnv", [])
    for name in names:
        if name.startswith("ENVCTL_"):
            assert name.removeprefix("ENVCTL_").lower() in keys, f"{name} is not an envctl setting"
    assert "ENVCTL_BACKEND=gcp" in step["env"]


# What running code of the checked-out commit looks like in a step.
SHELLS = {"bash", "sh", "dash", "zsh", "ash", "/bin/bash", "/bin/sh", "/usr/bin/env"}
WORKSPACE_CODE = re.compile(
    r"\bpip[0-9.]*\s+install\b|\bpython[0-9.]*\b|\bsetup\.py\b|\bmake\b|\bnpm\b|\bsource\s|"
    r"(^|[\s=;&|(])\.{1,2}/|/workspace\b|\bscripts/|\.(sh|py|bash)\b"
)
COMMIT_BUILT = re.compile(r"\$\{?(COMMIT_SHA|SHORT_SHA|REVISION_ID|BRANCH_NAME|TAG_NAME|REF_NAME)\b")


def runs_workspace_code(step: dict[str, Any]) -> list[str]:
    """Why `step` may run code of the checked-out commit; empty when it runs none."""
    why = []
    if "script" in step:
        why.append("an inline script")
    if step.get("entrypoint") in SHELLS:
        why.append(f"a shell ({step['entrypoint']})")
    if COMMIT_BUILT.search(step.get("name", "")):
        why.append(f"an image built from the commit ({step['name']})")
    command = "\n".join([step.get("entrypoint", ""), *step.get("args", []), step.get("script", "")])
    why += [f"{m.group(0).strip()!r} in its command" for m in WORKSPACE_CODE.finditer(command)]
    if step.get("dir"):
        why.append(f"a working folder in the checkout ({step['dir']})")
    return why


def _secret_steps(config: dict[str, Any]) -> list[dict[str, Any]]:
    if config.get("options", {}).get("secretEnv"):
        return list(config["steps"])  # every step holds the build-wide secrets
    return [s for s in config["steps"] if s.get("secretEnv")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_step_with_a_secret_runs_code_from_the_workspace(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    for step in _secret_steps(config):
        assert runs_workspace_code(step) == [], (step.get("id"), runs_workspace_code(step))
        assert step["name"] == ENVCTL_IMAGE, f"{step.get('id')} holds a secret but runs {step['name']}"
        assert step.get("entrypoint") == "envctl"


# Steps that did run the pushed commit's code with the ledger password (the first is
# the staging step of before), and others that would: the check must refuse each.
PUSHED_CODE_STEPS: list[dict[str, Any]] = [
    {
        "name": "python:3.11",
        "entrypoint": "bash",
        "args": [
            "-ceu",
            "pip install --quiet '.[postgres]'\nenvctl pipeline run --branch x --rev y --repo .",
        ],
    },
    {"name": ENVCTL_IMAGE, "entrypoint": "python", "args": ["-m", "pipeline.cli.main", "pipeline", "run"]},
    {"name": "python:3.11", "entrypoint": "pip", "args": ["install", "-e", "."]},
    {"name": ENVCTL_IMAGE, "entrypoint": "envctl", "args": ["--repo", "."], "script": "./scripts/demo.py"},
    {"name": "ubuntu", "args": ["./scripts/run-pipeline"]},
    {"name": "ubuntu", "entrypoint": "sh", "args": ["-c", "envctl pipeline run"]},
    {"name": "${_REGISTRY}/envctl:$COMMIT_SHA", "args": ["pipeline", "run"]},
    {"name": "python:3.11", "args": ["scripts/demo.py"]},
]


@pytest.mark.parametrize(
    "step", PUSHED_CODE_STEPS, ids=lambda s: s["name"] + " " + " ".join(s.get("args", []))[:30]
)
def test_the_check_catches_steps_that_run_pushed_code(step: dict[str, Any]) -> None:
    assert runs_workspace_code(step)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_the_pipelines_run_envctl_pinned_by_digest(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    step = _envctl_step(config)
    assert step.get("secretEnv") == ["ENVCTL_LEDGER_PASSWORD"]
    sample = config["substitutions"]["_ENVCTL_IMAGE"]
    assert DIGEST_REF.match(sample), f"_ENVCTL_IMAGE must name a digest (…@sha256:<64 hex>), not {sample!r}"
    release = yaml.safe_load((ROOT / "cloudbuild" / "release.yaml").read_text())
    assert sample.split("@")[0] == release["substitutions"]["_ENVCTL_REPOSITORY"], (
        "the image release.yaml pushes"
    )
    assert make_url(config["substitutions"]["_LEDGER_URL"]).password is None  # it comes from Secret Manager


def test_release_builds_and_pushes_the_envctl_image() -> None:
    config = yaml.safe_load((ROOT / "cloudbuild" / "release.yaml").read_text())
    assert "availableSecrets" not in config and "secrets" not in config
    assert not any(s.get("secretEnv") for s in config["steps"])
    tag = "${_ENVCTL_REPOSITORY}:$COMMIT_SHA"
    build = next(s for s in config["steps"] if s.get("args", [""])[0] == "build")
    assert build["name"] == "gcr.io/cloud-builders/docker"
    assert "--file=release/Dockerfile" in build["args"] and f"--tag={tag}" in build["args"]
    assert build["args"][-1] == "."
    pushes = [s for s in config["steps"] if s.get("args", [""])[0] == "push"]
    assert [s["args"] for s in pushes] == [["push", tag]]
    assert config["images"] == [tag]  # so the build's results carry the digest

    dockerfile = (ROOT / "release" / "Dockerfile").read_text()
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installed = re.search(r"pip install [^\n]*'/src\[([a-z,]+)\]'", dockerfile)
    assert installed, "the image installs envctl from the release commit's source tree"
    assert set(installed.group(1).split(",")) == {"postgres", "gcp"} <= extras
    assert 'ENTRYPOINT ["envctl"]' in dockerfile
    assert "COPY pipeline /src/pipeline" in dockerfile
