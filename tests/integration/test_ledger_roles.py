"""Least privilege on PostgreSQL (pipeline/ledger/roles.sql), on the real database.

The role the staging trigger uses moves staging; it cannot move production or
fallback, pin them, or rewrite any event, version or test run. The production role can
move every stage. Each command runs the real `envctl` with the role's URL (no password
in it) and its password in ENVCTL_LEDGER_PASSWORD, as a Cloud Build trigger does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import envctl
from tests.stageworld import World, make_world

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]

ROLES_SQL = resources.files("pipeline.ledger").joinpath("roles.sql").read_text()


class Role:
    def __init__(self, world: World, name: str, password: str) -> None:
        self.world, self.name, self.password = world, name, password
        self.url = make_url(world.ledger_url)._replace(username=name, password=None).render_as_string()

    def envctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.world.env, "ENVCTL_LEDGER_URL": self.url, "ENVCTL_LEDGER_PASSWORD": self.password}
        return envctl(*args, cwd=self.world.repo, env=env)

    def sql(self, statement: str) -> None:
        url = make_url(self.url).set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(), password=self.password, autocommit=True) as conn:
            conn.execute(statement)


def snapshot(world: World) -> tuple[Any, Any]:
    """The ledger's pointers and events, read with the owner's URL."""
    return world.json("status", world.image), world.json("history", world.image)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode in {1, 3}, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envctl: error: "), lines
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def roles(
    tmp_path: Path, postgres_url: str, marker_images: list[str], login_role: Callable[..., tuple[str, str]]
) -> tuple[World, Role, Role]:
    from tests.pg import superuser_sql  # here: tests.pg is a plugin, imported by pytest first

    world = make_world(tmp_path, postgres_url, marker_images)  # the owner makes the schema
    superuser_sql(postgres_url, ROLES_SQL)
    superuser_sql(postgres_url, ROLES_SQL)  # applying it again changes nothing
    for name in ("c2", "c3"):
        world.evidence(name, passed=True)
    staging = Role(world, *login_role("envctl_staging"))
    production = Role(world, *login_role("envctl_production"))
    return world, staging, production


def test_the_staging_role_moves_staging_but_never_production(roles: tuple[World, Role, Role]) -> None:
    world, staging, production = roles
    img = world.image
    moved = staging.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"])
    assert moved.returncode == 0, moved.stderr
    assert world.pointer("staging") == world.sha["c2"]

    before = snapshot(world)
    line = refused(staging.envctl("promote", f"{img}.production", "--rev", world.sha["c2"]))
    assert f"role {staging.name}" in line and "row-level security" in line and "nothing was changed" in line
    assert snapshot(world) == before

    # With production set (by its own role), the staging role can't update its row either.
    assert production.envctl("promote", f"{img}.production", "--rev", world.sha["c2"]).returncode == 0
    assert production.envctl("promote", f"{img}.production", "--rev", world.sha["c3"]).returncode == 0
    before = snapshot(world)
    assert before[0] and {e["stage"] for e in before[0]} == {"staging", "production", "fallback"}
    for attempt in (
        ("promote", f"{img}.production", "--rev", world.sha["c2"]),
        ("rollback", img),
        ("pin", f"{img}.production", "--reason", "held by staging"),
        ("pin", f"{img}.fallback", "--reason", "held by staging"),
    ):
        refused(staging.envctl(*attempt))
        assert snapshot(world) == before, attempt

    # Nor around envctl, straight in SQL: history and evidence are never rewritten.
    for statement in (
        "UPDATE events SET reason = 'forged'",
        "DELETE FROM events",
        "UPDATE environments SET stage = 'staging' WHERE stage = 'production'",
        f"UPDATE environments SET sha = '{world.sha['side']}' WHERE stage = 'production'",
        "DELETE FROM environments",
        f"INSERT INTO events (at, image, stage, action, actor, forced) "
        f"VALUES (now(), '{img}', 'production', 'promote', 'x', false)",
        "UPDATE test_runs SET passed = true",
        "UPDATE versions SET digest = 'sha256:forged'",
        "DELETE FROM versions",
        "UPDATE schema_version SET version = 0",
        "UPDATE signoffs SET actor = 'forged'",
        "DELETE FROM signoffs",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            staging.sql(statement)
    assert snapshot(world) == before

    # A version's pruned mark is the one column of it a writer changes: staging only clears
    # it (a rebuild); marking one pruned (`envctl prune`) takes the production role.
    staging.sql("UPDATE versions SET pruned_at = NULL")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        staging.sql("UPDATE versions SET pruned_at = now()")

    # Staging still moves, and pins its own environment; it does not sign off (testers do).
    assert staging.envctl("promote", f"{img}.staging", "--rev", world.sha["c3"]).returncode == 0
    assert staging.envctl("pin", f"{img}.staging", "--reason", "freeze").returncode == 0
    refused(staging.envctl("signoff", f"{img}.staging"))
    assert world.json("status", img)[0]["signoffs"] == []


def test_the_tester_role_only_signs_off(
    roles: tuple[World, Role, Role], login_role: Callable[..., tuple[str, str]]
) -> None:
    world, staging, _production = roles
    img = world.image
    assert staging.envctl("promote", f"{img}.staging", "--rev", world.sha["c2"]).returncode == 0
    tester = Role(world, *login_role("envctl_tester"))
    signed = tester.envctl("signoff", f"{img}.staging", "--rev", world.sha["c2"][:12])
    assert signed.returncode == 0, signed.stderr
    assert world.json("status", img)[0]["signoffs"] == ["Image Owner"]  # git user.name
    before = snapshot(world)
    for attempt in (
        ("promote", f"{img}.staging", "--rev", world.sha["c3"]),
        ("pin", f"{img}.staging", "--reason", "held by a tester"),
    ):
        refused(tester.envctl(*attempt))
        assert snapshot(world) == before, attempt
    for statement in (
        "UPDATE signoffs SET actor = 'forged'",
        "DELETE FROM signoffs",
        f"INSERT INTO events (at, image, stage, action, actor, forced) "
        f"VALUES (now(), '{img}', 'staging', 'promote', 'x', false)",
        "UPDATE environments SET pinned = true",
        "UPDATE versions SET pruned_at = now()",
        "INSERT INTO test_runs (run_id) VALUES ('forged')",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            tester.sql(statement)
    assert snapshot(world) == before


def test_the_production_role_promotes_and_rolls_back(roles: tuple[World, Role, Role]) -> None:
    world, _staging, production = roles
    img = world.image
    for rev in ("c2", "c3"):
        result = production.envctl("promote", f"{img}.production", "--rev", world.sha[rev])
        assert result.returncode == 0, result.stderr
    assert production.envctl("rollback", img).returncode == 0
    status = {e["stage"]: e["sha"] for e in world.json("status", img)}
    assert status == {"production": world.sha["c2"], "fallback": world.sha["c2"]}
    events = world.json("history", img)
    assert [(e["stage"], e["action"]) for e in events][-1] == ("production", "rollback")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        production.sql("DELETE FROM events")
    # `envctl prune` (production role) marks versions pruned, and a rebuild clears the mark.
    production.sql("UPDATE versions SET pruned_at = now()")
    production.sql("UPDATE versions SET pruned_at = NULL")
    assert json.dumps(world.json("history", img)) == json.dumps(events)
