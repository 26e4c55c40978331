"""Where Google Cloud calls go: project, region and repository, endpoints, deadlines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import gcp
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load


def _settings(**values: object) -> Settings:
    return Settings(repo=Path("."), backend="gcp", **values)  # type: ignore[arg-type]


def test_the_registry_names_project_region_and_repository() -> None:
    where = gcp.location(_settings(registry="europe-west4-docker.pkg.dev/proj-1/images"))
    assert (where.project, where.region, where.repository) == ("proj-1", "europe-west4", "images")
    assert where.repository_name == "projects/proj-1/locations/europe-west4/repositories/images"
    assert where.registry_host == "europe-west4-docker.pkg.dev"
    assert "--repository-format=docker --location=europe-west4" in where.create_repository_fix()
    # agreeing settings are fine; disagreeing ones are refused, naming both
    gcp.location(_settings(registry="us-docker.pkg.dev/p/r", gcp_region="us", gcp_project="p"))
    with pytest.raises(ConfigError, match="gcp_region = 'europe-west1' disagrees"):
        gcp.location(_settings(registry="us-docker.pkg.dev/p/r", gcp_region="europe-west1"))
    for bad in ("us-docker.pkg.dev/p", "us-docker.pkg.dev/p/r/extra", "localhost:5000"):
        with pytest.raises(ConfigError, match=r"REGION-docker\.pkg\.dev/PROJECT/REPOSITORY"):
            gcp.location(_settings(registry=bad))


def test_project_and_region_from_settings_when_the_registry_does_not_name_them() -> None:
    where = gcp.location(
        _settings(registry="localhost:5000", gcp_project="p", gcp_region="r"), need_repository=False
    )
    assert (where.project, where.region, where.repository) == ("p", "r", "")
    with pytest.raises(ConfigError, match="ENVCTL_GCP_PROJECT and ENVCTL_GCP_REGION"):
        gcp.location(_settings(registry="localhost:5000"), need_repository=False)


def test_endpoints_are_parsed_and_checked() -> None:
    found = gcp.endpoints(
        _settings(
            gcp_endpoints="cloudbuild=http://127.0.0.1:8001/, artifactregistry=https://ar.example.com,storage=http://localhost:9"
        )
    )
    assert found == {
        "cloudbuild": "http://127.0.0.1:8001",
        "artifactregistry": "https://ar.example.com",
        "storage": "http://localhost:9",
    }
    assert gcp.on_loopback(found["cloudbuild"]) and not gcp.on_loopback(found["artifactregistry"])
    for bad, why in (
        ("vertex=http://127.0.0.1:1", "API one of cloudbuild, artifactregistry, storage"),
        ("cloudbuild", "is not API=URL"),
        ("storage=ftp://127.0.0.1", "not an http(s) URL"),
        ("storage=http://10.0.0.8:80", "plain http off this machine"),
        ("storage=https://user:secret@storage.example", "credentials in its URL"),
    ):
        with pytest.raises(ConfigError, match=why.replace("(", r"\(").replace(")", r"\)")):
            gcp.endpoints(_settings(gcp_endpoints=bad))


def test_gcp_settings_load_from_the_environment_but_endpoints_not_from_the_repository(tmp_path: Path) -> None:
    env = {
        "ENVCTL_GCP_TIMEOUT": "5",
        "ENVCTL_GCP_RETRY": "0",
        "ENVCTL_GCP_ENDPOINTS": "storage=http://127.0.0.1:1",
    }
    settings = load(repo=tmp_path, env=env)
    assert (settings.gcp_timeout, settings.gcp_retry, settings.gcp_endpoints) == (
        5,
        False,
        "storage=http://127.0.0.1:1",
    )
    policy = gcp.CallPolicy.for_settings(settings)
    assert policy.kwargs() == {"timeout": 5.0, "retry": None}
    assert gcp.CallPolicy(timeout=30).kwargs()["retry"] is not None

    (tmp_path / "pyproject.toml").write_text(
        '[tool.envctl]\ngcp_endpoints = "artifactregistry=https://evil.example"\n'
    )
    with pytest.raises(ConfigError, match="may only come from the environment \\(ENVCTL_GCP_ENDPOINTS\\)"):
        load(repo=tmp_path, env={})
    (tmp_path / "pyproject.toml").write_text(
        '[tool.envctl]\ngcp_project = "p"\ngcp_region = "europe-west4"\n'
    )
    assert load(repo=tmp_path, env={}).gcp_project == "p"
