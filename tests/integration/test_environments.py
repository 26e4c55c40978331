"""Environments on the real stack: every promotion rule, on SQLite and on PostgreSQL.

Each test has its own image in the shared registry, its own git repository and its
own ledger, and runs the real `envctl` in child processes as a pipeline would.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from pipeline.ledger.db import Ledger, Version, now
from pipeline.publish.oci import Registry
from tests.helpers import login
from tests.stageworld import World

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("envctl: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def chain_is_unbroken(history: list[dict[str, object]]) -> None:
    last: dict[object, object] = {}
    for event in history:
        env = event["environment"]
        assert event["from_digest"] == last.get(env), (env, event)
        last[env] = event["to_digest"]


def test_staging_moves_only_forward_unless_forced(world: World) -> None:
    img = world.image
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"][:10]).returncode == 0
    assert world.pointer("staging") == world.sha["c2"]

    one_line_error(
        world.envctl("promote", f"{img}.staging", "--rev", world.sha["c1"]), 1, "forward", "--force"
    )
    one_line_error(world.envctl("promote", f"{img}.staging", "--rev", "side"), 1, "does not descend")
    assert world.pointer("staging") == world.sha["c2"]

    assert world.envctl("promote", f"{img}.staging", "--rev", "main").returncode == 0  # c3 descends
    forced = world.envctl("promote", f"{img}.staging", "--rev", "side", "--force", "--reason", "hotfix")
    assert forced.returncode == 0, forced.stderr
    status = world.status()["staging"]
    assert status["sha"] == world.sha["side"]
    assert status["digest"] == world.digest["side"]
    assert status["image_ref"] == f"localhost:5000/{img}@{world.digest['side']}"
    assert status["drift"] is None
    assert Registry("localhost:5000").digest_of(img, "staging") == world.digest["side"]

    events = world.json("history", f"{img}.staging")
    assert [e["to_sha"] for e in events] == [world.sha["c2"], world.sha["c3"], world.sha["side"]]
    assert events[-1]["reason"].startswith("hotfix [forced over:") and events[-1]["forced"] is True
    assert not events[0]["forced"]
    chain_is_unbroken(events)


def test_production_needs_passing_evidence_and_keeps_fallback(world: World) -> None:
    prod = f"{world.image}.production"
    one_line_error(world.envctl("promote", prod, "--rev", "main"), 1, "no test evidence")
    world.evidence("c3", passed=False)
    one_line_error(world.envctl("promote", prod, "--rev", "main"), 1, "failed")
    assert world.status() == {}

    world.evidence("c2", passed=True)
    world.evidence("c3", passed=True)
    assert world.envctl("promote", prod, "--rev", world.sha["c2"]).returncode == 0
    assert "fallback" not in world.status()
    assert world.envctl("promote", prod, "--rev", world.sha["c3"]).returncode == 0
    status = world.status()
    assert (status["production"]["sha"], status["fallback"]["sha"]) == (world.sha["c3"], world.sha["c2"])
    for entry in status.values():
        assert set(entry) >= {
            "environment",
            "image",
            "stage",
            "sha",
            "digest",
            "image_ref",
            "updated_at",
            "pinned",
            "drift",
        }
        assert entry["drift"] is None and entry["pinned"] is False

    # What a user relies on: the plain docker client pulls the digest the ledger names.
    ref = f"localhost:5000/{world.image}:production"
    try:
        subprocess.run(["docker", "pull", "-q", ref], check=True, capture_output=True, timeout=300)
        pulled = subprocess.run(
            ["docker", "inspect", "--format", "{{json .RepoDigests}}", ref],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert f"{world.image}@{world.digest['c3']}" in pulled
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True, check=False)

    # Forcing an untested version is possible and recorded.
    forced = world.envctl("promote", prod, "--rev", "side", "--force")
    assert forced.returncode == 0, forced.stderr
    last = world.json("history", prod)[-1]
    assert last["forced"] is True and "no test evidence" in last["reason"]
    chain_is_unbroken(world.json("history", world.image))


def test_rollback_to_fallback_and_to_a_prefix(world: World) -> None:
    img = world.image
    one_line_error(world.envctl("rollback", img), 1, "no fallback", "--to")
    for name in ("c1", "c2", "c3"):
        world.evidence(name, passed=True)
    world.evidence("side", passed=False)
    for name in ("c2", "c3"):
        assert world.envctl("promote", f"{img}.production", "--rev", world.sha[name]).returncode == 0
    before = world.json("history", img)

    back = world.envctl("rollback", img, "--reason", "bad release")
    assert back.returncode == 0, back.stderr
    assert world.pointer("production") == world.sha["c2"]
    assert Registry("localhost:5000").digest_of(img, "production") == world.digest["c2"]

    one_line_error(world.envctl("rollback", img, "--to", world.sha["side"][:9]), 1, "failed", "--force")
    one_line_error(world.envctl("rollback", img, "--to", world.sha["c1"][:6]), 2, "too short")
    one_line_error(world.envctl("rollback", img, "--to", "0000000"), 2, "no version")
    assert world.envctl("rollback", img, "--to", world.sha["c1"][:7]).returncode == 0
    assert world.pointer("production") == world.sha["c1"]
    assert world.envctl("rollback", img, "--to", world.sha["side"][:8], "--force").returncode == 0

    after = world.json("history", img)
    assert after[: len(before)] == before  # history is never rewritten
    added = after[len(before) :]
    assert [(e["action"], e["to_sha"]) for e in added] == [
        ("rollback", world.sha["c2"]),
        ("rollback", world.sha["c1"]),
        ("rollback", world.sha["side"]),
    ]
    assert added[0]["reason"] == "bad release"
    assert added[2]["forced"] is True
    chain_is_unbroken(after)


def test_pin_holds_every_move_until_unpin(world: World) -> None:
    img = world.image
    for name in ("c2", "c3"):
        world.evidence(name, passed=True)
    assert world.envctl("promote", f"{img}.production", "--rev", world.sha["c2"]).returncode == 0
    assert world.envctl("pin", f"{img}.production", "--reason", "incident 42").returncode == 0
    pinned = world.status()["production"]
    assert pinned["pinned"] is True and pinned["pin_reason"] == "incident 42"

    one_line_error(world.envctl("promote", f"{img}.production", "--rev", "main"), 1, "pinned")
    one_line_error(world.envctl("rollback", img, "--to", world.sha["c3"][:8]), 1, "pinned")
    assert world.pointer("production") == world.sha["c2"]

    assert world.envctl("unpin", f"{img}.production").returncode == 0
    assert world.envctl("promote", f"{img}.production", "--rev", "main").returncode == 0
    assert world.pointer("production") == world.sha["c3"]
    assert world.envctl("pin", f"{img}.staging", "--reason", "freeze").returncode == 0
    assert world.envctl("promote", f"{img}.staging", "--rev", "main", "--force").returncode == 0
    actions = [(e["environment"], e["action"]) for e in world.json("history", img)]
    assert actions == [
        (f"{img}.production", "promote"),
        (f"{img}.production", "pin"),
        (f"{img}.production", "unpin"),
        (f"{img}.fallback", "promote"),
        (f"{img}.production", "promote"),
        (f"{img}.staging", "pin"),
        (f"{img}.staging", "promote"),
    ]
    chain_is_unbroken(world.json("history", img))


def test_actor_ci_run_and_reason_are_recorded(world: World) -> None:
    img = world.image
    assert world.envctl("promote", f"{img}.staging", "--rev", "main").returncode == 0
    world.extra_env = {"ENVCTL_ACTOR": "ci-bot", "ENVCTL_CI_RUN_ID": "run-77"}
    assert world.envctl("pin", f"{img}.staging", "--reason", "incident 42").returncode == 0
    first, second = world.json("history", f"{img}.staging")
    assert set(first) >= {
        "at",
        "environment",
        "action",
        "from_sha",
        "to_sha",
        "from_digest",
        "to_digest",
        "actor",
        "reason",
    }
    assert (first["actor"], first["ci_run_id"], first["from_sha"]) == ("Image Owner", None, None)
    assert (first["to_sha"], first["to_digest"]) == (world.sha["c3"], world.digest["c3"])
    assert (second["actor"], second["ci_run_id"], second["reason"]) == ("ci-bot", "run-77", "incident 42")
    text = world.envctl("history", img)
    assert text.returncode == 0 and "ci-bot [run-77]" in text.stdout and "incident 42" in text.stdout


def test_describe_and_diff_read_the_stored_sboms(world: World) -> None:
    img = world.image
    world.evidence("c1", passed=True)
    assert world.envctl("promote", f"{img}.production", "--rev", world.sha["c1"]).returncode == 0
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"]).returncode == 0

    described = world.json("describe", f"{img}.production")
    assert described["image_ref"] == f"localhost:5000/{img}@{world.digest['c1']}"
    assert described["tested"] is True and len(described["evidence"]) == 1
    assert described["sbom"]["python"] == "3.11.2-1"
    assert described["sbom"]["packages"]["pip"] == 2

    changes = world.json("diff", f"{img}.production", f"{img}.staging")
    assert [c["name"] for c in changes["added"]] == ["pandas"]
    assert [c["name"] for c in changes["removed"]] == ["keras"]
    assert [(c["name"], c["from"], c["to"]) for c in changes["changed"]] == [
        ("numpy", "1.26.4", "2.0.0"),
        ("python3", "3.11.2-1", "3.12.1-1"),
    ]
    assert changes["python"] == {"from": "3.11.2-1", "to": "3.12.1-1", "changed": True}
    text = world.envctl("diff", f"{img}.production", f"{img}.staging")
    assert "+ pip   pandas 2.2.2" in text.stdout and "~ pip   numpy 1.26.4 -> 2.0.0" in text.stdout


def test_drift_shows_in_status_and_sync_repairs_it(world: World) -> None:
    img = world.image
    assert world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"]).returncode == 0
    registry = Registry("localhost:5000", credentials=login())
    moved = registry.manifest(img, world.digest["c3"])
    assert moved is not None
    registry.put_manifest(img, "staging", moved)  # someone retags by hand

    status = world.status()["staging"]
    assert (status["drift"], status["tag_digest"]) == ("moved", world.digest["c3"])
    shown = world.envctl("status", img)
    assert "drift: moved" in shown.stdout and "envctl sync" in shown.stderr

    synced = world.envctl("sync", img, "--json")
    assert synced.returncode == 0, synced.stderr
    republished = json.loads(synced.stdout)
    assert [(r["environment"], r["drift"], r["digest"]) for r in republished] == [
        (f"{img}.staging", "moved", world.digest["c2"])
    ]
    assert world.status()["staging"]["drift"] is None
    assert registry.digest_of(img, "staging") == world.digest["c2"]


def test_bad_input_is_one_line_with_the_right_exit_code(world: World) -> None:
    img = world.image
    one_line_error(world.envctl("promote", "nope.never.staging", "--rev", "main"), 2, "unknown image")
    one_line_error(world.envctl("promote", f"{img}.canary", "--rev", "main"), 2, "unknown stage")
    one_line_error(world.envctl("status", "no.such-image"), 2, "unknown image")
    one_line_error(world.envctl("history", f"{img}.qa"), 2)
    one_line_error(world.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"][:5]), 2, "too short")
    one_line_error(
        world.envctl("promote", f"{img}.fallback", "--rev", "main"), 2, "moves only with production"
    )

    (world.repo / "file").write_text("c4")
    subprocess.run(["git", "-C", str(world.repo), "commit", "-q", "-am", "c4"], check=True)
    one_line_error(
        world.envctl("promote", f"{img}.staging", "--rev", "main"), 2, "never built", "envctl build"
    )

    for prefix in ("1234567aa", "1234567bb"):  # two versions sharing a 7-character prefix
        world.ledger.record_version(
            Version(
                image=img,
                sha=prefix + "0" * 31,
                tree="0" * 40,
                inputs_key="x",
                build_key=prefix,
                digest=world.digest["c1"],
                image_ref="",
                size=None,
                reused_from=None,
                labels={},
                sbom={},
                created_at=now(),
            )
        )
    one_line_error(world.envctl("rollback", img, "--to", "1234567"), 2, "ambiguous")

    world.extra_env = {"ENVCTL_LEDGER_URL": "postgresql+psycopg://nobody:x@127.0.0.1:1/none"}
    one_line_error(world.envctl("status"), 3, "ledger", "ENVCTL_LEDGER_URL")
    world.extra_env = {"ENVCTL_LEDGER_URL": "not a url"}
    one_line_error(world.envctl("history", img), 2, "ENVCTL_LEDGER_URL")


def test_ledger_schema_migrates_forward_and_is_shared_by_pointers(world: World) -> None:
    from pipeline.ledger import pointers as environments

    assert world.envctl("promote", f"{world.image}.staging", "--rev", world.sha["c1"]).returncode == 0
    pointer = environments.current(Ledger.open(world.ledger_url), world.image, "staging")
    assert pointer is not None
    assert (pointer.sha, pointer.digest, pointer.generation, pointer.pinned) == (
        world.sha["c1"],
        world.digest["c1"],
        1,
        False,
    )
    assert environments.current(world.ledger, world.image, "production") is None
