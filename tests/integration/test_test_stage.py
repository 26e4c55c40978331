"""The test stage on the real stack: papermill in containers on the Docker Engine.

One image is built FROM the local base and pushed to the local registry; each test
makes a git repository with a spec and test notebooks from tests/data/notebooks,
records a version for its commit in a temporary ledger and runs `envctl test`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Error, Failure, JUnitXml

from pipeline import settings as settings_module
from pipeline import source
from pipeline.backends import ContextFile
from pipeline.build.engine import build, connect, context_tar, push
from pipeline.ledger import db as ledger_module
from pipeline.ledger.db import Ledger, Version, now
from pipeline.settings import Settings
from pipeline.source import GitTree
from pipeline.spec import model as spec_module
from pipeline.spec.model import Spec
from pipeline.testing import run_tests, tasks
from tests.helpers import BASE_IMAGE, DATA, envctl, interrupted, login
from tests.minirepo import git

pytestmark = pytest.mark.integration

BASE = BASE_IMAGE
NOTEBOOKS = DATA / "notebooks"


def make_image(client: Any, name: str, dockerfile: str) -> str:
    """Build a test image FROM the base, push it and return its `repo@sha256:...`."""
    repository = f"localhost:5000/envctl-test/{name}"
    tag = f"{repository}:{secrets.token_hex(4)}"
    context = context_tar({"Dockerfile": ContextFile((NOTEBOOKS / dockerfile).read_bytes())})
    build(
        client, context=context, dockerfile="Dockerfile", tag=tag, buildargs={"BASE_IMAGE": BASE}, labels={}
    )
    digest = push(client, tag, auth=login())
    client.images.remove(tag)
    return f"{repository}@{digest}"


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    client = connect()
    made: dict[str, str] = {}
    try:
        made["tests"] = make_image(client, "notebooks", "Dockerfile")
        made["no-papermill"] = make_image(client, "no-papermill", "Dockerfile.no-papermill")
        yield made
    finally:
        for ref in made.values():
            for image in client.images.list(name=ref.split("@")[0]):
                client.images.remove(image.id, force=True)
        client.close()


@dataclass
class World:
    """A repository with one image, its ledger and its artifacts folder."""

    repo: Path
    image: str
    sha: str
    state: Path

    def env(self) -> dict[str, str]:
        return {
            "ENVCTL_LEDGER_URL": f"sqlite:///{self.state / 'ledger.db'}",
            "ENVCTL_ARTIFACTS_DIR": str(self.state / "runs"),
        }

    def ledger(self) -> Ledger:
        return Ledger.open(self.env()["ENVCTL_LEDGER_URL"])

    def library(self) -> tuple[Settings, Spec, GitTree, Version]:
        """What `run_tests` takes, for tests that call the library."""
        settings = settings_module.load(repo=self.repo, env=self.env())
        tree = source.resolve(source.open_repo(self.repo), "staging")
        version = self.ledger().get_version(self.image, tree.sha)
        if version is None:
            raise LookupError(tree.sha)
        return settings, spec_module.load(tree, self.image), tree, version

    def record(self, image_ref: str) -> None:
        """Record the commit `sha` as a version whose image is `image_ref` (`repo@sha256:...`)."""
        self.ledger().record_version(
            Version(
                image=self.image,
                sha=self.sha,
                tree=git(self.repo, "rev-parse", f"{self.sha}^{{tree}}"),
                inputs_key="test",
                build_key="test",
                digest=image_ref.split("@")[1],
                image_ref=image_ref,
                size=None,
                reused_from=None,
                labels={},
                sbom={},
                created_at=now(),
            )
        )

    def test(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return envctl(
            "test", self.image, "--rev", "staging", *args, cwd=self.repo, env=self.env(), timeout=timeout
        )


def make_world(tmp_path: Path, image_ref: str, notebooks: list[str] | dict[str, str], **tests: Any) -> World:
    """`notebooks`: data file names, or {name in the repo: data file name}."""
    image = f"test.nb-{secrets.token_hex(4)}"
    repo = tmp_path / "repo"
    spec = {
        "image": image,
        "build": {
            "dockerfile": f"docker/{image}/Dockerfile",
            "context": f"docker/{image}",
            "base": {"local": BASE, "gcp": "example.invalid/base:1"},
        },
        "tests": {
            "notebooks": [f"test-notebooks/{image}/*.ipynb"],
            "timeout": 60,
            "resources": {"memory": "256m", "cpus": 1},
            **tests,
        },
    }
    (repo / "environments").mkdir(parents=True)
    (repo / "environments" / f"{image}.yaml").write_text(yaml.safe_dump(spec))
    (repo / "docker" / image).mkdir(parents=True)
    shutil.copyfile(NOTEBOOKS / "Dockerfile", repo / "docker" / image / "Dockerfile")
    (repo / "test-notebooks" / image).mkdir(parents=True)
    copies = notebooks if isinstance(notebooks, dict) else {n: n for n in notebooks}
    for name, data in copies.items():
        shutil.copyfile(NOTEBOOKS / data, repo / "test-notebooks" / image / name)
    git(repo, "init", "-q", "-b", "staging")
    git(repo, "config", "user.email", "owner@example.com")
    git(repo, "config", "user.name", "Image Owner")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "test notebooks")
    sha = git(repo, "rev-parse", "HEAD")
    world = World(repo=repo, image=image, sha=sha, state=tmp_path / "state")
    world.record(image_ref)
    return world


def containers_with(label: str) -> list[dict[str, Any]]:
    """Every container with the label, running or not, as the engine lists them."""
    client = connect()
    try:
        found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": label})
        return found
    finally:
        client.close()


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"].rsplit("/", 1)[-1]: r for r in report["results"]}


BAD = [
    "passes.ipynb",
    "fails.ipynb",
    "missing_module.ipynb",
    "malformed.ipynb",
    "no_parameters_cell.ipynb",
    "unknown_parameter.ipynb",
    "hangs.ipynb",
    "memory_hog.ipynb",
    "kills_kernel.ipynb",
    "sys_exit.ipynb",
]
SMOKE = ["python -c 'import json'", "python -c 'import pandas'", "no-such-program --version"]


@pytest.fixture(scope="module")
def bad_run(
    images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[World, subprocess.CompletedProcess[str], dict[str, Any]]:
    """One run of every bad notebook and smoke check, two containers at once."""
    world = make_world(
        tmp_path_factory.mktemp("bad"),
        images["tests"],
        BAD,
        timeout=8,
        parameters={"seed": 7},
        notebook_parameters={"unknown_parameter.ipynb": {"learning_rate": 0.1}},
        smoke=SMOKE,
    )
    result = world.test("--json", "--jobs", "2")
    return world, result, json.loads(result.stdout)


def test_bad_run_exits_1_with_one_error_line_and_leaves_no_container(bad_run: Any) -> None:
    world, result, report = bad_run
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("envctl: error: 9 of 13 tests failed")
    assert report["passed"] is False
    assert containers_with(f"org.envctl.run={report['run_id']}") == []
    assert containers_with(f"org.envctl.image={world.image}") == []


@pytest.mark.parametrize(
    ("notebook", "outcome", "cell", "line", "error", "hint"),
    [
        ("passes.ipynb", "passed", None, None, "", ""),
        ("fails.ipynb", "failed", 3, 2, "ZeroDivisionError: division by zero", "cell 3, line 2"),
        ("missing_module.ipynb", "missing_module", 2, 2, "No module named 'pandas'", "add pandas to docker/"),
        ("malformed.ipynb", "malformed", None, None, "is not valid JSON: line 4", "fix test-notebooks/"),
        ("no_parameters_cell.ipynb", "passed", None, None, "", ""),
        ("unknown_parameter.ipynb", "passed", None, None, "", ""),
        ("hangs.ipynb", "timeout", 2, 3, "longer than 8 s", "raise tests.timeout"),
        ("memory_hog.ipynb", "oom", 2, None, "out of memory (limit 256m)", "raise tests.resources.memory"),
        ("kills_kernel.ipynb", "kernel_died", 2, None, "the kernel died", "killed the kernel"),
        ("sys_exit.ipynb", "failed", 3, 2, "SystemExit: 1", "sys.exit(1)"),
    ],
)
def test_each_notebook_is_classified(
    bad_run: Any, notebook: str, outcome: str, cell: int | None, line: int | None, error: str, hint: str
) -> None:
    _, _, report = bad_run
    found = by_name(report)[notebook]
    assert found["outcome"] == outcome, found
    assert found["cell_index"] == cell
    assert found["line"] == line
    assert error in found["error"]
    assert hint in found["hint"]


def test_failure_names_the_source_line_and_the_dockerfile(bad_run: Any) -> None:
    world, _, report = bad_run
    results = by_name(report)
    assert results["fails.ipynb"]["source_line"] == "z = y / 0"
    assert results["missing_module.ipynb"]["hint"] == f"add pandas to docker/{world.image}/Dockerfile"


def test_parameter_warnings_and_injection(bad_run: Any) -> None:
    world, result, report = bad_run
    path = f"test-notebooks/{world.image}"
    assert f"warning: {path}/no_parameters_cell.ipynb has no cell tagged 'parameters'" in result.stderr
    assert f"warning: {path}/unknown_parameter.ipynb: unknown parameter learning_rate" in result.stderr
    assert len(report["warnings"]) == 2
    # Injected anyway: the notebook without a parameters cell printed the spec's seed.
    executed = json.loads((Path(report["artifacts"]) / "no_parameters_cell.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "seed is 7" in printed


def test_smoke_checks_are_reported_like_notebooks(bad_run: Any) -> None:
    _, _, report = bad_run
    smoke = {r["name"]: r for r in report["results"] if r["kind"] == "smoke"}
    assert smoke[f"smoke: {SMOKE[0]}"]["outcome"] == "passed"
    assert smoke[f"smoke: {SMOKE[1]}"]["outcome"] == "missing_module"
    assert "add pandas to docker/" in smoke[f"smoke: {SMOKE[1]}"]["hint"]
    assert smoke[f"smoke: {SMOKE[2]}"]["outcome"] == "failed"
    assert "no-such-program: command not found" in smoke[f"smoke: {SMOKE[2]}"]["error"]


def test_artifacts_executed_notebooks_html_junit_summary(bad_run: Any) -> None:
    world, _, report = bad_run
    run_dir = Path(report["artifacts"])
    assert run_dir == world.state / "runs" / report["run_id"]
    executed = json.loads((run_dir / "passes.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert any("seed 7" in "".join(o.get("text", "")) for o in outputs)
    assert executed["metadata"]["papermill"]["parameters"] == {"seed": 7}
    assert "seed 7" in (run_dir / "passes.html").read_text()
    # rendered on the host as the report renders it: the failing cell marked, the hint, no script
    failing = (run_dir / "fails.html").read_text()
    assert failing.count('id="failing-cell"') == 1 and "ZeroDivisionError" in failing
    assert 'class="hint"' in failing and "<script" not in failing
    assert not (run_dir / ".work").exists()
    assert not list(run_dir.rglob("*.tmp"))
    assert json.loads((run_dir / "summary.json").read_text())["run_id"] == report["run_id"]

    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    suite = next(iter(xml))
    cases = {case.name.rsplit("/", 1)[-1]: case for case in suite}
    assert len(cases) == 13
    assert suite.tests == 13
    assert suite.failures == 9
    assert cases["passes.ipynb"].is_passed
    failure = cases["fails.ipynb"].result[0]
    assert isinstance(failure, Failure)
    assert failure.type == "failed"
    assert "ZeroDivisionError" in (failure.message or "")
    assert isinstance(cases["memory_hog.ipynb"].result[0], Failure)
    assert not any(isinstance(r, Error) for c in cases.values() for r in c.result)


def test_run_is_recorded_as_evidence_for_the_digest(bad_run: Any, images: dict[str, str]) -> None:
    world, _, report = bad_run
    runs = ledger_module.test_runs_for(world.ledger(), world.image, images["tests"].split("@")[1])
    assert [r.run_id for r in runs] == [report["run_id"]]
    assert runs[0].passed is False
    assert runs[0].sha == world.sha
    assert runs[0].artifacts == report["artifacts"]


def test_passing_run_prints_a_table_and_exits_0(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(
        tmp_path, images["tests"], ["passes.ipynb"], parameters={"seed": 3}, smoke=["papermill --version"]
    )
    result = world.test()
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["NOTEBOOK", "RESULT", "DURATION", "CELL", "ERROR"]
    assert [re.split(r"\s{2,}", row)[:2] for row in rows] == [
        [f"test-notebooks/{world.image}/passes.ipynb", "passed"],
        ["smoke: papermill --version", "passed"],
    ]
    runs = ledger_module.test_runs_for(world.ledger(), world.image, images["tests"].split("@")[1])
    assert [r.passed for r in runs] == [True]
    assert containers_with(f"org.envctl.image={world.image}") == []


def test_notebook_can_write_beside_itself(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["tests"], ["writes_beside.ipynb"])
    result = world.test()
    assert result.returncode == 0, result.stdout + result.stderr
    assert containers_with(f"org.envctl.image={world.image}") == []


def test_notebooks_start_from_the_runs_bytecode_cache(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(
        tmp_path, images["tests"], {f"cached{i}.ipynb": "cached_start.ipynb" for i in range(2)}
    )
    settings, spec, tree, version = world.library()
    report = run_tests(settings, spec, tree, version, jobs=2)
    assert [r.verdict.outcome for r in report.results] == ["passed"] * 2
    for result in report.results:
        assert result.notebook is not None
        executed = json.loads((report.artifacts / result.notebook).read_text())
        (output,) = [o for c in executed["cells"] for o in c.get("outputs", [])]
        seen = json.loads("".join(output["text"]))
        # the kernel's modules came from the cache the warm-up filled; the notebook does not see it
        assert seen["kernel"].startswith("/envctl/pycache/") and seen["kernel"].endswith(".pyc")
        assert seen["prefix"] is None and seen["env"] is None
    assert containers_with(f"org.envctl.run={report.run_id}") == []


def test_a_notebook_can_not_change_the_cache_and_its_subprocesses_do_not_see_it(
    images: dict[str, str], tmp_path: Path
) -> None:
    world = make_world(tmp_path, images["tests"], ["pycache_guarded.ipynb"])
    settings, spec, tree, version = world.library()
    report = run_tests(settings, spec, tree, version)
    (result,) = report.results
    assert result.verdict.outcome == "passed", result.verdict
    assert result.notebook is not None
    executed = json.loads((report.artifacts / result.notebook).read_text())
    (output,) = [o for c in executed["cells"] for o in c.get("outputs", [])]
    seen = json.loads("".join(output["text"]))
    # mounted read-only, and read-only on the host too (folders 0555, files 0444)
    assert seen["tries"] == dict.fromkeys(["plant", "overwrite", "chmod", "remove"], "OSError"), seen
    assert seen["same"] is True and seen["files"] > 100
    assert seen["modes"] == ["0o444", "0o555"]
    assert seen["child"] == "None None"
    assert not (report.artifacts / ".work").exists()
    assert containers_with(f"org.envctl.run={report.run_id}") == []


def test_a_failed_warm_up_warns_and_the_notebooks_pass_without_the_cache(
    images: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warm-up's container leaves part of a cache, read-only, and exits 3.
    real = tasks.run_container

    def failing_warm_up(*args: Any, **kwargs: Any) -> Any:
        if kwargs["labels"].get("org.envctl.notebook") == "warm-up":
            kwargs["command"] = [
                "sh",
                "-c",
                "mkdir -p /envctl/pycache/x && echo partial > /envctl/pycache/x/partial.pyc"
                " && chmod 555 /envctl/pycache/x && echo gave up && exit 3",
            ]
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks, "run_container", failing_warm_up)
    world = make_world(
        tmp_path, images["tests"], {"cached.ipynb": "cached_start.ipynb", "passes.ipynb": "passes.ipynb"}
    )
    settings, spec, tree, version = world.library()
    said: list[str] = []
    report = run_tests(settings, spec, tree, version, on_warning=said.append)
    assert [r.verdict.outcome for r in report.results] == ["passed", "passed"]
    assert "the bytecode warm-up failed (exit 3: gave up); the notebooks run without the cache" in said
    cached = next(r for r in report.results if r.name.endswith("cached.ipynb"))
    assert cached.notebook is not None
    executed = json.loads((report.artifacts / cached.notebook).read_text())
    (output,) = [o for c in executed["cells"] for o in c.get("outputs", [])]
    seen = json.loads("".join(output["text"]))
    assert not str(seen["kernel"]).startswith("/envctl/pycache/")
    assert seen["prefix"] is None and seen["env"] is None
    assert not (report.artifacts / ".work").exists()
    assert containers_with(f"org.envctl.run={report.run_id}") == []


def test_containers_run_in_parallel_up_to_jobs(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["tests"], {f"sleeps{i}.ipynb": "sleeps.ipynb" for i in range(3)})
    settings, spec, tree, version = world.library()
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            live = [
                c
                for c in containers_with("org.envctl.run=parallel-" + world.image)
                if c["Labels"].get("org.envctl.notebook", "").endswith(".ipynb")
            ]
            seen.append(len(live))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = run_tests(settings, spec, tree, version, jobs=2, run_id="parallel-" + world.image)
    finally:
        done.set()
        watcher.join()
    assert [r.verdict.outcome for r in report.results] == ["passed"] * 3
    assert max(seen) == 2
    assert containers_with("org.envctl.run=parallel-" + world.image) == []


def test_outer_deadline_kills_a_hung_papermill(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["tests"], ["stuck_kernel.ipynb"], timeout=5)
    settings, spec, tree, version = world.library()
    # papermill alone would wait 60 s for the kernel; the outer deadline is 5 + 3 s.
    report = run_tests(settings, spec, tree, version, jobs=1, grace=3)
    (result,) = report.results
    assert result.verdict.outcome == "timeout"
    assert result.verdict.error == "still running after 8 s; killed"
    assert containers_with(f"org.envctl.run={report.run_id}") == []


def test_image_without_papermill(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["no-papermill"], ["passes.ipynb"])
    result = world.test("--json")
    assert result.returncode == 1, result.stderr
    (found,) = json.loads(result.stdout)["results"]
    assert found["outcome"] == "papermill_missing"
    assert "add papermill to docker/" in found["hint"]
    assert containers_with(f"org.envctl.image={world.image}") == []


def test_ctrl_c_removes_every_container(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["tests"], ["hangs.ipynb"], timeout=120)
    code, stderr = interrupted(
        "test",
        world.image,
        "--rev",
        "staging",
        cwd=world.repo,
        env=world.env(),
        ready=lambda: bool(containers_with(f"org.envctl.image={world.image}")),
        what="no container started",
    )
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert containers_with(f"org.envctl.image={world.image}") == []


def test_no_version_is_bad_input(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["tests"], ["passes.ipynb"])
    (world.repo / "README").write_text("more\n")
    git(world.repo, "add", "-A")
    git(world.repo, "commit", "-q", "-m", "unbuilt")
    result = world.test()
    assert result.returncode == 2
    assert (
        f"has no version for {git(world.repo, 'rev-parse', 'HEAD')[:12]}; run `envctl build {world.image} --rev staging` first"
        in result.stderr
    )


def test_one_container_per_run_when_the_spec_asks(images: dict[str, str], tmp_path: Path) -> None:
    names = ["passes.ipynb", "fails.ipynb", "memory_hog.ipynb", "hangs.ipynb", "writes_beside.ipynb"]
    world = make_world(tmp_path, images["tests"], names, isolation="run", timeout=8, parameters={"seed": 7})
    settings, spec, tree, version = world.library()
    run_id = "shared-" + world.image
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(
                c["Id"]
                for c in containers_with(f"org.envctl.run={run_id}")
                if "shared" in c["Labels"].get("org.envctl.notebook", "")
            )
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = run_tests(settings, spec, tree, version, jobs=2, run_id=run_id)
    finally:
        done.set()
        watcher.join()
    outcomes = {r.name.rsplit("/", 1)[-1]: r.verdict.outcome for r in report.results}
    assert outcomes == {
        "passes.ipynb": "passed",
        "fails.ipynb": "failed",
        "memory_hog.ipynb": "oom",
        "hangs.ipynb": "timeout",
        "writes_beside.ipynb": "passed",
    }
    # one container served the notebooks (the memory hog's kernel died, the container lived on)
    assert len(seen) == 1
    for result in report.results:
        assert result.notebook and (report.artifacts / result.notebook).is_file()
        assert result.html and (report.artifacts / result.html).is_file()
        assert result.log and (report.artifacts / result.log).is_file()
    assert (
        "seed 7"
        in (
            report.artifacts
            / next(r.html for r in report.results if r.name.endswith("passes.ipynb") and r.html)
        ).read_text()
    )
    assert containers_with(f"org.envctl.run={run_id}") == []
