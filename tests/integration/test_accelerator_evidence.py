"""Where a test run ran is part of the evidence: a GPU spec's CPU run does not reach production.

`envctl test` of a spec that asks for an accelerator refuses on the local backend unless
`--allow-cpu` (then it runs for real on the CPU and says so); production refuses such
evidence unless `--force`, which the event records; a run on Vertex AI with the
accelerator is accepted; `describe` says where the deciding run ran.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import pytest
import yaml

from pipeline.ledger import db
from pipeline.ledger.db import TestRun, now, record_test_run
from tests import minirepo
from tests.helpers import envctl, error_lines, spec_yaml
from tests.integration.test_gcp_vertex import images  # noqa: F401  (a fixture: the test image)
from tests.integration.test_test_stage import World as NotebookWorld
from tests.integration.test_test_stage import make_world
from tests.minirepo import git
from tests.stageworld import World

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg", "tests.stagefixtures"]

ASKED = "1 x NVIDIA_TESLA_T4"
CPU = {"backend": "local", "machine": "cpu", "accelerator": None, "asked": ASKED}
GPU = {
    "backend": "vertex",
    "machine": "n1-standard-8",
    "accelerator": {"type": "NVIDIA_TESLA_T4", "count": 1},
    "asked": ASKED,
    "region": "europe-west4",
}


def evidence(world: World, name: str, ran_on: dict[str, object] | None) -> str:
    run_id = uuid.uuid4().hex
    record_test_run(
        world.ledger,
        TestRun(
            run_id=run_id,
            image=world.image,
            sha=world.sha[name],
            digest=world.digest[name],
            passed=True,
            summary={},
            artifacts="",
            started_at=now(),
            finished_at=now(),
            ran_on=ran_on,
        ),
    )
    return run_id


def test_production_refuses_cpu_evidence_for_a_gpu_spec_unless_forced(world: World) -> None:
    img = world.image
    cpu_run = evidence(world, "c1", CPU)
    refused = world.envctl("promote", f"{img}.production", "--rev", world.sha["c1"])
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line == (
        f"envctl: error: promotion of {world.sha['c1'][:12]} to {img}.production refused: the test run "
        f"{cpu_run} of {world.sha['c1'][:12]} ran on the CPU but its spec asks for {ASKED}; test it on "
        "Vertex AI (ENVCTL_BACKEND=gcp) first; --force overrides (and is recorded)"
    )
    assert world.pointer("production") is None

    forced = world.envctl(
        "promote", f"{img}.production", "--rev", world.sha["c1"], "--force", "--reason", "no T4 quota"
    )
    assert forced.returncode == 0, forced.stderr
    (event,) = [e for e in world.json("history", img) if e["environment"] == f"{img}.production"]
    assert event["reason"].startswith("no T4 quota [forced over: the test run ")
    assert "ran on the CPU but its spec asks for 1 x NVIDIA_TESLA_T4" in event["reason"]

    described = world.envctl("describe", f"{img}.production")
    assert described.returncode == 0, described.stderr
    assert f"ran on       local CPU, although the spec asks for {ASKED}" in described.stdout


GPU_SPEC = """\
cloud:
  machine_type: n1-standard-8
  accelerator: {type: NVIDIA_TESLA_T4, count: 1}
"""


def gpu_commit(world: World, name: str, like: str) -> None:
    """A commit on main whose spec asks for a T4, recorded as a version of `like`'s digest."""
    world.commit_spec(name, spec_yaml(world.image, GPU_SPEC), like)


def test_production_refuses_a_run_older_than_ran_on_for_a_gpu_spec_unless_forced(world: World) -> None:
    """A run recorded before envctl kept where runs ran (ran_on NULL) is no GPU evidence either."""
    img = world.image
    gpu_commit(world, "c4", like="c3")
    old_run = evidence(world, "c4", None)
    (run,) = db.test_runs_for(world.ledger, img, world.digest["c4"])
    assert run.ran_on is None
    refused = world.envctl("promote", f"{img}.production", "--rev", world.sha["c4"])
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line == (
        f"envctl: error: promotion of {world.sha['c4'][:12]} to {img}.production refused: the test run "
        f"{old_run} of {world.sha['c4'][:12]} does not record where it ran (it is that old) but its spec "
        f"asks for {ASKED}; test it on Vertex AI (ENVCTL_BACKEND=gcp) first; --force overrides (and is "
        "recorded)"
    )
    assert world.pointer("production") is None
    # The same old run of a commit whose spec asks for no accelerator still counts.
    evidence(world, "c3", None)
    assert world.envctl("promote", f"{img}.production", "--rev", world.sha["c3"]).returncode == 0

    forced = world.envctl(
        "promote", f"{img}.production", "--rev", world.sha["c4"], "--force", "--reason", "old"
    )
    assert forced.returncode == 0, forced.stderr
    events = [e for e in world.json("history", img) if e["environment"] == f"{img}.production"]
    assert [e for e in events if "does not record where it ran" in (e["reason"] or "")] != []
    assert world.pointer("production") == world.sha["c4"]


def test_a_vertex_run_with_the_accelerator_is_accepted_and_described(world: World) -> None:
    img = world.image
    evidence(world, "c2", GPU)
    moved = world.envctl("promote", f"{img}.production", "--rev", world.sha["c2"])
    assert moved.returncode == 0, moved.stderr
    described = world.envctl("describe", f"{img}.production")
    assert "ran on       Vertex AI n1-standard-8 + 1 x NVIDIA_TESLA_T4 (europe-west4)" in described.stdout
    data = world.json("describe", f"{img}.production")
    assert data["ran_on"] == GPU
    assert [e["ran_on"] for e in data["evidence"]] == [GPU]


def test_staging_takes_cpu_evidence(world: World) -> None:
    evidence(world, "c1", CPU)
    moved = world.envctl("promote", f"{world.image}.staging", "--rev", world.sha["c1"])
    assert moved.returncode == 0, moved.stderr


def gpu_spec_world(tmp_path: Path, image_ref: str) -> NotebookWorld:
    world = make_world(tmp_path, image_ref, ["passes.ipynb"])
    path = world.repo / "environments" / f"{world.image}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["cloud"] = {"machine_type": "n1-standard-8", "accelerator": {"type": "NVIDIA_TESLA_T4"}}
    path.write_text(yaml.safe_dump(spec))
    git(world.repo, "commit", "-q", "-am", "asks for a GPU")
    version = world.ledger().get_version(world.image, world.sha)
    assert version is not None
    world.sha = git(world.repo, "rev-parse", "HEAD")
    tree = git(world.repo, "rev-parse", "HEAD^{tree}")
    world.ledger().record_version(dataclasses.replace(version, sha=world.sha, tree=tree))
    return world


def test_locally_a_gpu_spec_runs_only_with_allow_cpu(images: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    world = gpu_spec_world(tmp_path, images["tests"])
    refused = world.test()
    errors = error_lines(refused, 2)
    assert errors == [
        f"envctl: error: {world.image} asks for an accelerator ({ASKED}) and the local backend has only the "
        "CPU; run it on Vertex AI (ENVCTL_BACKEND=gcp), or on the CPU with --allow-cpu"
    ]
    digest = images["tests"].split("@")[1]
    assert db.test_runs_for(world.ledger(), world.image, digest) == []

    ran = world.test("--allow-cpu", "--json")
    assert ran.returncode == 0, ran.stderr
    assert f"running {world.image}'s tests on the CPU although its spec asks for {ASKED}" in ran.stderr
    assert f"ran on: local CPU, although the spec asks for {ASKED}" in ran.stderr
    report = json.loads(ran.stdout)
    assert report["ran_on"]["backend"] == "local" and report["ran_on"]["asked"] == ASKED
    (run,) = db.test_runs_for(world.ledger(), world.image, digest)
    assert run.passed and run.ran_on == report["ran_on"]
    assert run.ran_on["accelerator"] is None


def test_the_pipelines_of_a_gpu_variant_record_cpu_and_production_refuses_it(tmp_path: Path) -> None:
    """The mini image with a GPU spec: staging on the CPU (--allow-cpu), production refused."""
    mini = minirepo.make(tmp_path)
    spec_path = f"environments/{mini.image}.yaml"
    spec = yaml.safe_load(mini.read(spec_path))
    spec["cloud"] = {"machine_type": "n1-standard-8", "accelerator": {"type": "NVIDIA_TESLA_T4", "count": 1}}
    mini.write(spec_path, yaml.safe_dump(spec))
    sha = mini.commit("the GPU variant")
    env = mini.env(tmp_path / "state")
    try:
        refused = envctl("pipeline", "run", "--branch", "staging", "--rev", sha, cwd=mini.path, env=env)
        assert refused.returncode == 1, refused.stderr
        assert "--allow-cpu" in refused.stdout

        staged = envctl(
            "pipeline", "run", "--branch", "staging", "--rev", sha, "--allow-cpu", cwd=mini.path, env=env
        )
        assert staged.returncode == 0, staged.stderr
        run_id = staged.stderr.split("pipeline ", 1)[1].split(":", 1)[0]
        shown = envctl("pipeline", "show", run_id, cwd=mini.path, env=env)
        assert shown.returncode == 0, shown.stderr
        assert f"on local CPU, although the spec asks for {ASKED}" in shown.stdout
        data = json.loads(envctl("pipeline", "show", run_id, "--json", cwd=mini.path, env=env).stdout)
        assert data["verdicts"][mini.image]["ran_on"]["asked"] == ASKED

        git(mini.path, "update-ref", "refs/heads/production", sha)
        production = envctl("pipeline", "run", "--branch", "production", "--rev", sha, cwd=mini.path, env=env)
        assert production.returncode == 1, production.stderr
        assert f"ran on the CPU but its spec asks for {ASKED}" in production.stdout
        status = json.loads(envctl("status", mini.image, "--json", cwd=mini.path, env=env).stdout)
        assert [e["stage"] for e in status if e["sha"]] == ["staging"]
    finally:
        minirepo.remove_local_images(f"localhost:5000/{mini.image}")
