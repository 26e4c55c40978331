"""The repository's example image, built for real, tested on Vertex AI (the fakes) with a GPU spec.

A git repo holds a copy of environments/nlp.keras-batch.yaml (with a GPU `cloud` section),
docker/nlp.keras-batch/ and test-notebooks/nlp.keras-batch/. `envctl build` builds and
pushes it with the local backend; that version is recorded for a gcp ledger under its
Artifact Registry name (same digest; the fake Vertex pulls it back from localhost:5000),
and `envctl test` on the gcp backend runs one custom job per notebook and smoke check
through the real aiplatform and storage clients against tests/gcpfakes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("google.cloud.aiplatform_v1")

from google.cloud import aiplatform_v1 as aip

from pipeline.build.engine import connect
from pipeline.ledger import db
from tests.gcpfakes.aiplatform import FAKE_LABEL, FakeVertex
from tests.gcpfakes.storage import FakeStorage
from tests.helpers import copy_example, envctl
from tests.integration.test_gcp_vertex import (
    BUCKET,
    RAN_ON_T4,
    RAN_ON_T4_SAID,
    REGISTRY,
    gcp_test,
    on_artifact_registry,
    vertex_fakes,
)
from tests.integration.test_test_stage import World, by_name, containers_with
from tests.minirepo import git

pytestmark = pytest.mark.integration

IMAGE = "nlp.keras-batch"
ACCOUNT = "notebook-tests@proj.iam.gserviceaccount.com"
GPU = {
    "machine_type": "n1-standard-8",
    "accelerator": {"type": "nvidia-tesla-t4", "count": 1},
    "service_account": ACCOUNT,
    "timeout": 900,
}
NOTEBOOKS = ["fit.ipynb", "imports.ipynb", "text.ipynb"]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, World, dict[str, Any]]]:
    """The example repo with a GPU spec, built locally once; a gcp world holding its AR version.

    Yields (local world, gcp world, the build's JSON). Only the tag this build made (its
    own commit's) is removed afterwards, never the image by ID: the bytes may be shared.
    """
    tmp_path = tmp_path_factory.mktemp("example")
    repo = copy_example(tmp_path / "repo")
    path = repo / "environments" / f"{IMAGE}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["cloud"] = GPU
    path.write_text(yaml.safe_dump(spec))
    git(repo, "init", "-q", "-b", "staging")
    git(repo, "config", "user.email", "owner@example.com")
    git(repo, "config", "user.name", "Image Owner")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "example image with a GPU for its tests")
    sha = git(repo, "rev-parse", "HEAD")
    local = World(repo=repo, image=IMAGE, sha=sha, state=tmp_path / "local")
    try:
        built = envctl("build", IMAGE, "--rev", "staging", "--json", "--quiet", cwd=repo, env=local.env())
        assert built.returncode == 0, built.stderr
        report = json.loads(built.stdout)
        version = local.ledger().get_version(IMAGE, sha)
        assert version is not None and version.image_ref.startswith(f"localhost:5000/{IMAGE}@sha256:")
        gcp = World(repo=repo, image=IMAGE, sha=sha, state=tmp_path / "gcp")
        gcp.ledger().record_version(
            dataclasses.replace(version, image_ref=on_artifact_registry(version.image_ref))
        )
        yield local, gcp, report
    finally:
        client = connect()
        with contextlib.suppress(Exception):
            client.images.remove(f"localhost:5000/{IMAGE}:{sha}")
        client.close()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeVertex, FakeStorage]]:
    with vertex_fakes() as both:
        yield both


def test_the_example_image_with_a_gpu_spec_passes_on_vertex_ai(
    example: tuple[World, World, dict[str, Any]],
    fakes: tuple[FakeVertex, FakeStorage],
) -> None:
    local, gcp, built = example
    vertex, storage = fakes
    version = gcp.ledger().get_version(IMAGE, gcp.sha)
    assert version is not None
    assert version.digest == built["digest"]
    ref = version.image_ref
    assert ref == f"{REGISTRY}/{IMAGE}@{built['digest']}"

    result = gcp_test(gcp, vertex, storage, "--json", "--jobs", "2", timeout=1200)
    vertex.wait_all()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    run_id = report["run_id"]
    assert report["digest"] == built["digest"]

    # Every notebook and smoke check passed, classified from what came back.
    found = by_name(report)
    assert sorted(found) == sorted(
        [*NOTEBOOKS, 'smoke: python -c "import sklearn, pandas"', "smoke: papermill --version"]
    )
    assert {name: r["outcome"] for name, r in found.items()} == dict.fromkeys(found, "passed")

    # One custom job per notebook (and per smoke check), each the GPU machine, by digest.
    created = vertex.created()
    assert len(created) == 5
    assert {vertex.state_of(name) for name in vertex.jobs} == {"JOB_STATE_SUCCEEDED"}
    assert containers_with(FAKE_LABEL) == []
    for job in created:
        (pool,) = job.job_spec.worker_pool_specs
        assert pool.machine_spec.machine_type == "n1-standard-8"
        assert pool.machine_spec.accelerator_type == aip.AcceleratorType.NVIDIA_TESLA_T4
        assert pool.machine_spec.accelerator_count == 1
        assert pool.container_spec.image_uri == ref
        assert job.job_spec.service_account == ACCOUNT
        assert job.job_spec.scheduling.timeout.total_seconds() == 900
        assert job.labels["envctl-run"] == run_id.lower()
    notebook_jobs = {
        j.display_name.rsplit("/", 1)[-1]: j for j in created if j.display_name.endswith(".ipynb")
    }
    assert sorted(notebook_jobs) == NOTEBOOKS
    prefix = f"/gcs/{BUCKET}/runs/{run_id}"
    artifacts = Path(report["artifacts"])
    for name, job in notebook_jobs.items():
        assert job.display_name == f"envctl {IMAGE} test-notebooks/{IMAGE}/{name}"
        spec = job.job_spec
        index = spec.base_output_directory.output_uri_prefix.rstrip("/").rsplit("/", 1)[-1]
        expected = {"seed": 7, "min_accuracy": 0.9} if name == "fit.ipynb" else {"seed": 7}
        args = list(spec.worker_pool_specs[0].container_spec.args)
        assert args == [
            "papermill",
            f"{prefix}/in/{name}",
            f"{prefix}/jobs/{index}/{name}",
            "-y",
            json.dumps(expected, sort_keys=True),
            "-k",
            "python3",
            "--execution-timeout",
            "300",
            "--cwd",
            "/tmp/envctl/cwd",
            "--log-output",
            "--no-progress-bar",
        ]
        # The job wrote its executed notebook to Cloud Storage; envctl downloaded it byte for byte.
        written = storage.data(BUCKET, f"runs/{run_id}/jobs/{index}/{name}")
        assert written is not None
        executed = json.loads(written)
        assert executed["metadata"]["papermill"]["parameters"] == expected
        assert executed["metadata"]["papermill"]["exception"] in (None, False)
        assert (artifacts / name).read_bytes() == written
        log = storage.data(BUCKET, f"runs/{run_id}/logs/{Path(name).with_suffix('.log')}")
        assert log is not None and (artifacts / Path(name).with_suffix(".log")).read_bytes() == log
    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["run_id"] == run_id
    assert report["artifacts_url"] == f"gs://{BUCKET}/runs/{run_id}/"

    # Where it ran, in the report and in the evidence the ledger keeps for the digest.
    assert report["ran_on"] == RAN_ON_T4
    assert RAN_ON_T4_SAID in result.stderr
    (run,) = db.test_runs_for(gcp.ledger(), IMAGE, built["digest"])
    assert run.run_id == run_id and run.passed is True
    assert run.ran_on == report["ran_on"]
    assert run.artifacts == f"gs://{BUCKET}/runs/{run_id}/"
    # The local world's ledger saw only the build.
    assert db.test_runs_for(local.ledger(), IMAGE, built["digest"]) == []


def test_a_notebook_of_the_example_that_fails_on_vertex_ai_is_classified_at_its_cell(
    example: tuple[World, World, dict[str, Any]],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    """The same image (no second build) at a commit that asks fit.ipynb for more than it reaches."""
    local, _, built = example
    vertex, storage = fakes
    repo = tmp_path / "repo"
    git(local.repo, "clone", "-q", "-b", "staging", str(local.repo), str(repo))
    git(repo, "config", "user.email", "owner@example.com")
    git(repo, "config", "user.name", "Image Owner")
    path = repo / "environments" / f"{IMAGE}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["tests"]["notebook_parameters"]["fit.ipynb"]["min_accuracy"] = 1.01
    path.write_text(yaml.safe_dump(spec))
    git(repo, "commit", "-q", "-am", "fit.ipynb asks for more than it can reach")
    sha = git(repo, "rev-parse", "HEAD")
    world = World(repo=repo, image=IMAGE, sha=sha, state=tmp_path / "gcp")
    version = local.ledger().get_version(IMAGE, local.sha)
    assert version is not None
    world.ledger().record_version(
        dataclasses.replace(
            version,
            sha=sha,
            tree=git(repo, "rev-parse", "HEAD^{tree}"),
            image_ref=on_artifact_registry(version.image_ref),
        )
    )

    result = gcp_test(world, vertex, storage, "--json", "--jobs", "2", timeout=1200)
    vertex.wait_all()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"envctl: error: 1 of 5 tests failed for {IMAGE} at {sha[:12]}"
    )
    found = by_name(json.loads(result.stdout))
    fit = found.pop("fit.ipynb")
    assert fit["outcome"] == "failed", fit
    assert fit["error"].startswith("AssertionError: accuracy ") and fit["error"].endswith(" is below 1.01")
    # The source notebook's last cell (markdown, parameters, fit, assert), as the local runner says it.
    assert (fit["cell_index"], fit["line"]) == (3, 1)
    assert fit["source_line"].startswith("assert accuracy >= min_accuracy")
    assert fit["hint"] == "an assertion failed at cell 3, line 1; the image no longer meets this test"
    assert {r["outcome"] for r in found.values()} == {"passed"}
    states = sorted(vertex.state_of(name) for name in vertex.jobs)
    assert states == ["JOB_STATE_FAILED"] + ["JOB_STATE_SUCCEEDED"] * 4
    (job,) = [j for j in vertex.created() if j.display_name.endswith("fit.ipynb")]
    assert json.loads(list(job.job_spec.worker_pool_specs[0].container_spec.args)[4]) == {
        "min_accuracy": 1.01,
        "seed": 7,
    }
    (run,) = db.test_runs_for(world.ledger(), IMAGE, built["digest"])
    assert run.passed is False and run.ran_on is not None
    assert run.ran_on["accelerator"] == {"type": "NVIDIA_TESLA_T4", "count": 1}
    assert containers_with(FAKE_LABEL) == []
