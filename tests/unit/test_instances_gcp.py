"""Workbench instances through the real notebooks_v2 client against the wire-level fake.

The requests sent are read back from the fake as JSON (what Workbench would receive);
the fake's state says what an instance runs and which data disk it has.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.notebooks_v2")

from google.cloud import notebooks_v2 as nb

from pipeline import gcp
from pipeline.errors import Refused, Unavailable, UsageError
from pipeline.instances.gcp import GcpInstances
from pipeline.instances.model import Target
from pipeline.ledger.pointers import EnvId
from pipeline.settings import Settings
from pipeline.spec.model import Accelerator, Cloud
from tests.gcpfakes.notebooks import FakeNotebooks
from tests.gcpfakes.rest import GoogleError

REGISTRY = "europe-west4-docker.pkg.dev/acme-ml/notebooks"
SHA, SHA2 = "a" * 40, "b" * 40
DIGEST, DIGEST2 = "sha256:" + "d" * 64, "sha256:" + "e" * 64
ENV = EnvId("nlp.keras-batch", "production")
TARGET, TARGET2 = Target(ENV, SHA, DIGEST), Target(ENV, SHA2, DIGEST2)
PARENT = "projects/acme-ml/locations/us-central1-a"
GPU = Cloud(machine_type="n1-highmem-8", accelerator=Accelerator(type="nvidia-tesla-t4", count=2))


@pytest.fixture
def fake() -> Iterator[FakeNotebooks]:
    with FakeNotebooks() as server:
        assert isinstance(server, FakeNotebooks)
        yield server


def workbench(fake: FakeNotebooks, tags: dict[str, str] | None = None) -> GcpInstances:
    settings = Settings(
        repo=Path("."),
        registry=REGISTRY,
        backend="gcp",
        gcp_endpoints=f"notebooks={fake.endpoint}",
        gcp_timeout=5,
        gcp_retry=False,
    )
    registry = {SHA: DIGEST, SHA2: DIGEST2} if tags is None else tags
    return GcpInstances(
        google=gcp.Google(settings),
        project="acme-ml",
        zone="us-central1-a",
        repository_of=lambda image: f"{REGISTRY}/{image}",
        tag_digest=lambda image, tag: registry.get(tag),
        poll_seconds=0.0,
    )


def test_create_sends_the_image_by_its_sha_tag_and_the_spec_machine(fake: FakeNotebooks) -> None:
    instance = workbench(fake).create("alice-nlp", TARGET, cloud=lambda: GPU)

    (create,) = fake.sent("POST", r".*/instances")
    assert create.path == f"/v2/{PARENT}/instances" and create.param("instanceId") == "alice-nlp"
    setup = create.json()["gceSetup"]
    assert setup["machineType"] == "n1-highmem-8"
    (accelerator,) = setup["acceleratorConfigs"]  # the REST transport sends enums as numbers
    assert accelerator["coreCount"] == "2"
    assert nb.AcceleratorConfig.AcceleratorType(accelerator["type"]).name == "NVIDIA_TESLA_T4"
    assert setup["containerImage"] == {"repository": f"{REGISTRY}/nlp.keras-batch", "tag": SHA}
    assert setup["metadata"]["envctl-digest"] == DIGEST
    assert setup["metadata"]["envctl-environment"] == "nlp.keras-batch.production"
    assert create.json()["labels"] == {"envctl-instance": "alice-nlp", "envctl-sha": SHA}
    # the operation was polled to its end; the instance is up
    assert fake.sent("GET", r"/v2/.*/operations/.*")
    assert instance.status == "ACTIVE" and instance.url and instance.url.startswith("https://")
    assert instance.digest == DIGEST and instance.image_ref == f"{REGISTRY}/nlp.keras-batch@{DIGEST}"
    assert instance.volume == "data disk 100 GB"


def test_list_restart_onto_a_new_version_keeps_the_data_disk(fake: FakeNotebooks) -> None:
    backend = workbench(fake)
    backend.create("bob", TARGET, cloud=lambda: Cloud())
    disk, instance_id = fake.data_disk_of("bob"), fake.instance("bob").id
    (listed,) = backend.list()
    assert (listed.name, listed.environment, listed.digest) == ("bob", str(ENV), DIGEST)

    moved = backend.restart("bob", TARGET2, cloud=lambda: GPU)

    stop, patch, start = [r for r in fake.writes() if r.method in {"POST", "PATCH"}][1:]
    assert stop.path.endswith("/instances/bob:stop") and start.path.endswith("/instances/bob:start")
    assert patch.path == f"/v2/{PARENT}/instances/bob"
    assert set(patch.param("updateMask").split(",")) == {
        "gceSetup.containerImage",
        "gceSetup.metadata",
        "labels",
        "gceSetup.machineType",
        "gceSetup.acceleratorConfigs",
    }
    assert patch.json()["gceSetup"]["containerImage"]["tag"] == SHA2
    after = fake.instance("bob")
    assert after.gce_setup.container_image.tag == SHA2
    assert after.gce_setup.metadata["envctl-digest"] == DIGEST2
    assert after.gce_setup.machine_type == "n1-highmem-8"
    assert fake.data_disk_of("bob") == disk and after.id == instance_id  # same instance, same disk
    assert after.state.name == "ACTIVE" and moved.digest == DIGEST2
    assert not fake.sent("DELETE")


def test_restart_of_a_stopped_instance_updates_then_starts_it(fake: FakeNotebooks) -> None:
    backend = workbench(fake)
    backend.create("carol", TARGET, cloud=lambda: Cloud())
    backend.google.notebooks().stop_instance(request={"name": f"{PARENT}/instances/carol"}).result(timeout=10)
    backend.restart("carol", TARGET2, cloud=lambda: Cloud())
    verbs = [r.path.rsplit(":", 1)[-1] if ":" in r.path else r.method for r in fake.writes()]
    assert verbs == ["POST", "stop", "PATCH", "start"]  # no second stop
    patch = fake.sent("PATCH")[0]
    assert set(patch.param("updateMask").split(",")) == {
        "gceSetup.containerImage",
        "gceSetup.metadata",
        "labels",
    }


def test_a_refused_update_starts_the_old_image_again_and_says_what_to_do(fake: FakeNotebooks) -> None:
    backend = workbench(fake)
    backend.create("dave", TARGET, cloud=lambda: Cloud())
    fake.fail("PATCH", r".*/instances/dave", GoogleError("FAILED_PRECONDITION", "container cannot change"))
    with pytest.raises(Refused) as refused:
        backend.restart("dave", TARGET2, cloud=lambda: Cloud())
    message = str(refused.value)
    assert "container cannot change" in message and "envctl instances delete dave" in message
    assert "data disk" in message and "it runs its previous image again." in message
    after = fake.instance("dave")
    assert after.gce_setup.container_image.tag == SHA and after.state.name == "ACTIVE"


def test_a_refused_update_of_a_stopped_instance_leaves_it_stopped_and_says_so(fake: FakeNotebooks) -> None:
    backend = workbench(fake)
    backend.create("dora", TARGET, cloud=lambda: Cloud())
    backend.google.notebooks().stop_instance(request={"name": f"{PARENT}/instances/dora"}).result(timeout=10)
    fake.fail("PATCH", r".*/instances/dora", GoogleError("FAILED_PRECONDITION", "container cannot change"))
    with pytest.raises(Refused) as refused:
        backend.restart("dora", TARGET2, cloud=lambda: Cloud())
    message = str(refused.value)
    assert "it stays STOPPED on its previous image, as it was." in message
    assert "runs its previous image again" not in message
    after = fake.instance("dora")
    assert after.gce_setup.container_image.tag == SHA and after.state.name == "STOPPED"
    assert not fake.sent("POST", r".*:start")


def test_restart_refuses_an_instance_on_its_way_somewhere(fake: FakeNotebooks) -> None:
    backend = workbench(fake)
    backend.create("erin", TARGET, cloud=lambda: Cloud())
    backend.google.notebooks().stop_instance(
        request={"name": f"{PARENT}/instances/erin"}
    )  # not waited: STOPPING
    with pytest.raises(Refused, match="erin is STOPPING; wait until"):
        backend.restart("erin", TARGET2, cloud=lambda: Cloud())
    assert not fake.sent("PATCH")


def test_refuses_when_the_tag_no_longer_names_the_digest(fake: FakeNotebooks) -> None:
    with pytest.raises(Refused, match="envctl sync"):
        workbench(fake, tags={SHA: DIGEST2}).create("frank", TARGET, cloud=lambda: Cloud())
    assert not fake.sent("POST")


def test_a_gpu_quota_error_of_the_operation_is_one_line_exit_3(fake: FakeNotebooks) -> None:
    fake.script_error("create", GoogleError("RESOURCE_EXHAUSTED", "Quota 'NVIDIA_T4_GPUS' exceeded"))
    with pytest.raises(Unavailable, match=r"quota exhausted.*NVIDIA_T4_GPUS"):
        workbench(fake).create("gina", TARGET, cloud=lambda: GPU)
    # The failed creation left its instance behind (as Workbench does); envctl deleted it,
    # so the retry is not blocked with "exists".
    (delete,) = fake.sent("DELETE")
    assert delete.path == f"/v2/{PARENT}/instances/gina"
    assert fake.instance("gina") is None and fake.data_disk_of("gina") is None
    assert workbench(fake).create("gina", TARGET, cloud=lambda: GPU).status == "ACTIVE"


def test_a_failed_create_that_cannot_be_cleaned_up_says_what_to_run(fake: FakeNotebooks) -> None:
    fake.script_error("create", GoogleError("RESOURCE_EXHAUSTED", "Quota 'NVIDIA_T4_GPUS' exceeded"))
    fake.script_error("delete", GoogleError("UNAVAILABLE", "zone is busy"))
    with pytest.raises(Unavailable) as failed:
        workbench(fake).create("gwen", TARGET, cloud=lambda: GPU)
    message = str(failed.value)
    assert "NVIDIA_T4_GPUS" in message and "zone is busy" in message and "\n" not in message
    assert message.endswith("run `envctl instances delete gwen` before trying again")
    assert fake.instance("gwen") is not None


def test_bad_input_sends_nothing_and_delete_removes_instance_and_disk(fake: FakeNotebooks) -> None:
    backend = workbench(fake)
    backend.create("hank", TARGET, cloud=lambda: Cloud())
    with pytest.raises(UsageError, match="exists"):
        backend.create("hank", TARGET, cloud=lambda: Cloud())
    with pytest.raises(UsageError, match="not an instance name"):
        backend.create("Hank_2", TARGET, cloud=lambda: Cloud())
    with pytest.raises(UsageError, match="NVIDIA_TESLA_T4"):
        backend.create("ivy", TARGET, cloud=lambda: Cloud(accelerator=Accelerator(type="quantum-9000")))
    with pytest.raises(UsageError, match="no instance"):
        backend.delete("jack")
    assert len(fake.sent("POST", r".*/instances")) == 1
    backend.delete("hank")
    assert fake.instance("hank") is None and fake.data_disk_of("hank") is None
    assert backend.list() == []


def test_prune_reads_the_instances_of_every_zone(fake: FakeNotebooks) -> None:
    from dataclasses import replace

    workbench(fake).create("alice", TARGET, cloud=lambda: Cloud())
    replace(workbench(fake), zone="europe-west4-b").create("bob", TARGET2, cloud=lambda: Cloud())
    every = replace(workbench(fake), zone="-")  # what `envctl prune` lists

    assert {(i.name, i.digest) for i in every.list()} == {("alice", DIGEST), ("bob", DIGEST2)}
    assert fake.sent("GET", r".*/instances")[-1].path == "/v2/projects/acme-ml/locations/-/instances"
    assert [i.name for i in workbench(fake).list()] == ["alice"]  # one zone: only its own


def test_prune_without_a_project_names_its_own_option() -> None:
    settings = Settings(repo=Path("."), registry=REGISTRY, backend="gcp", gcp_project=None)
    with pytest.raises(UsageError, match=r"needs `envctl prune --project P` \(or GOOGLE_CLOUD_PROJECT\)$"):
        GcpInstances.for_settings(settings, project=None, zone="-", command="envctl prune")
