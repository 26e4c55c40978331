"""The pipelines and the promotion commands agree on evidence, and a re-run repairs lost tags.

Real `git push` into a bare repository whose hook runs the pipelines (as in
test_pipelines.py), the real registry, papermill in the image, the real `envctl`.
"""

from __future__ import annotations

import json

import pytest

from pipeline.ledger import db as ledger_db
from pipeline.ledger import pointers as envs
from pipeline.publish.oci import Registry
from tests import minirepo
from tests.integration import test_pipelines
from tests.integration.test_pipelines import World

pytestmark = pytest.mark.integration
world = test_pipelines.world  # the pipelines' fixture: a mini repo behind a bare one with the hook

NOTEBOOK = "test-notebooks/__IMAGE__/greet.ipynb"


def _head(world: World) -> str:
    return minirepo.git(world.mini.path, "rev-parse", "HEAD")


def test_a_commit_back_to_tested_inputs_is_a_version_that_promotes(world: World) -> None:
    img, registry = world.mini.image, Registry("localhost:5000")
    # A passes.
    a = _head(world)
    assert world.push("staging").returncode == 0
    ledger = world.ledger()
    version_a = ledger.get_version(img, a)
    assert version_a is not None and world.status()["staging"]["sha"] == a

    # B: the same digest, a broken notebook: fails, staging stays at A.
    good = world.mini.read(NOTEBOOK)
    world.mini.write(NOTEBOOK, good.replace("expected = 'hello'", "expected = 'bye'"))
    b = world.mini.commit("break the test")
    assert "FAIL test-notebooks/" in world.push("staging").stderr
    version_b = ledger.get_version(img, b)
    assert version_b is not None and version_b.digest == version_a.digest
    assert world.status()["staging"]["sha"] == a

    # C returns to A's inputs: a version of the same digest by retag, no build, no test run.
    world.mini.write(NOTEBOOK, good)
    c = world.mini.commit("back to the working notebook")
    runs_before = len(ledger_db.test_runs_for(ledger, img, version_a.digest))
    pushed = world.push("staging")
    assert pushed.returncode == 0, pushed.stderr
    assert f"{img}  promoted  staging := {c[:12]}" in pushed.stderr, pushed.stderr
    assert "building" not in pushed.stderr
    version_c = ledger.get_version(img, c)
    assert version_c is not None and version_c.digest == version_a.digest
    assert version_c.reused_from == a
    assert len(ledger_db.test_runs_for(ledger, img, version_a.digest)) == runs_before
    assert world.status()["staging"]["sha"] == c
    assert registry.digest_of(img, c) == version_a.digest  # `docker pull <image>:<C>` works

    # promote and rollback use the same evidence: C passes by A's run; B's failure stays B's.
    promoted = world.envctl("promote", f"{img}.production", "--rev", c)
    assert promoted.returncode == 0, promoted.stderr
    assert world.status()["production"]["sha"] == c
    refused = world.envctl("promote", f"{img}.production", "--rev", b)
    assert refused.returncode == 1 and "failed" in refused.stderr, refused.stderr
    assert world.envctl("promote", f"{img}.production", "--rev", a).returncode == 0
    rolled = world.envctl("rollback", img, "--to", c[:10])
    assert rolled.returncode == 0, rolled.stderr
    assert world.status()["production"]["sha"] == c

    # The production pipeline promotes the same version the command would.
    merged = world.envctl("pipeline", "run", "--branch", "production", "--rev", c, "--json")
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout)["verdicts"][img]["state"] == "noop"


def test_a_rerun_republishes_a_tag_the_registry_lost(world: World) -> None:
    img, registry = world.mini.image, Registry("localhost:5000")
    a = _head(world)
    assert world.push("staging").returncode == 0
    digest_a = registry.digest_of(img, "staging")
    world.mini.write("docker/__IMAGE__/greeting.py", "print('a new version')\n")
    b = world.mini.commit("a second version")
    built = world.envctl("build", img, "--rev", b, "--json")
    assert built.returncode == 0, built.stderr
    digest_b = json.loads(built.stdout)["digest"]
    assert digest_b != digest_a

    # A pipeline killed between the ledger's commit and the tag write: the ledger moved,
    # the registry still shows A.
    ledger = world.ledger()
    with ledger.transaction() as conn:
        envs.lock_image(conn, img)
        envs.move(conn, envs.read(conn, img, "staging"), b, digest_b, "promote", envs.Who(actor="killed"))
    assert world.status()["staging"]["drift"] == "moved"
    assert registry.digest_of(img, "staging") == digest_a

    again = world.envctl("pipeline", "run", "--branch", "staging", "--rev", b, "--json")
    assert again.returncode == 0, again.stderr
    verdict = json.loads(again.stdout)["verdicts"][img]
    assert verdict["state"] == "noop"
    said = f"republished localhost:5000/{img}:staging, which the registry had lost"
    assert said in verdict["detail"] and said in again.stderr
    assert registry.digest_of(img, "staging") == digest_b
    assert world.status()["staging"]["drift"] is None
    history = json.loads(world.envctl("history", f"{img}.staging", "--json").stdout)
    assert [e["to_sha"] for e in history] == [a, b]  # repaired without a new move

    # Nothing lost: a re-run says nothing of the kind.
    quiet = world.envctl("pipeline", "run", "--branch", "staging", "--rev", b)
    assert quiet.returncode == 0 and "republished" not in quiet.stderr
