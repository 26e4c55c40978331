"""Fixtures of the retention tests (a pytest plugin: `pytest_plugins = ["tests.arfixtures"]`).

`fake`: the stateful Artifact Registry fake, granted repoAdmin; `settings`: the gcp
backend's settings, its Artifact Registry client sent to `fake`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings, load
from tests.arversions import REGISTRY, REPOSITORY
from tests.gcpfakes.artifactregistry import REPO_ADMIN, FakeArtifactRegistry
from tests.ledgerfacts import artifact_registry_env


@pytest.fixture
def fake() -> Iterator[FakeArtifactRegistry]:
    with FakeArtifactRegistry(REPOSITORY) as server:
        server.granted = REPO_ADMIN
        yield server


@pytest.fixture
def settings(fake: FakeArtifactRegistry, tmp_path: Path) -> Settings:
    """The gcp backend's settings, its Artifact Registry client sent to `fake`."""
    return load(repo=tmp_path, env=artifact_registry_env(fake.endpoint, REGISTRY, tmp_path / "state"))
