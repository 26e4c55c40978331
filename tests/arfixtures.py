"""Fixtures of the retention tests (a pytest plugin: `pytest_plugins = ["tests.arfixtures"]`).

`ar_fake`: the stateful Artifact Registry fake, granted repoAdmin; `ar_settings`: the gcp
backend's settings, its Artifact Registry client sent to `ar_fake`.
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
def ar_fake() -> Iterator[FakeArtifactRegistry]:
    with FakeArtifactRegistry(REPOSITORY) as server:
        server.granted = REPO_ADMIN
        yield server


@pytest.fixture
def ar_settings(ar_fake: FakeArtifactRegistry, tmp_path: Path) -> Settings:
    """The gcp backend's settings, its Artifact Registry client sent to `ar_fake`."""
    return load(repo=tmp_path, env=artifact_registry_env(ar_fake.endpoint, REGISTRY, tmp_path / "state"))
