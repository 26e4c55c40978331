"""When the registry fails: before a move the ledger stays unchanged; after the ledger
commits, the command exits 3 naming `envctl sync`, status shows the drift and sync repairs it.

Runs against a docker-registry of the test's own (stopped and made read-only by the
test), never the shared one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ledger import pointers as environments
from pipeline.publish.oci import Registry
from tests.integration.test_environments import chain_is_unbroken, one_line_error
from tests.stageworld import OwnRegistry, make_world

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]


def test_registry_failures_leave_the_ledger_true_and_sync_repairs(
    tmp_path: Path, ledger_url: str, scratch_images: list[str], own_registry: OwnRegistry
) -> None:
    world = make_world(tmp_path, ledger_url, scratch_images, names=("c1", "c2"), registry=own_registry.host)
    img = world.image
    for name in ("c1", "c2"):
        world.evidence(name, passed=True)
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c1"]).returncode == 0
    registry = Registry(own_registry.host)
    assert registry.digest_of(img, "staging") == world.digest["c1"]

    # Registry down before a move: exit 3, nothing written.
    own_registry.stop()
    before = world.json("history", img)
    one_line_error(
        world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"]), 3, "nothing was changed"
    )
    one_line_error(world.envctl("rollback", img, "--to", world.sha["c1"][:7]), 3, "does not answer")
    assert world.json("history", img) == before
    pointer = environments.current(world.ledger, img, "staging")
    assert pointer is not None and pointer.sha == world.sha["c1"]
    down = world.envctl("status", img, "--json")
    assert down.returncode == 3 and "Traceback" not in down.stderr

    # The registry answers but refuses writes: the ledger commits, the tag lags.
    own_registry.start(readonly=True)
    one_line_error(
        world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"]), 3, f"envctl sync {img}"
    )
    one_line_error(world.envctl("promote", f"{img}.production", "--rev", world.sha["c2"]), 3, "envctl sync")
    status = world.status()
    assert status["staging"]["sha"] == world.sha["c2"]
    assert (status["staging"]["drift"], status["staging"]["tag_digest"]) == ("moved", world.digest["c1"])
    assert status["production"]["drift"] == "missing"
    assert "drift: missing" in world.envctl("status").stdout

    own_registry.stop()
    own_registry.start()
    synced = world.envctl("sync")
    assert synced.returncode == 0, synced.stderr
    assert all(entry["drift"] is None for entry in world.status().values())
    assert registry.digest_of(img, "staging") == world.digest["c2"]
    assert registry.digest_of(img, "production") == world.digest["c2"]
    chain_is_unbroken(world.json("history", img))
