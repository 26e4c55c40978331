"""The Vertex AI Workbench requests, checked at the client boundary against a fake that records them."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import notebooks_v2 as nb

from pipeline.errors import Refused, UsageError
from pipeline.instances.gcp import GcpInstances
from pipeline.instances.model import Target
from pipeline.ledger.pointers import EnvId
from pipeline.spec.model import Accelerator, Cloud

REGISTRY = "artifacts.example.test/acme/notebooks"
SHA = "a" * 40
DIGEST = "sha256:" + "d" * 64
TARGET = Target(EnvId("nlp.keras-batch", "production"), SHA, DIGEST)


class Done:
    def result(self, timeout: float) -> None:
        return None


class FakeWorkbench:
    """Records each request it would send; keeps created instances so list and delete see them."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.instances: dict[str, Any] = {}

    def create_instance(self, *, request: Any) -> Done:
        self.sent.append(request)
        created = type(request.instance)(request.instance)
        created.name = f"{request.parent}/instances/{request.instance_id}"
        self.instances[request.instance_id] = created
        return Done()

    def list_instances(self, *, request: Any) -> list[Any]:
        self.sent.append(request)
        return list(self.instances.values())

    def delete_instance(self, *, request: Any) -> Done:
        self.sent.append(request)
        del self.instances[request.name.rpartition("/")[2]]
        return Done()


def workbench(fake: FakeWorkbench, tag_digest: str | None = DIGEST) -> GcpInstances:
    return GcpInstances(
        client=fake,
        project="acme-ml",
        zone="us-central1-a",
        registry=REGISTRY,
        tag_digest=lambda i, t: tag_digest,
    )


def test_create_sends_the_image_pinned_to_the_version_and_the_spec_machine() -> None:
    fake = FakeWorkbench()
    cloud = Cloud(machine_type="n1-highmem-8", accelerator=Accelerator(type="nvidia-tesla-t4", count=2))
    instance = workbench(fake).create("alice-nlp", TARGET, cloud=lambda: cloud)

    request = fake.sent[-1]
    assert isinstance(request, nb.CreateInstanceRequest)
    wire = type(request).to_dict(request, use_integers_for_enums=False)
    assert wire["parent"] == "projects/acme-ml/locations/us-central1-a"
    assert wire["instance_id"] == "alice-nlp"
    setup = wire["instance"]["gce_setup"]
    assert setup["machine_type"] == "n1-highmem-8"
    assert setup["accelerator_configs"] == [{"type_": "NVIDIA_TESLA_T4", "core_count": "2"}]
    # the version's own tag (its commit SHA), checked to name the digest before sending
    assert setup["container_image"] == {"repository": f"{REGISTRY}/nlp.keras-batch", "tag": SHA}
    assert setup["metadata"]["envctl-digest"] == DIGEST
    assert setup["metadata"]["envctl-environment"] == "nlp.keras-batch.production"
    assert wire["instance"]["labels"]["envctl-instance"] == "alice-nlp"
    assert instance.digest == DIGEST and instance.image_ref == f"{REGISTRY}/nlp.keras-batch@{DIGEST}"


def test_no_accelerator_by_default_and_list_and_delete_by_name() -> None:
    fake = FakeWorkbench()
    backend = workbench(fake)
    backend.create("bob", TARGET, cloud=lambda: Cloud())
    assert fake.sent[-1].instance.gce_setup.machine_type == "n1-standard-4"
    assert list(fake.sent[-1].instance.gce_setup.accelerator_configs) == []

    [listed] = backend.list()
    assert (listed.name, listed.environment, listed.digest) == ("bob", "nlp.keras-batch.production", DIGEST)
    backend.delete("bob")
    assert fake.sent[-1].name == "projects/acme-ml/locations/us-central1-a/instances/bob"
    assert backend.list() == []


def test_refuses_when_the_tag_no_longer_names_the_digest() -> None:
    fake = FakeWorkbench()
    with pytest.raises(Refused, match="envctl sync"):
        workbench(fake, tag_digest="sha256:" + "e" * 64).create("carol", TARGET, cloud=lambda: Cloud())
    assert not any(isinstance(r, nb.CreateInstanceRequest) for r in fake.sent)


def test_bad_input_sends_nothing() -> None:
    fake = FakeWorkbench()
    backend = workbench(fake)
    backend.create("dave", TARGET, cloud=lambda: Cloud())
    with pytest.raises(UsageError, match="exists"):
        backend.create("dave", TARGET, cloud=lambda: Cloud())
    with pytest.raises(UsageError, match="not an instance name"):
        backend.create("Dave_2", TARGET, cloud=lambda: Cloud())
    with pytest.raises(UsageError, match="NVIDIA_TESLA_T4"):
        backend.create("erin", TARGET, cloud=lambda: Cloud(accelerator=Accelerator(type="quantum-9000")))
    with pytest.raises(UsageError, match="no instance"):
        backend.delete("frank")
    assert sum(isinstance(r, nb.CreateInstanceRequest) for r in fake.sent) == 1
