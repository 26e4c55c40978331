"""Pipelines and hooks: real `git push` into a bare repository with the envctl hook."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.build.engine import connect
from pipeline.ledger import db as ledger_module
from pipeline.ledger.db import Ledger
from pipeline.pipelines.records import listing
from pipeline.publish.oci import Registry
from pipeline.testing.runner import RUN_LABEL
from tests import minirepo
from tests.helpers import ENVCTL, cli_env, envctl

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg"]


@dataclass
class World:
    mini: minirepo.MiniRepo
    bare: Path
    env: dict[str, str]

    def push(self, *refspecs: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(self.mini.path), "push", "origin", *refspecs],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **self.env},
            check=False,
        )

    def envctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return envctl(*args, cwd=self.mini.path, env=self.env)

    def status(self) -> dict[str, dict[str, object]]:
        result = self.envctl("status", self.mini.image, "--json")
        assert result.returncode == 0, result.stderr
        return {row["stage"]: row for row in json.loads(result.stdout)}

    def ledger(self) -> Ledger:
        return Ledger.open(
            self.env.get("ENVCTL_LEDGER_URL") or f"sqlite:///{self.env['ENVCTL_STATE_DIR']}/ledger.db"
        )


def _world(tmp_path: Path, *, wait: bool) -> World:
    mini = minirepo.make(tmp_path)
    bare = tmp_path / "images.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "staging", str(bare)], check=True)
    minirepo.git(mini.path, "remote", "add", "origin", str(bare))
    env = {"ENVCTL_STATE_DIR": str(tmp_path / "state"), "ENVCTL_ACTOR": "tester"}
    args = ["hooks", "install", str(bare)] + (["--wait"] if wait else [])
    installed = envctl(*args, cwd=mini.path, env=env)
    assert installed.returncode == 0, installed.stderr
    return World(mini, bare, env)


def _cleanup(world: World) -> None:
    client = connect()
    for image in client.images.list(name=f"localhost:5000/{world.mini.image}"):
        for tag in image.tags:
            client.images.remove(tag, force=True)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = _world(tmp_path, wait=True)
    try:
        yield w
    finally:
        _cleanup(w)


def test_push_to_staging_then_merge_to_production(world: World) -> None:
    first = minirepo.git(world.mini.path, "rev-parse", "HEAD")
    pushed = world.push("staging")
    assert pushed.returncode == 0, pushed.stderr
    assert f"{world.mini.image}  promoted  staging := {first[:12]}" in pushed.stderr
    assert world.status()["staging"]["sha"] == first

    merged = world.push("staging:production")
    assert "production :=" in merged.stderr
    envs = world.status()
    assert envs["production"]["sha"] == first
    assert envs["production"]["digest"] == envs["staging"]["digest"]
    manifest = Registry("localhost:5000").manifest(world.mini.image, "production")
    assert manifest is not None and manifest.digest == envs["production"]["digest"]

    # A second change goes through staging, then production keeps the first as fallback.
    world.mini.write("docker/__IMAGE__/greeting.py", "print('hi again')\n")
    world.mini.write(
        "test-notebooks/__IMAGE__/greet.ipynb",
        world.mini.read("test-notebooks/__IMAGE__/greet.ipynb").replace(
            "expected = 'hello'", "expected = 'hello'  # again"
        ),
    )
    second = world.mini.commit("second version")
    world.push("staging")
    world.push("staging:production")
    envs = world.status()
    assert envs["production"]["sha"] == second
    assert envs["fallback"]["sha"] == first
    assert envs["fallback"]["digest"] != envs["production"]["digest"]


def test_rerun_for_a_done_sha_does_nothing(world: World) -> None:
    assert world.push("staging").returncode == 0
    sha = minirepo.git(world.mini.path, "rev-parse", "HEAD")
    ledger = world.ledger()
    version = ledger.get_version(world.mini.image, sha)
    assert version is not None
    runs_before = len(ledger_module.test_runs_for(ledger, world.mini.image, version.digest))

    again = world.envctl("pipeline", "run", "--branch", "staging", "--rev", sha, "--json")

    assert again.returncode == 0, again.stderr
    record = json.loads(again.stdout)
    assert record["state"] == "noop"
    assert record["verdicts"][world.mini.image]["state"] == "noop"
    assert record["verdicts"][world.mini.image]["built"] is None
    assert "building" not in again.stderr
    assert len(ledger_module.test_runs_for(ledger, world.mini.image, version.digest)) == runs_before
    assert listing(ledger, 1)[0].state == "noop"


def test_failing_notebook_leaves_staging_and_names_the_cell(world: World) -> None:
    first = minirepo.git(world.mini.path, "rev-parse", "HEAD")
    world.push("staging")
    world.mini.write(
        "test-notebooks/__IMAGE__/greet.ipynb",
        world.mini.read("test-notebooks/__IMAGE__/greet.ipynb").replace(
            "expected = 'hello'", "expected = 'bye'"
        ),
    )
    broken = world.mini.commit("break the test")
    pushed = world.push("staging")
    assert "FAIL test-notebooks/" in pushed.stderr
    assert "AssertionError" in pushed.stderr
    assert "cell 1" in pushed.stderr
    assert world.status()["staging"]["sha"] == first
    run = listing(world.ledger(), 1)[0]
    assert run.sha == broken and run.state == "failed"

    # The broken commit reused the first digest: its failure counts against it, not the first.
    refused = world.envctl("promote", f"{world.mini.image}.production", "--rev", broken)
    assert refused.returncode == 1, refused.stderr
    assert "failed" in refused.stderr
    allowed = world.envctl("promote", f"{world.mini.image}.production", "--rev", first)
    assert allowed.returncode == 0, allowed.stderr


def test_production_refuses_an_untested_tree(world: World) -> None:
    world.push("staging")
    minirepo.git(world.mini.path, "checkout", "-q", "-b", "production")
    world.mini.write("docker/__IMAGE__/greeting.py", "print('untested')\n")
    untested = world.mini.commit("straight to production")
    pushed = world.push("production")
    assert "refused" in pushed.stderr
    assert "never tested" in pushed.stderr
    assert f"git push origin {untested[:12]}:staging" in pushed.stderr
    assert world.status().get("production", {}).get("sha") is None

    by_hand = world.envctl("pipeline", "run", "--branch", "production", "--rev", untested)
    assert by_hand.returncode == 1
    assert by_hand.stderr.strip().splitlines()[-1].startswith("envctl: error: pipeline ")


def test_other_branches_and_shell_metacharacters_are_ignored(world: World, tmp_path: Path) -> None:
    evil = "x;touch${IFS}PWNED$(touch${IFS}PWNED2)"
    pushed = world.push("HEAD:refs/heads/feature", f"HEAD:refs/heads/{evil}")
    assert pushed.returncode == 0, pushed.stderr
    said = [line for line in pushed.stderr.splitlines() if "no pipeline for" in line]
    assert len(said) == 1
    assert "refs/heads/feature" in said[0] and evil in said[0]
    for folder in (world.bare, world.mini.path, tmp_path, Path.cwd()):
        assert not (folder / "PWNED").exists() and not (folder / "PWNED2").exists()
    assert listing(world.ledger(), 5) == []


def test_invalid_spec_fails_that_image_only(world: World) -> None:
    other = "test.other-" + world.mini.image.rsplit("-", 1)[1]
    for relative in (
        "docker/__IMAGE__/Dockerfile",
        "docker/__IMAGE__/greeting.py",
        "test-notebooks/__IMAGE__/greet.ipynb",
    ):
        target = world.mini.path / relative.replace("__IMAGE__", other)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(world.mini.read(relative))
    spec = world.mini.read("environments/__IMAGE__.yaml").replace(world.mini.image, other)
    (world.mini.path / "environments" / f"{other}.yaml").write_text(
        spec.replace("timeout: 60", "timeout: -1")
    )
    sha = world.mini.commit("a second image with a bad spec")
    try:
        result = world.envctl("pipeline", "run", "--branch", "staging", "--rev", sha, "--json")
        assert result.returncode == 1
        verdicts = json.loads(result.stdout)["verdicts"]
        assert verdicts[other]["state"] == "invalid"
        assert "tests.timeout" in verdicts[other]["detail"]
        assert verdicts[world.mini.image]["state"] == "promoted"
    finally:
        client = connect()
        for image in client.images.list(name=f"localhost:5000/{other}"):
            for tag in image.tags:
                client.images.remove(tag, force=True)


def test_killed_run_is_marked_and_its_containers_removed(world: World) -> None:
    from pipeline.pipelines import records as runs

    ledger = world.ledger()
    dead = subprocess.Popen(["true"])
    dead.wait()
    runs.start(
        ledger, run_id="pkilled-1", branch="staging", sha="0" * 40, log=Path("/dev/null"), trigger="test"
    )
    from pipeline.ledger.db import pipeline_runs

    with ledger.transaction() as conn:
        conn.execute(pipeline_runs.update().where(pipeline_runs.c.run_id == "pkilled-1").values(pid=dead.pid))
    client = connect()
    leftover = client.containers.create(
        "localhost:5000/dlc/base-cpu:local",
        ["sleep", "300"],
        labels={RUN_LABEL: "pkilled-1.some-image"},
        network_mode="none",
    )
    try:
        result = world.envctl("pipeline", "run", "--branch", "staging", "--rev", "staging")
        assert result.returncode == 0, result.stderr
        assert "pipeline pkilled-1 was killed before it finished; marked failed" in result.stderr
        killed = runs.get(ledger, "pkilled-1")
        assert killed.state == "failed"
        assert killed.verdicts["_"] == "the run was killed before it finished"
        assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}=pkilled-1.some-image"}) == []
    finally:
        with contextlib.suppress(Exception):
            leftover.remove(force=True)


def test_two_runs_for_one_image_queue(world: World, ledger_url: str) -> None:
    # SQLite ledger: a file lock on this host; PostgreSQL: an advisory lock across hosts.
    world.env["ENVCTL_LEDGER_URL"] = ledger_url
    sha = minirepo.git(world.mini.path, "rev-parse", "HEAD")
    argv = ["pipeline", "run", "--branch", "staging", "--rev", sha, "--json"]

    procs = [
        subprocess.Popen(
            [*ENVCTL, *argv],
            cwd=world.mini.path,
            env=cli_env(world.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    states = sorted(json.loads(out)["verdicts"][world.mini.image]["state"] for out, _ in outputs)
    assert states == ["noop", "promoted"]
    history = json.loads(world.envctl("history", f"{world.mini.image}.staging", "--json").stdout)
    assert len(history) == 1


def test_a_run_waits_while_another_holds_the_image(world: World, ledger_url: str, tmp_path: Path) -> None:
    from pipeline.pipelines.flows import image_lock
    from pipeline.settings import load

    world.env["ENVCTL_LEDGER_URL"] = ledger_url
    settings = load(repo=world.mini.path, env=world.env)
    ledger = Ledger.open(ledger_url)
    log = tmp_path / "waiting.out"
    env = cli_env(world.env)
    with image_lock(settings, ledger, world.mini.image), open(log, "w") as out:
        process = subprocess.Popen(
            [
                *ENVCTL,
                "pipeline",
                "run",
                "--branch",
                "staging",
                "--rev",
                "staging",
            ],
            cwd=world.mini.path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "waiting for it" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "another pipeline holds this image; waiting for it" in log.read_text()
        time.sleep(1)
        assert process.poll() is None, "the run went on while the image was held"
        from pipeline.ledger.pointers import current

        pointer = current(ledger, world.mini.image, "staging")
        assert pointer is None or pointer.sha is None
    assert process.wait(timeout=300) == 0, log.read_text()
    assert world.status()["staging"]["sha"] == minirepo.git(world.mini.path, "rev-parse", "HEAD")


def test_engine_unavailable_fails_the_run_with_exit_3(world: World, tmp_path: Path) -> None:
    env = {**world.env, "ENVCTL_DOCKER_HOST": f"unix://{tmp_path}/gone.sock"}
    result = envctl(
        "pipeline", "run", "--branch", "staging", "--rev", "staging", cwd=world.mini.path, env=env
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    run = listing(world.ledger(), 1)[0]
    assert run.state == "failed"
    assert run.verdicts[world.mini.image]["state"] == "error"


def test_hook_without_wait_queues_the_run(tmp_path: Path) -> None:
    world = _world(tmp_path, wait=False)
    try:
        started = time.monotonic()
        pushed = world.push("staging")
        assert pushed.returncode == 0
        queued = [line for line in pushed.stderr.splitlines() if "queued; log:" in line]
        assert len(queued) == 1, pushed.stderr
        run_id = queued[0].split("pipeline ", 1)[1].split(" ", 1)[0]
        log = Path(queued[0].rsplit("log: ", 1)[1].strip())
        deadline = started + 300
        state = "running"
        while time.monotonic() < deadline:
            shown = world.envctl("pipeline", "show", run_id, "--json")
            if shown.returncode == 0 and json.loads(shown.stdout)["state"] != "running":
                state = json.loads(shown.stdout)["state"]
                break
            time.sleep(2)
        assert state == "passed", log.read_text() if log.exists() else "no log"
        assert "promoted" in log.read_text()
        assert world.status()["staging"]["sha"] == minirepo.git(world.mini.path, "rev-parse", "HEAD")
    finally:
        _cleanup(world)
        shutil.rmtree(tmp_path / "state", ignore_errors=True)


def test_engine_going_down_mid_build_fails_the_run_cleanly(world: World, tmp_path: Path) -> None:
    from tests.sockproxy import SocketProxy

    # A slow step so the engine can vanish while the build runs.
    world.mini.write(
        "docker/__IMAGE__/Dockerfile", world.mini.read("docker/__IMAGE__/Dockerfile") + "RUN sleep 20\n"
    )
    sha = world.mini.commit("a slow build")
    proxy = SocketProxy(tmp_path / "engine.sock")
    env = cli_env(world.env)
    env["ENVCTL_DOCKER_HOST"] = proxy.url
    log = tmp_path / "run.out"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                *ENVCTL,
                "pipeline",
                "run",
                "--branch",
                "staging",
                "--rev",
                sha,
            ],
            cwd=world.mini.path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while "RUN sleep 20" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "RUN sleep 20" in log.read_text(), log.read_text()
        proxy.cut()
        code = process.wait(timeout=120)
    text = log.read_text()
    assert code == 3, text
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1].startswith("envctl: error: pipeline ")
    run = listing(world.ledger(), 1)[0]
    assert run.state == "failed"
    assert run.verdicts[world.mini.image]["state"] == "error"
    assert "Docker Engine" in run.verdicts[world.mini.image]["detail"]
    assert world.ledger().get_version(world.mini.image, sha) is None
