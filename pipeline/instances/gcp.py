"""Google Cloud instances: Vertex AI Workbench instances running the environment's image.

Requests are built with google-cloud-notebooks (`notebooks_v2`, the optional extra
`gcp`) and sent through `WorkbenchClient`, the part of `NotebookServiceClient` envctl
uses; tests pass a fake that records what would be sent.

Pinning the digest: Workbench's `ContainerImage` has a repository and a tag and no
digest field; the VM pulls `repository:tag`, so a tag of `sha256:…` would make an
invalid reference. envctl passes the version's own tag, its full commit SHA
(`<registry>/<image>:<sha>`), which a build writes once and nothing moves, and checks
in the registry before sending that this tag names the digest the environment points
to. The digest itself is recorded in the instance's metadata.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.backends import CloudOf
from pipeline.errors import Refused, Unavailable, UsageError
from pipeline.instances.model import Instance, Target, check_name
from pipeline.settings import Settings
from pipeline.spec.model import Cloud

LABEL = "envctl-instance"
META = "envctl-"
TagDigest = Callable[[str, str], "str | None"]


def notebooks() -> Any:
    """The `google.cloud.notebooks_v2` module, or a `UsageError` saying how to install it."""
    try:
        return importlib.import_module("google.cloud.notebooks_v2")
    except ImportError as e:
        raise UsageError(
            "the gcp backend needs google-cloud-notebooks; install envctl with the `gcp` extra"
        ) from e


def real_client() -> WorkbenchClient:
    """`NotebookServiceClient` with the application default credentials."""
    with google_errors("connecting to Vertex AI Workbench"):
        client: WorkbenchClient = notebooks().NotebookServiceClient()
    return client


@contextlib.contextmanager
def google_errors(what: str) -> Iterator[None]:
    """Google API and auth errors as `Unavailable`, one line."""
    try:
        yield
    except Exception as e:
        if not type(e).__module__.startswith("google."):
            raise
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise Unavailable(f"{what} failed: {first}; check `gcloud auth application-default login`") from e


class WorkbenchClient(Protocol):
    """What envctl calls on `notebooks_v2.NotebookServiceClient`; create and delete return operations."""

    def create_instance(self, *, request: Any) -> Any: ...

    def list_instances(self, *, request: Any) -> Iterable[Any]: ...

    def delete_instance(self, *, request: Any) -> Any: ...


def accelerator_type(nb: Any, name: str) -> Any:
    """The Workbench enum for a spec's `cloud.accelerator.type`: NVIDIA_TESLA_T4 or nvidia-tesla-t4."""
    kinds = nb.AcceleratorConfig.AcceleratorType
    key = re.sub(r"[-\s]+", "_", name.strip()).upper()
    if key not in kinds.__members__ or key.endswith("UNSPECIFIED"):
        valid = ", ".join(k for k in kinds.__members__ if not k.endswith("UNSPECIFIED"))
        raise UsageError(
            f"cloud.accelerator.type {name!r} is not a Workbench accelerator; use one of {valid}"
        )
    return kinds[key]


def create_request(nb: Any, *, parent: str, name: str, target: Target, repository: str, cloud: Cloud) -> Any:
    """The `CreateInstanceRequest` for an instance of `target` in `parent` (projects/P/locations/ZONE)."""
    accelerators = []
    if cloud.accelerator is not None:
        accelerators.append(
            nb.AcceleratorConfig(
                type_=accelerator_type(nb, cloud.accelerator.type), core_count=cloud.accelerator.count
            )
        )
    setup = nb.GceSetup(
        machine_type=cloud.machine_type,
        accelerator_configs=accelerators,
        container_image=nb.ContainerImage(repository=repository, tag=target.sha),
        metadata={
            META + "environment": str(target.env),
            META + "digest": target.digest,
            META + "image-ref": f"{repository}@{target.digest}",
        },
    )
    instance = nb.Instance(gce_setup=setup, labels={LABEL: name, "envctl-sha": target.sha})
    return nb.CreateInstanceRequest(parent=parent, instance_id=name, instance=instance)


@dataclass(frozen=True, kw_only=True)
class GcpInstances:
    """Workbench instances in one project and zone; `tag_digest(image, tag)` asks the registry."""

    client: WorkbenchClient
    project: str
    zone: str
    registry: str
    tag_digest: TagDigest
    timeout: float = 1800.0

    @classmethod
    def for_settings(cls, settings: Settings, *, project: str | None, zone: str | None) -> GcpInstances:
        if not project or not zone:
            raise UsageError(
                "the gcp backend needs `envctl instances --project P --zone Z` "
                "(or GOOGLE_CLOUD_PROJECT and CLOUDSDK_COMPUTE_ZONE)"
            )
        from pipeline.backends import publisher_for

        publisher = publisher_for(settings)
        return cls(
            client=real_client(),
            project=project,
            zone=zone,
            registry=settings.registry,
            tag_digest=publisher.digest_of,
        )

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.zone}"

    def repository(self, image: str) -> str:
        return f"{self.registry}/{image}"

    def check_free(self, name: str, port: int | None = None) -> None:
        """`UsageError` when NAME is taken; `port` is for local instances only."""
        check_name(name)
        if any(i.name == name for i in self.list()):
            raise UsageError(
                f"instance {name!r} exists in {self.parent}; delete it first or pick another name"
            )

    def create(self, name: str, target: Target, *, cloud: CloudOf, port: int | None = None) -> Instance:
        self.check_free(name)
        nb = notebooks()
        found = self.tag_digest(target.env.image, target.sha)
        if found != target.digest:
            raise Refused(
                f"{self.repository(target.env.image)}:{target.sha} names {found or 'nothing'}, "
                f"not {target.digest} that {target.env} points to; run `envctl sync` and retry"
            )
        request = create_request(
            nb,
            parent=self.parent,
            name=name,
            target=target,
            repository=self.repository(target.env.image),
            cloud=cloud(),
        )
        with google_errors(f"creating Workbench instance {name}"):
            self.client.create_instance(request=request).result(timeout=self.timeout)
        return self._instance(request.instance, name, status="ACTIVE")

    def list(self) -> list[Instance]:
        nb = notebooks()
        request = nb.ListInstancesRequest(parent=self.parent, filter=f"labels.{LABEL}:*")
        found = [
            self._instance(i, i.labels[LABEL], status=_state(i))
            for i in _listed(self.client, request)
            if LABEL in i.labels
        ]
        return sorted(found, key=lambda i: i.name)

    def get(self, name: str) -> Instance:
        check_name(name)
        for instance in self.list():
            if instance.name == name:
                return instance
        raise UsageError(f"no instance named {name!r} in {self.parent}; `envctl instances list` shows them")

    def restart(self, name: str, target: Target, *, cloud: CloudOf) -> Instance:
        self.get(name)
        raise UsageError(
            f"restart is not supported on the gcp backend yet; `envctl instances delete {name}` "
            f"and create it again from {target.env}"
        )

    def delete(self, name: str, *, purge: bool = False) -> None:
        """Delete the Workbench instance; `purge` is for local work volumes only."""
        check_name(name)
        if not any(i.name == name for i in self.list()):
            raise UsageError(
                f"no instance named {name!r} in {self.parent}; `envctl instances list` shows them"
            )
        request = notebooks().DeleteInstanceRequest(name=f"{self.parent}/instances/{name}")
        with google_errors(f"deleting Workbench instance {name}"):
            self.client.delete_instance(request=request).result(timeout=self.timeout)

    def _instance(self, instance: Any, name: str, *, status: str) -> Instance:
        metadata = dict(instance.gce_setup.metadata)
        return Instance(
            name=name,
            environment=metadata.get(META + "environment", ""),
            digest=metadata.get(META + "digest", ""),
            image_ref=metadata.get(META + "image-ref", ""),
            status=status,
            url=f"https://{instance.proxy_uri}" if instance.proxy_uri else None,
            volume=None,
            created_at=None,
        )


def _listed(client: WorkbenchClient, request: Any) -> list[Any]:
    with google_errors("listing Workbench instances"):
        return list(client.list_instances(request=request))


def _state(instance: Any) -> str:
    return str(getattr(instance.state, "name", instance.state))
