"""Ten real `envctl` processes race promotions and rollbacks of one image.

What must hold: no traceback, every command either moved or said no, the event chain of
each environment is unbroken (each event's from is the previous event's to) and, after
`envctl sync`, the registry tags equal the ledger.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.publish.oci import Registry
from tests.helpers import ENVCTL, ROOT, cli_env
from tests.integration.test_environments import chain_is_unbroken
from tests.stageworld import World

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]


def test_ten_processes_race_and_the_chain_holds(world: World, tmp_path: Path) -> None:
    img = world.image
    for name in ("c1", "c2", "c3", "side"):
        world.evidence(name, passed=True)
    for name in ("c1", "c2"):
        assert world.envctl("promote", f"{img}.production", "--rev", world.sha[name]).returncode == 0

    commands = [
        ["promote", f"{img}.production", "--rev", world.sha["c3"]],
        ["rollback", img],
        ["promote", f"{img}.production", "--rev", world.sha["side"]],
        ["rollback", img, "--to", world.sha["c1"][:8]],
        ["promote", f"{img}.staging", "--rev", world.sha["c2"], "--force"],
        ["promote", f"{img}.production", "--rev", world.sha["c1"]],
        ["rollback", img, "--reason", "race"],
        ["promote", f"{img}.staging", "--rev", world.sha["side"], "--force"],
        ["promote", f"{img}.production", "--rev", world.sha["c2"]],
        ["rollback", img, "--to", world.sha["c3"][:10]],
    ]
    env = cli_env(world.env)
    running = [
        subprocess.Popen(
            [*ENVCTL, *args],
            cwd=world.repo,
            env=env | {"PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    for args, process in zip(commands, running, strict=True):
        _, stderr = process.communicate(timeout=300)
        assert "Traceback" not in stderr, stderr
        assert process.returncode == 0, (args, stderr)

    history = world.json("history", img)
    chain_is_unbroken(history)
    moves = [e for e in history if e["action"] in {"promote", "rollback"}]
    assert len(moves) >= 3 + 2  # the set-up, then at least the staging moves and one per production
    assert world.envctl("sync", img).returncode == 0
    registry = Registry("localhost:5000")
    for stage, entry in world.status().items():
        assert entry["drift"] is None
        assert registry.digest_of(img, stage) == entry["digest"]
        last = [e for e in history if e["environment"] == f"{img}.{stage}"][-1]
        assert last["to_digest"] == entry["digest"]
