"""The Vertex AI job rules: the request of one notebook and the verdict of how its job ended."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import ConfigError, UsageError
from pipeline.promote.policy import Evidence, describe_ran_on, refusals
from pipeline.spec.model import Accelerator, Spec
from pipeline.testing.params import NotebookPlan
from pipeline.testing.vertex_jobs import Folder, JobEnd, classify_job, custom_job, notebook_task

aip = pytest.importorskip("google.cloud.aiplatform_v1")

IMAGE_URI = "europe-west4-docker.pkg.dev/p/r/nlp.gpu@sha256:" + "a" * 64


def spec(**cloud: Any) -> Spec:
    return Spec.model_validate(
        {
            "image": "nlp.gpu",
            "build": {
                "dockerfile": "docker/Dockerfile",
                "context": "docker",
                "base": {"local": "a", "gcp": "b"},
            },
            "tests": {"notebooks": ["nb/*.ipynb"], "timeout": 120},
            "cloud": {"machine_type": "g2-standard-8", **cloud},
        }
    )


FOLDER = Folder.for_run("gs://bucket/runs/", "RUN1")
PLAN = NotebookPlan(path="nb/fit.ipynb", parameters={"seed": 7}, kernel="python3", warnings=())
TASK = notebook_task(spec(), FOLDER, 0, PLAN, "fit.ipynb")
EXECUTED_FAIL = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": 1,
            "metadata": {"papermill": {"start_time": "x"}},
            "source": "import torch\nassert torch.cuda.is_available()",
            "outputs": [
                {
                    "output_type": "error",
                    "ename": "AssertionError",
                    "evalue": "",
                    "traceback": ["Cell In[1], line 2"],
                }
            ],
        }
    ]
}


def test_accelerator_names_read_as_vertex_spells_them() -> None:
    assert Accelerator(type="nvidia-tesla-t4").type == "NVIDIA_TESLA_T4"
    assert str(Accelerator(type="NVIDIA_L4", count=2)) == "2 x NVIDIA_L4"


def test_folder_of_a_run() -> None:
    assert FOLDER.uri("jobs/0") == "gs://bucket/runs/RUN1/jobs/0"
    assert FOLDER.mounted("in/fit.ipynb") == "/gcs/bucket/runs/RUN1/in/fit.ipynb"
    with pytest.raises(ConfigError, match="is not gs://BUCKET"):  # the artifacts store's own check
        Folder.for_run("s3://bucket", "RUN1")


def test_the_request_has_no_accelerator_when_the_spec_asks_for_none() -> None:
    job = custom_job(aip, spec(), TASK, folder=FOLDER, image_uri=IMAGE_URI, run_id="RUN1", env={})
    machine = job.job_spec.worker_pool_specs[0].machine_spec
    assert machine.accelerator_type == aip.AcceleratorType.ACCELERATOR_TYPE_UNSPECIFIED
    assert machine.accelerator_count == 0
    assert job.job_spec.scheduling.timeout.total_seconds() == 120 + 600  # tests.timeout + start-up
    assert job.job_spec.service_account == "" and job.job_spec.network == ""


def test_an_accelerator_vertex_does_not_know_is_bad_input() -> None:
    with pytest.raises(UsageError, match="NVIDIA_H100_80GB"):
        custom_job(
            aip,
            spec(accelerator={"type": "NVIDIA_T1000"}),
            TASK,
            folder=FOLDER,
            image_uri=IMAGE_URI,
            run_id="R",
            env={},
        )


@pytest.mark.parametrize(
    ("end", "executed", "outcome", "words"),
    [
        (JobEnd(state="JOB_STATE_SUCCEEDED"), {"cells": []}, "passed", ""),
        (
            JobEnd(
                state="JOB_STATE_FAILED",
                error_code=3,
                error="The replica workerpool0-0 exited with a non-zero status of 1.",
            ),
            EXECUTED_FAIL,
            "failed",
            "AssertionError",
        ),
        (
            JobEnd(
                state="JOB_STATE_FAILED",
                error_code=8,
                error="Resources are insufficient in region: us-east1.",
            ),
            None,
            "quota",
            "no capacity or quota for g2-standard-8",
        ),
        (
            JobEnd(
                state="JOB_STATE_FAILED", error_code=3, error='Unable to pull the container image "x": denied'
            ),
            None,
            "image_pull",
            "could not pull",
        ),
        (
            JobEnd(
                state="JOB_STATE_FAILED",
                error_code=3,
                error="The replica workerpool0-0 ran out of memory and exited with a non-zero status of 137.",
            ),
            None,
            "oom",
            "out of memory on g2-standard-8",
        ),
        (
            JobEnd(state="JOB_STATE_FAILED", error_code=4, error="Job timed out."),
            None,
            "timeout",
            "stopped by",
        ),
        (JobEnd(state="JOB_STATE_CANCELLED", deadline_hit=True), None, "timeout", "cancelled by envctl"),
        (
            JobEnd(state="JOB_STATE_CANCELLED", deadline_hit=True, never_started=True),
            None,
            "quota",
            "waited 720 s for a machine without starting",
        ),
        (JobEnd(state="JOB_STATE_CANCELLED"), None, "infrastructure", "cancelled outside envctl"),
        (
            JobEnd(state="JOB_STATE_FAILED", error_code=13, error="Internal error occurred."),
            None,
            "infrastructure",
            "Internal",
        ),
    ],
)
def test_how_a_job_ended_is_classified(end: JobEnd, executed: Any, outcome: str, words: str) -> None:
    verdict = classify_job(spec(), TASK, end, executed, image_uri=IMAGE_URI)
    assert verdict.outcome == outcome, verdict
    assert words in verdict.error


def test_production_refuses_cpu_evidence_only_when_the_spec_asks_for_an_accelerator() -> None:
    cpu = {"backend": "local", "machine": "cpu", "accelerator": None}
    asked = Evidence(runs=1, passed=True, run_id="r1", ran_on={**cpu, "asked": "1 x NVIDIA_L4"})
    (reason,) = refusals(stage="production", target="abc", evidence=asked, descends=None, pinned=[])
    assert "ran on the CPU but its spec asks for 1 x NVIDIA_L4" in reason
    assert refusals(stage="staging", target="abc", evidence=asked, descends=None, pinned=[]) == []
    plain = Evidence(runs=1, passed=True, run_id="r1", ran_on={**cpu, "asked": None})
    assert refusals(stage="production", target="abc", evidence=plain, descends=None, pinned=[]) == []
    old = Evidence(runs=1, passed=True, run_id="r1", ran_on=None)
    assert refusals(stage="production", target="abc", evidence=old, descends=None, pinned=[]) == []
    on_gpu = {
        "backend": "vertex",
        "machine": "g2-standard-8",
        "accelerator": {"type": "NVIDIA_L4", "count": 1},
    }
    gpu = Evidence(runs=1, passed=True, run_id="r1", ran_on={**on_gpu, "asked": "1 x NVIDIA_L4"})
    assert refusals(stage="production", target="abc", evidence=gpu, descends=None, pinned=[]) == []
    assert describe_ran_on(gpu.ran_on) == "Vertex AI g2-standard-8 + 1 x NVIDIA_L4"
