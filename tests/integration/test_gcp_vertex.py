"""`envctl test` on the gcp backend: Vertex AI custom jobs, against the fakes, with real containers.

The real `aiplatform_v1.JobServiceClient` and google-cloud-storage talk to the fakes of
tests/gcpfakes; the fake Vertex runs each job's container for real (the test image of
test_test_stage, pulled from the local registry where Artifact Registry would serve it)
with the fake Cloud Storage mounted at /gcs, so papermill really runs each notebook and
its executed notebook and log really come back through Cloud Storage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("google.cloud.aiplatform_v1")

from google.cloud import aiplatform_v1 as aip

from pipeline.build.engine import connect
from pipeline.ledger import db
from tests.gcpfakes.aiplatform import FAKE_LABEL, FakeVertex, remove_fake_containers
from tests.gcpfakes.rest import GoogleError
from tests.gcpfakes.storage import FakeStorage
from tests.helpers import envctl, error_lines, interrupted
from tests.integration.test_test_stage import World, by_name, containers_with, make_image, make_world
from tests.minirepo import git

pytestmark = pytest.mark.integration

REGISTRY = "europe-west4-docker.pkg.dev/proj/images"
BUCKET = "proj-artifacts"
GPU = {
    "machine_type": "n1-standard-8",
    "accelerator": {"type": "nvidia-tesla-t4", "count": 1},
    "service_account": "notebook-tests@proj.iam.gserviceaccount.com",
    "network": "projects/123456/global/networks/tests",
    "timeout": 300,
}
# Where a run of a spec asking for one T4 on n1-standard-8 ran: in its report, and as said.
RAN_ON_T4 = {
    "backend": "vertex",
    "machine": "n1-standard-8",
    "accelerator": {"type": "NVIDIA_TESLA_T4", "count": 1},
    "asked": "1 x NVIDIA_TESLA_T4",
    "region": "europe-west4",
}
RAN_ON_T4_SAID = "ran on: Vertex AI n1-standard-8 + 1 x NVIDIA_TESLA_T4 (europe-west4)"


def on_artifact_registry(local_ref: str) -> str:
    """The test image as Artifact Registry would name it (same digest)."""
    return local_ref.replace("localhost:5000/", f"{REGISTRY}/", 1)


def from_artifact_registry(ref: str) -> str:
    return ref.replace(f"{REGISTRY}/", "localhost:5000/", 1)


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    """The test image of test_test_stage under a repository of this module's own.

    Other runs may use the same image (same bytes, same ID) at the same time: only this
    repository's references are removed afterwards, never the image by force.
    """
    client = connect()
    ref = make_image(client, "vertex-notebooks", "Dockerfile")
    try:
        yield {"tests": ref}
    finally:
        for image in client.images.list(name=ref.split("@")[0]):
            for name in [
                *image.tags,
                *(d for d in image.attrs.get("RepoDigests", []) if d.startswith(ref.split("@")[0])),
            ]:
                with contextlib.suppress(Exception):
                    client.images.remove(name)
        client.close()


@contextlib.contextmanager
def vertex_fakes() -> Iterator[tuple[FakeVertex, FakeStorage]]:
    """Fake Vertex AI and Cloud Storage (BUCKET); no job or container of theirs outlives them."""
    storage = FakeStorage(buckets=(BUCKET,))
    vertex = FakeVertex(storage, images=from_artifact_registry)
    with storage, vertex:
        try:
            yield vertex, storage
        finally:
            for job in list(vertex.jobs.values()):
                job.cancel.set()
            remove_fake_containers()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeVertex, FakeStorage]]:
    with vertex_fakes() as both:
        yield both


@pytest.fixture
def fakes(servers: tuple[FakeVertex, FakeStorage]) -> Iterator[tuple[FakeVertex, FakeStorage]]:
    """The fakes, with no job, request or scenario of another test."""
    vertex, _ = servers
    forget(vertex)
    yield servers
    forget(vertex)


def forget(vertex: FakeVertex) -> None:
    for job in list(vertex.jobs.values()):
        job.cancel.set()
    remove_fake_containers()
    with vertex.lock:
        vertex.jobs.clear()
        vertex.requests.clear()
        vertex.scenarios.clear()


def gpu_world(
    tmp_path: Path, image_ref: str, notebooks: list[str], cloud: dict[str, Any], **tests: Any
) -> World:
    """A world whose spec has a `cloud` section, its commit recorded as a version of `image_ref`."""
    world = make_world(tmp_path, image_ref, notebooks, **tests)
    path = world.repo / "environments" / f"{world.image}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["cloud"] = cloud
    path.write_text(yaml.safe_dump(spec))
    git(world.repo, "commit", "-q", "-am", "cloud section")
    world.sha = git(world.repo, "rev-parse", "HEAD")
    world.record(image_ref)
    return world


def gcp_env(world: World, vertex: FakeVertex, storage: FakeStorage, **extra: str) -> dict[str, str]:
    return {
        **world.env(),
        "ENVCTL_BACKEND": "gcp",
        "ENVCTL_REGISTRY": REGISTRY,
        "ENVCTL_GCP_ENDPOINTS": f"aiplatform={vertex.endpoint},storage={storage.endpoint}",
        "ENVCTL_ARTIFACTS_URL": f"gs://{BUCKET}/runs",
        "ENVCTL_GCP_VERTEX_POLL": "0",
        "ENVCTL_GCP_TIMEOUT": "10",
        "ENVCTL_GCP_RETRY": "false",
        **extra,
    }


def gcp_test(
    world: World, vertex: FakeVertex, storage: FakeStorage, *args: str, timeout: float = 600, **extra: str
) -> Any:
    """`envctl test` of the world's staging on the gcp backend (the fakes); `extra`: more ENVCTL_*."""
    return envctl(
        "test",
        world.image,
        "--rev",
        "staging",
        *args,
        cwd=world.repo,
        env=gcp_env(world, vertex, storage, **extra),
        timeout=timeout,
    )


# -- one run: a pass, a failure at a cell, a missing module, a smoke check ----------------


@pytest.fixture(scope="module")
def gpu_run(
    images: dict[str, str],
    servers: tuple[FakeVertex, FakeStorage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[World, Any, dict[str, Any], FakeVertex, FakeStorage]]:
    vertex, storage = servers
    world = gpu_world(
        tmp_path_factory.mktemp("gpu"),
        on_artifact_registry(images["tests"]),
        ["passes.ipynb", "fails.ipynb", "missing_module.ipynb"],
        GPU,
        parameters={"seed": 7},
        smoke=["python -c 'import json'"],
        env={"MPLBACKEND": "Agg"},
    )
    result = gcp_test(world, vertex, storage, "--json", "--jobs", "2")
    vertex.wait_all()
    # What the fake saw, kept: later tests clear it.
    seen = Seen(
        created=vertex.created(),
        states={name: vertex.state_of(name) for name in vertex.jobs},
        paths=[f"{r.method} {r.path}" for r in vertex.sent()],
    )
    yield world, result, json.loads(result.stdout or "{}"), seen, storage


@dataclass
class Seen:
    created: list[Any]
    states: dict[str, str]
    paths: list[str]


def test_a_gpu_spec_runs_as_vertex_jobs_and_is_classified_as_locally(gpu_run: Any) -> None:
    world, result, report, vertex, _storage = gpu_run
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"envctl: error: 2 of 4 tests failed for {world.image} at {world.sha[:12]}"
    )
    found = by_name(report)
    assert found["passes.ipynb"]["outcome"] == "passed"
    fails = found["fails.ipynb"]
    assert (fails["outcome"], fails["cell_index"], fails["line"]) == ("failed", 3, 2)
    assert fails["error"] == "ZeroDivisionError: division by zero"
    assert "cell 3, line 2" in fails["hint"]
    missing = found["missing_module.ipynb"]
    assert missing["outcome"] == "missing_module"
    assert missing["hint"] == f"add pandas to docker/{world.image}/Dockerfile"
    assert found["smoke: python -c 'import json'"]["outcome"] == "passed"
    assert report["ran_on"] == RAN_ON_T4
    assert RAN_ON_T4_SAID in result.stderr
    assert sorted(vertex.states.values()) == ["JOB_STATE_FAILED"] * 2 + ["JOB_STATE_SUCCEEDED"] * 2
    assert containers_with(FAKE_LABEL) == []
    assert "Vertex AI service agent" not in result.stderr  # the spec names its service account


def test_the_executed_notebook_comes_back_through_cloud_storage(gpu_run: Any) -> None:
    _world, _, report, vertex, storage = gpu_run
    run_id = report["run_id"]
    prefix = f"runs/{run_id}"
    # The inputs went up, the job wrote its notebook and log next to them.
    assert storage.data(BUCKET, f"{prefix}/in/passes.ipynb") is not None
    (passes,) = [j for j in vertex.created if j.display_name.endswith("passes.ipynb")]
    index = passes.job_spec.base_output_directory.output_uri_prefix.rstrip("/").rsplit("/", 1)[-1]
    written = storage.data(BUCKET, f"{prefix}/jobs/{index}/passes.ipynb")
    assert written is not None
    executed = json.loads(written)
    assert executed["metadata"]["papermill"]["parameters"] == {"seed": 7}
    log = storage.data(BUCKET, f"{prefix}/logs/passes.log")
    assert log is not None and b"Executing" in log
    # ... and was downloaded into the run's local artifacts, byte for byte.
    artifacts = Path(report["artifacts"])
    assert (artifacts / "passes.ipynb").read_bytes() == written
    assert (artifacts / "passes.log").read_bytes() == log
    assert (artifacts / "fails.ipynb").is_file()
    assert json.loads((artifacts / "summary.json").read_text())["run_id"] == run_id
    assert (artifacts / "junit.xml").is_file()
    # The whole run folder is kept beside the jobs' files, in the run's Cloud Storage folder.
    assert storage.data(BUCKET, f"{prefix}/passes.ipynb") == written
    assert storage.data(BUCKET, f"{prefix}/summary.json") == (artifacts / "summary.json").read_bytes()
    assert report["artifacts_url"] == f"gs://{BUCKET}/{prefix}/"


def test_the_requests_name_machine_accelerator_image_by_digest_papermill_timeout_account(
    gpu_run: Any,
    images: dict[str, str],
) -> None:
    world, _, report, vertex, _ = gpu_run
    sent = vertex.created
    assert len(sent) == 4
    assert vertex.paths.count("POST /v1/projects/proj/locations/europe-west4/customJobs") == 4
    assert not [p for p in vertex.paths if p.endswith(":cancel")]
    (job,) = [j for j in sent if j.display_name.endswith("fails.ipynb")]
    assert job.display_name == f"envctl {world.image} test-notebooks/{world.image}/fails.ipynb"
    spec = job.job_spec
    (pool,) = spec.worker_pool_specs
    assert pool.replica_count == 1
    assert pool.machine_spec.machine_type == "n1-standard-8"
    assert pool.machine_spec.accelerator_type == aip.AcceleratorType.NVIDIA_TESLA_T4
    assert pool.machine_spec.accelerator_count == 1
    container = pool.container_spec
    assert container.image_uri == on_artifact_registry(images["tests"])
    assert "@sha256:" in container.image_uri and container.image_uri.startswith(REGISTRY)
    assert list(container.command)[:2] == ["bash", "-c"]
    prefix = f"/gcs/{BUCKET}/runs/{report['run_id']}"
    index = spec.base_output_directory.output_uri_prefix.rstrip("/").rsplit("/", 1)[-1]
    assert list(container.args) == [
        "papermill",
        f"{prefix}/in/fails.ipynb",
        f"{prefix}/jobs/{index}/fails.ipynb",
        "-y",
        '{"seed": 7}',
        "-k",
        "python3",
        "--execution-timeout",
        "60",
        "--cwd",
        "/tmp/envctl/cwd",
        "--log-output",
        "--no-progress-bar",
    ]
    env = {e.name: e.value for e in container.env}
    assert env["MPLBACKEND"] == "Agg"
    assert env["ENVCTL_LOG"] == f"{prefix}/logs/fails.log"
    assert spec.scheduling.timeout.total_seconds() == 300
    assert spec.scheduling.disable_retries is True
    assert spec.service_account == "notebook-tests@proj.iam.gserviceaccount.com"
    assert spec.network == "projects/123456/global/networks/tests"
    assert (
        spec.base_output_directory.output_uri_prefix == f"gs://{BUCKET}/runs/{report['run_id']}/jobs/{index}"
    )
    assert job.labels["envctl-run"] == report["run_id"].lower()
    (smoke,) = [j for j in sent if "smoke" in j.display_name]
    assert list(smoke.job_spec.worker_pool_specs[0].container_spec.args) == ["python", "-c", "import json"]


def test_the_run_is_evidence_that_records_where_it_ran(gpu_run: Any) -> None:
    world, _, report, _, _ = gpu_run
    (run,) = db.test_runs_for(world.ledger(), world.image, report["digest"])
    assert run.run_id == report["run_id"] and run.passed is False
    assert run.artifacts == f"gs://{BUCKET}/runs/{run.run_id}/"
    assert run.ran_on is not None and run.ran_on["backend"] == "vertex"
    assert run.ran_on["accelerator"] == {"type": "NVIDIA_TESLA_T4", "count": 1}


# -- timeouts ----------------------------------------------------------------------------------


def test_a_job_past_its_own_timeout_is_stopped_and_classified_timeout(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    world = gpu_world(tmp_path, on_artifact_registry(images["tests"]), ["hangs.ipynb"], {**GPU, "timeout": 6})
    result = gcp_test(world, vertex, storage, "--json")
    assert result.returncode == 1, result.stderr
    (found,) = json.loads(result.stdout)["results"]
    assert found["outcome"] == "timeout", found
    assert found["error"] == "still running after its timeout of 6 s; stopped by Vertex AI"
    assert "raise cloud.timeout" in found["hint"]
    (name,) = vertex.jobs
    assert vertex.state_of(name) == "JOB_STATE_FAILED"
    assert vertex.jobs[name].job.error.code == 4


def test_a_job_still_waiting_for_a_machine_at_the_deadline_is_cancelled_as_capacity(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    vertex.scenario("passes.ipynb", "stuck")  # waits for a machine that never comes (a GPU stockout)
    world = gpu_world(
        tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb"], {**GPU, "timeout": 2}
    )
    result = gcp_test(world, vertex, storage, "--json", ENVCTL_GCP_VERTEX_GRACE="1")
    assert result.returncode == 3, result.stderr
    assert "no evidence was recorded" in result.stderr.strip().splitlines()[-1]
    (found,) = json.loads(result.stdout)["results"]
    assert found["outcome"] == "quota", found
    assert found["error"] == (
        "no capacity or quota for 1 x NVIDIA_TESLA_T4 on n1-standard-8: the job waited 2 s for a "
        "machine without starting; envctl cancelled it"
    )
    assert "cloud.region" in found["hint"] and "try again later" in found["hint"]
    (name,) = vertex.jobs
    assert "JOB_STATE_RUNNING" not in vertex.jobs[name].states
    assert [r.path for r in vertex.sent("POST") if r.path.endswith(":cancel")] == [f"/v1/{name}:cancel"]
    assert vertex.jobs[name].states[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    version = world.ledger().get_version(world.image, world.sha)
    assert version is not None and db.test_runs_for(world.ledger(), world.image, version.digest) == []


def test_a_cancel_that_fails_at_the_deadline_is_reported_with_the_command(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    vertex.scenario("passes.ipynb", "stuck")
    vertex.fail("POST", r"/v1/.*:cancel", GoogleError("INTERNAL", "Internal error encountered."))
    try:
        world = gpu_world(
            tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb"], {**GPU, "timeout": 2}
        )
        result = gcp_test(world, vertex, storage, "--json", ENVCTL_GCP_VERTEX_GRACE="1")
    finally:
        vertex.clear_failures()
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    (name,) = vertex.jobs
    assert vertex.state_of(name) == "JOB_STATE_PENDING"  # the cancel did not happen
    job_id = name.rsplit("/", 1)[-1]
    (warning,) = [line for line in result.stderr.splitlines() if "although envctl cancelled it" in line]
    assert f"{name} is JOB_STATE_PENDING although envctl cancelled it" in warning
    assert warning.endswith(f"`gcloud ai custom-jobs cancel {job_id} --project proj --region europe-west4`")
    # After the cancel, the job was read again.
    gets = [r.path for r in vertex.sent("GET") if r.path == f"/v1/{name}"]
    cancel_at = [i for i, r in enumerate(vertex.sent()) if r.path.endswith(":cancel")]
    assert len(cancel_at) == 1 and len(gets) >= 2
    assert any(r.path == f"/v1/{name}" for r in vertex.sent()[cancel_at[0] + 1 :])


# -- capacity and image pull: the parts failed, not the version --------------------------------


def test_accelerator_quota_and_stockout_are_quota_and_record_no_evidence(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    vertex.scenario("passes.ipynb", "quota")
    vertex.scenario("fails.ipynb", "stockout")
    world = gpu_world(tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb", "fails.ipynb"], GPU)
    result = gcp_test(world, vertex, storage, "--json")
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("envctl: error: the test run of") and "no evidence was recorded" in last
    found = by_name(json.loads(result.stdout))
    quota = found["passes.ipynb"]
    assert quota["outcome"] == "quota"
    assert "custom_model_training_nvidia_t4_gpus" in quota["error"]
    assert "1 x NVIDIA_TESLA_T4 on n1-standard-8" in quota["error"]
    assert "quota" in quota["hint"] and "cloud.region" in quota["hint"]
    stockout = found["fails.ipynb"]
    assert stockout["outcome"] == "quota"
    assert "Resources are insufficient in region" in stockout["error"]
    assert len(vertex.jobs) == 1  # the quota refused the other at create
    assert (
        db.test_runs_for(
            world.ledger(), world.image, world.ledger().get_version(world.image, world.sha).digest
        )
        == []
    )  # type: ignore[union-attr]


def test_an_image_vertex_cannot_pull_is_image_pull(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    gone = on_artifact_registry(images["tests"]).split("@")[0] + "@sha256:" + "0" * 64
    world = gpu_world(tmp_path, gone, ["passes.ipynb"], GPU)
    result = gcp_test(world, vertex, storage, "--json")
    assert result.returncode == 3, result.stderr
    (found,) = json.loads(result.stdout)["results"]
    assert found["outcome"] == "image_pull", found
    assert found["error"].startswith(f"Vertex AI could not pull {gone}: Unable to pull the container image")
    assert "roles/artifactregistry.reader" in found["hint"]
    assert "notebook-tests@proj.iam.gserviceaccount.com" in found["hint"]


def test_without_a_service_account_it_warns_once_that_jobs_run_as_the_service_agent(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    vertex.scenario("passes.ipynb", "quota")  # refused at create: no container needed
    cloud = {k: v for k, v in GPU.items() if k != "service_account"}
    world = gpu_world(tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb"], cloud)
    result = gcp_test(world, vertex, storage, "--json")
    assert result.returncode == 3, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "Vertex AI service agent" in line]
    assert warnings == [
        f"warning: {world.image}'s test jobs run as the Vertex AI service agent, which may read far more "
        "than they need: set cloud.service_account to an account with only roles/storage.objectAdmin on "
        "the artifacts folder and roles/artifactregistry.reader (README: Tests on Vertex AI)"
    ]
    (job,) = vertex.created()
    assert job.job_spec.service_account == ""


# -- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_cancels_every_job_it_started(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    vertex.scenario("passes.ipynb", "stuck")
    world = gpu_world(
        tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb", "hangs.ipynb"], GPU, timeout=120
    )
    code, stderr = interrupted(
        "test",
        world.image,
        "--rev",
        "staging",
        "--jobs",
        "2",
        cwd=world.repo,
        env=gcp_env(world, vertex, storage),
        ready=lambda: (
            len(vertex.jobs) == 2 and any(vertex.state_of(n) == "JOB_STATE_RUNNING" for n in vertex.jobs)
        ),
        what="the jobs were not created, or none ran",
    )
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "envctl: aborted"
    assert stderr.count("cancelled projects/proj/locations/europe-west4/customJobs/") == 2, stderr
    cancels = sorted(r.path for r in vertex.sent("POST") if r.path.endswith(":cancel"))
    assert cancels == sorted(f"/v1/{name}:cancel" for name in vertex.jobs)
    vertex.wait_all()
    assert {vertex.state_of(n) for n in vertex.jobs} == {"JOB_STATE_CANCELLED"}
    assert containers_with(FAKE_LABEL) == []
    version = world.ledger().get_version(world.image, world.sha)
    assert version is not None and db.test_runs_for(world.ledger(), world.image, version.digest) == []


def test_a_job_whose_create_did_not_answer_is_found_by_its_label_and_cancelled(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    vertex.scenario("passes.ipynb", "slow-create")  # created, but the answer comes after the client gave up
    world = gpu_world(tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb"], GPU, timeout=120)
    result = gcp_test(world, vertex, storage, "--json", ENVCTL_GCP_TIMEOUT="2")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("envctl: error: ")
    (name,) = vertex.jobs
    listed = [
        r for r in vertex.sent("GET") if r.path == "/v1/projects/proj/locations/europe-west4/customJobs"
    ]
    (run_label,) = {j.labels["envctl-run"] for j in vertex.created()}
    assert [r.param("filter") for r in listed] == [f'labels.envctl-run="{run_label}"']
    assert [r.path for r in vertex.sent("POST") if r.path.endswith(":cancel")] == [f"/v1/{name}:cancel"]
    assert f"cancelled {name} (created, but its creation did not answer)" in result.stderr
    vertex.wait_all()
    assert vertex.state_of(name) == "JOB_STATE_CANCELLED"
    assert containers_with(FAKE_LABEL) == []


# -- bad input ---------------------------------------------------------------------------------


def test_an_image_ref_not_by_the_versions_digest_is_refused(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    ref = on_artifact_registry(images["tests"])
    other = "sha256:" + "1" * 64
    # `@sha256:` is in it, but not the version's own digest: the check reads the whole reference.
    world = gpu_world(tmp_path, f"{ref.split('@')[0]}@{other}", ["passes.ipynb"], GPU)
    with world.ledger().transaction() as conn:
        table = db.versions
        conn.execute(table.update().where(table.c.image == world.image).values(digest=ref.split("@")[1]))
    result = gcp_test(world, vertex, storage)
    errors = error_lines(result, 2)
    assert errors == [
        f"envctl: error: {world.image} at {world.sha[:12]} is recorded as {ref.split('@')[0]}@{other}, "
        f"not by its digest {ref.split('@')[1]}; rebuild it with "
        f"`ENVCTL_BACKEND=gcp envctl build {world.image} --rev {world.sha}`"
    ]
    assert vertex.sent() == []


def test_an_image_outside_artifact_registry_is_refused(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    local = images["tests"]  # localhost:5000/...@sha256:...: by digest, but not in Artifact Registry
    world = gpu_world(tmp_path, local, ["passes.ipynb"], GPU)
    result = gcp_test(world, vertex, storage, ENVCTL_GCP_ENDPOINTS="")
    errors = error_lines(result, 2)
    assert errors == [
        f"envctl: error: {world.image} at {world.sha[:12]} is recorded as {local}, which is not in "
        "Artifact Registry (REGION-docker.pkg.dev), where Vertex AI pulls test images from; set "
        "ENVCTL_REGISTRY=REGION-docker.pkg.dev/PROJECT/REPOSITORY and rebuild it with "
        f"`ENVCTL_BACKEND=gcp envctl build {world.image} --rev {world.sha}`"
    ]
    assert vertex.sent() == []


def test_without_an_artifacts_bucket_it_says_what_to_set(
    images: dict[str, str],
    fakes: tuple[FakeVertex, FakeStorage],
    tmp_path: Path,
) -> None:
    vertex, storage = fakes
    world = gpu_world(tmp_path, on_artifact_registry(images["tests"]), ["passes.ipynb"], GPU)
    result = gcp_test(world, vertex, storage, ENVCTL_ARTIFACTS_URL="")
    errors = error_lines(result, 2)
    assert errors == [
        "envctl: error: the gcp test runner keeps each run's notebooks in Cloud Storage: set "
        "ENVCTL_ARTIFACTS_URL=gs://BUCKET[/PREFIX]"
    ]
    assert vertex.sent() == []
