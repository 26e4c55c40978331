"""cloudbuild/*.yaml: only fields Cloud Build accepts, substitutions that resolve, real commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

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


def test_there_is_one_config_per_branch() -> None:
    assert [p.name for p in CONFIGS] == ["production.yaml", "staging.yaml"]


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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_steps_run_real_envctl_commands_with_known_settings(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    step = next(s for s in config["steps"] if "envctl" in " ".join(s.get("args", [])))
    script = step["args"][-1]
    line = next(x for x in script.splitlines() if x.strip().startswith("envctl "))
    argv = shlex.split(line.replace('"$BRANCH_NAME"', path.stem).replace('"$COMMIT_SHA"', "0" * 40))[1:]
    # click parses the command exactly as envctl would, without running it.
    context = cli.make_context("envctl", list(argv), resilient_parsing=False)
    sub = cli.get_command(context, argv[0])
    assert isinstance(sub, click.Group)
    leaf = sub.get_command(context, argv[1])
    assert leaf is not None
    params = leaf.make_context(argv[1], list(argv[2:]), parent=context).params
    assert params["branch"] == path.stem
    keys = {f for f in Settings.__dataclass_fields__ if f != "repo"}
    names = [e.split("=", 1)[0] for e in step.get("env", [])] + step.get("secretEnv", [])
    for name in names:
        if name.startswith("ENVCTL_"):
            assert name.removeprefix("ENVCTL_").lower() in keys, f"{name} is not an envctl setting"
