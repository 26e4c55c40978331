"""`tests.isolation: run`: the run's one container, against the real Docker Engine."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import docker
from pipeline.testing.runner import RUN_LABEL, Limits, SharedContainer, Tracker
from tests.helpers import BASE_IMAGE

LIMITS = Limits(memory_bytes=256 * 1024 * 1024, nano_cpus=1_000_000_000, network="none")


@pytest.fixture
def client() -> Iterator[Any]:
    c = docker.from_env()
    yield c
    c.close()


def shared(client: Any, image_ref: str = BASE_IMAGE) -> SharedContainer:
    tracker = Tracker(run_id=f"shared-{uuid.uuid4().hex[:8]}")
    return SharedContainer(
        client=client,
        tracker=tracker,
        image_ref=image_ref,
        labels={},
        limits=LIMITS,
        mounts={},
        environment={},
    )


def labelled(client: Any, run: SharedContainer) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run.tracker.run_id}"}))


def test_a_dead_container_is_replaced_for_the_next_notebook(client: Any) -> None:
    run = shared(client)
    try:
        first = run.run(["sh", "-c", "exit 3"], deadline=60)
        assert first.exit_code == 3 and first.start_error == ""
        dead = labelled(client, run)
        assert len(dead) == 1
        dead[0].kill()  # the container dies between notebooks (OOM of a stray process, dockerd hiccup)
        second = run.run(["sh", "-c", "echo again"], deadline=60)
        assert second.start_error == "" and second.exit_code == 0
        assert "again" in second.logs
        live = labelled(client, run)
        assert [c.id for c in live] != [dead[0].id] and len(live) == 1
    finally:
        run.close()
    assert labelled(client, run) == []


def test_a_container_that_cannot_start_is_removed_and_retried(client: Any) -> None:
    # An image with no python3: the keep-alive command cannot start.
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = b"FROM scratch\nLABEL org.envctl.test=shared\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"envctl-test-scratch:{uuid.uuid4().hex[:8]}"
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    run = shared(client, image_ref=tag)
    try:
        broken = run.run(["true"], deadline=30)
        assert broken.start_error
        assert labelled(client, run) == []  # not left behind, and not reused
        run.image_ref = BASE_IMAGE  # e.g. the engine recovered: the next notebook gets a fresh start
        ok = run.run(["sh", "-c", "exit 0"], deadline=60)
        assert ok.start_error == "" and ok.exit_code == 0
    finally:
        run.close()
        client.images.remove(tag, force=True)
    assert labelled(client, run) == []
