"""Fixtures of the environment tests (a pytest plugin: `pytest_plugins = ["tests.stagefixtures"]`)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.backends import ContextFile
from pipeline.build.engine import build, connect, context_tar
from tests.stageworld import BASE, MARKERS, OwnRegistry, World, make_world


def _tiny_images(base: str, name: str, count: int) -> Iterator[list[str]]:
    """Build `count` distinct images `FROM base` (one marker file each); remove them after."""
    client = connect()
    run = secrets.token_hex(4)
    tags = [f"envctl-test/{name}-{run}:{i}" for i in range(count)]
    try:
        ids = []
        for i, tag in enumerate(tags):
            context = context_tar(
                {
                    "Dockerfile": ContextFile(f"FROM {base}\nCOPY marker /marker\n".encode()),
                    "marker": ContextFile(f"{run}-{i}\n".encode()),
                }
            )
            ids.append(
                build(client, context=context, dockerfile="Dockerfile", tag=tag, buildargs={}, labels={})
            )
        yield ids
    finally:
        for tag in tags:
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=True)


@pytest.fixture(scope="session")
def marker_images() -> Iterator[list[str]]:
    """Local image IDs of MARKERS distinct tiny images."""
    yield from _tiny_images(BASE, "marker", MARKERS)


@pytest.fixture
def world(tmp_path: Path, ledger_url: str, marker_images: list[str]) -> World:
    """A fresh image, repository and ledger (SQLite or PostgreSQL) with four versions."""
    return make_world(tmp_path, ledger_url, marker_images)


@pytest.fixture(scope="session")
def scratch_images() -> Iterator[list[str]]:
    """Two tiny images FROM scratch: cheap to push into a registry of a test's own."""
    yield from _tiny_images("scratch", "scratch", 2)


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[OwnRegistry]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed; run `envctl stack up`")
    registry = OwnRegistry(tmp_path / "own-registry")
    registry.root.mkdir()
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
