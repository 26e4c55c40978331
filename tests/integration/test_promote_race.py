"""`promote` loses a race on purpose: another writer moves staging between the read and the swap.

The real promotion (git ancestry, evidence, registry check, tags) on the real stack,
on SQLite and PostgreSQL; the racer is a second ledger connection that promotes from
the `on_read` hook, i.e. exactly between the loser's read and its compare-and-swap.
"""

from __future__ import annotations

import pytest

from pipeline.errors import Refused
from pipeline.ledger.db import Ledger
from pipeline.ledger.pointers import EnvId
from pipeline.promote.moves import promote
from pipeline.publish.oci import Registry
from pipeline.settings import load
from tests.stageworld import World

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]


def test_the_loser_moves_on_when_still_forward_else_says_what_moved(world: World) -> None:
    settings = load(repo=world.repo, env=world.env)
    staging = EnvId(world.image, "staging")
    other = Ledger.open(world.ledger_url)
    promote(settings, world.ledger, staging, world.sha["c1"])
    raced: list[str] = []

    def racer() -> None:
        if not raced:  # once
            raced.append("c2")
            promote(settings, other, staging, world.sha["c2"])

    # c3 descends from c2 too: the loser decides again and moves on from c2.
    moved = promote(settings, world.ledger, staging, world.sha["c3"], on_read=racer)
    assert [(s.from_sha, s.to_sha) for s in moved.steps] == [(world.sha["c2"], world.sha["c3"])]
    assert [e["to_sha"] for e in world.json("history", f"{world.image}.staging")] == [
        world.sha["c1"],
        world.sha["c2"],
        world.sha["c3"],
    ]

    # side descends from c1 but not from c2: the loser says no, naming the move it lost to.
    promote(settings, world.ledger, staging, world.sha["c1"], force=True)
    raced.clear()
    with pytest.raises(Refused) as lost:
        promote(settings, world.ledger, staging, world.sha["side"], on_read=racer)
    assert lost.value.exit_code == 1
    message = str(lost.value)
    assert message.startswith(
        f"{world.image}.staging moved from {world.sha['c1'][:12]} to {world.sha['c2'][:12]} while this command ran"
    ), message
    assert "does not descend from the current staging version" in message
    assert world.pointer("staging") == world.sha["c2"]
    assert Registry("localhost:5000").digest_of(world.image, "staging") == world.digest["c2"]
