"""Google Cloud instances: Vertex AI Workbench instances running the environment's image.

Requests go through google-cloud-notebooks (`notebooks_v2.NotebookServiceClient`, the
optional extra `gcp`), REST transport, built by `pipeline.gcp.Google`; tests point it at
tests/gcpfakes/notebooks.py.

Pinning the digest: Workbench's `ContainerImage` has a repository and a tag and no
digest field; the VM pulls `repository:tag`, so a tag of `sha256:…` would make an
invalid reference. envctl passes the version's own tag, its full commit SHA
(`<registry>/<image>:<sha>`), which a build writes once and nothing moves, and checks
in the registry before sending that this tag names the digest the environment points
to. The digest itself is recorded in the instance's metadata; `list` reads it back, so
the CLI can mark an instance whose environment moved since as stale.

Restart onto the environment's current version keeps the instance and its data disk
(the user's /home/jupyter): stop, `update_instance` with an update mask on
`gce_setup.container_image` (and the metadata, labels, machine type and accelerators
that changed with the version), start. `upgrade_instance` is not that: it moves the VM
to Workbench's newest VM image, not to another container. When Workbench refuses the
update, the instance is left as it was before the restart (started again on what it ran
when it was ACTIVE, STOPPED when it was stopped) and the error says so and what to do.
A create whose operation fails can leave the instance behind (it would block a retry
with "exists"): envctl deletes it, or says to run `envctl instances delete NAME` when it
can't. Creating, stopping, updating, starting and deleting are long-running operations; each
is polled with a line per state change, within `timeout`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import output
from pipeline.backends import CloudOf
from pipeline.errors import EnvctlError, Refused, Unavailable, UsageError
from pipeline.instances.model import Instance, Target, check_name
from pipeline.settings import Settings
from pipeline.spec.model import Cloud

if TYPE_CHECKING:
    from pipeline.gcp import Google

LABEL = "envctl-instance"
SHA_LABEL = "envctl-sha"
META = "envctl-"
TagDigest = Callable[[str, str], "str | None"]
#: States from which a restart may begin; every other one is on its way somewhere.
RESTARTABLE = {"ACTIVE", "STOPPED"}


def notebooks() -> Any:
    """The `google.cloud.notebooks_v2` module, or a `UsageError` saying how to install it."""
    try:
        from google.cloud import notebooks_v2
    except ImportError as e:
        raise UsageError(
            "the gcp backend needs google-cloud-notebooks; install envctl with the `gcp` extra"
        ) from e
    return notebooks_v2


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


def accelerators(nb: Any, cloud: Cloud) -> list[Any]:
    if cloud.accelerator is None:
        return []
    return [
        nb.AcceleratorConfig(
            type_=accelerator_type(nb, cloud.accelerator.type), core_count=cloud.accelerator.count
        )
    ]


def envctl_metadata(target: Target, repository: str) -> dict[str, str]:
    """What envctl keeps in the instance's metadata: the environment and the digest it runs."""
    return {
        META + "environment": str(target.env),
        META + "digest": target.digest,
        META + "image-ref": f"{repository}@{target.digest}",
    }


def create_request(nb: Any, *, parent: str, name: str, target: Target, repository: str, cloud: Cloud) -> Any:
    """The `CreateInstanceRequest` for an instance of `target` in `parent` (projects/P/locations/ZONE)."""
    setup = nb.GceSetup(
        machine_type=cloud.machine_type,
        accelerator_configs=accelerators(nb, cloud),
        container_image=nb.ContainerImage(repository=repository, tag=target.sha),
        metadata=envctl_metadata(target, repository),
    )
    instance = nb.Instance(gce_setup=setup, labels={LABEL: name, SHA_LABEL: target.sha})
    return nb.CreateInstanceRequest(parent=parent, instance_id=name, instance=instance)


def update_request(nb: Any, current: Any, *, target: Target, repository: str, cloud: Cloud) -> Any:
    """The `UpdateInstanceRequest` that moves `current` onto `target`: only what changes is in the mask."""
    setup = current.gce_setup
    wanted = nb.GceSetup(
        container_image=nb.ContainerImage(repository=repository, tag=target.sha),
        # The mask replaces the whole map: keep what Workbench and the user put there.
        metadata={**dict(setup.metadata), **envctl_metadata(target, repository)},
        machine_type=cloud.machine_type,
        accelerator_configs=accelerators(nb, cloud),
    )
    paths = ["gce_setup.container_image", "gce_setup.metadata", "labels"]
    if setup.machine_type.rsplit("/", 1)[-1] != cloud.machine_type:
        paths.append("gce_setup.machine_type")
    if _accelerators(setup.accelerator_configs) != _accelerators(wanted.accelerator_configs):
        paths.append("gce_setup.accelerator_configs")
    instance = nb.Instance(
        name=current.name, gce_setup=wanted, labels={**dict(current.labels), SHA_LABEL: target.sha}
    )
    from google.protobuf import field_mask_pb2

    return nb.UpdateInstanceRequest(instance=instance, update_mask=field_mask_pb2.FieldMask(paths=paths))


def _accelerators(configs: Any) -> list[tuple[str, int]]:
    return sorted((c.type_.name, int(c.core_count)) for c in configs)


@dataclass(frozen=True, kw_only=True)
class GcpInstances:
    """Workbench instances in one project and zone; `tag_digest(image, tag)` asks the registry."""

    google: Google
    project: str
    zone: str
    repository_of: Callable[[str], str]
    tag_digest: TagDigest
    timeout: float = 1800.0
    poll_seconds: float = 5.0

    @classmethod
    def for_settings(
        cls, settings: Settings, *, project: str | None, zone: str | None, command: str = "envctl instances"
    ) -> GcpInstances:
        """`zone` "-" reads every zone of the project (listing only: `envctl prune`)."""
        project = project or settings.gcp_project
        if not project or not zone:
            needs = f"`{command} --project P`" if zone else f"`{command} --project P --zone Z`"
            raise UsageError(
                f"the gcp backend needs {needs} "
                f"(or GOOGLE_CLOUD_PROJECT{'' if zone else ' and CLOUDSDK_COMPUTE_ZONE'})"
            )
        notebooks()
        from pipeline.backends import publisher_for
        from pipeline.gcp import Google

        publisher = publisher_for(settings)
        return cls(
            google=Google(settings),
            project=project,
            zone=zone,
            repository_of=lambda image: f"{publisher.host}/{publisher.repo(image)}",
            tag_digest=publisher.digest_of,
            poll_seconds=float(settings.gcp_build_poll),
        )

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.zone}"

    def full_name(self, name: str) -> str:
        return f"{self.parent}/instances/{name}"

    # -- the InstanceHost protocol --------------------------------------------------------

    def check_free(self, name: str, port: int | None = None) -> None:
        """`UsageError` when NAME is taken; `port` is for local instances only."""
        check_name(name)
        if self._find(name) is not None:
            raise UsageError(
                f"instance {name!r} exists in {self.parent}; delete it first or pick another name"
            )

    def create(self, name: str, target: Target, *, cloud: CloudOf, port: int | None = None) -> Instance:
        self.check_free(name)
        nb = notebooks()
        repository = self._checked_repository(target)
        request = create_request(
            nb, parent=self.parent, name=name, target=target, repository=repository, cloud=cloud()
        )
        what = f"creation of Workbench instance {self.full_name(name)}"
        operation = self._call(what, lambda: self._client().create_instance(request=request, **self._kw()))
        self._until_done(operation, name, what)
        try:
            self._raise_failure(operation, what)
        except EnvctlError as e:
            raise self._without_failed(name, e) from e
        return self._instance(self._get(name))

    def list(self) -> list[Instance]:
        nb = notebooks()
        request = nb.ListInstancesRequest(parent=self.parent, filter=f"labels.{LABEL}:*")
        found = self._call(
            f"listing Workbench instances in {self.parent}",
            lambda: list(self._client().list_instances(request=request, **self._kw())),
        )
        return sorted((self._instance(i) for i in found if LABEL in i.labels), key=lambda i: i.name)

    def get(self, name: str) -> Instance:
        return self._instance(self._get(name))

    def restart(self, name: str, target: Target, *, cloud: CloudOf) -> Instance:
        """Move NAME onto `target` keeping its data disk: stop, update the container, start."""
        nb = notebooks()
        current = self._get(name)
        state = _state(current)
        if state not in RESTARTABLE:
            raise Refused(
                f"instance {name} is {state}; wait until `envctl instances list` shows it ACTIVE or "
                f"STOPPED, then run `envctl instances restart {name}` again"
            )
        if "container_image" not in current.gce_setup:
            raise Refused(
                f"instance {name} runs a VM image, not a container, so it can't move to {target.env}; "
                f"copy your work out, `envctl instances delete {name}` and "
                f"`envctl instances create {name} --env {target.env}`"
            )
        repository = self._checked_repository(target)
        request = update_request(nb, current, target=target, repository=repository, cloud=cloud())
        if state == "ACTIVE":
            self._operation(
                "stop",
                name,
                lambda: self._client().stop_instance(request={"name": current.name}, **self._kw()),
            )
        try:
            what = f"update of Workbench instance {current.name}"
            operation = self._call(
                what, lambda: self._client().update_instance(request=request, **self._kw())
            )
            self._wait(operation, name, what)
        except EnvctlError as e:
            now = "it stays STOPPED on its previous image, as it was"
            if state == "ACTIVE":
                failed = self._start_again(name, current.name)
                now = (
                    "it runs its previous image again"
                    if failed is None
                    else f"it stays STOPPED on its previous image: starting it again failed too ({failed}); "
                    f"`envctl instances list` shows it"
                )
            raise _update_refused(e, name, target, now) from e
        self._operation(
            "start", name, lambda: self._client().start_instance(request={"name": current.name}, **self._kw())
        )
        return self._instance(self._get(name))

    def delete(self, name: str, *, purge: bool = False) -> None:
        """Delete the Workbench instance and its data disk; `purge` is for local work volumes only."""
        current = self._get(name)
        self._operation(
            "delete", name, lambda: self._client().delete_instance(name=current.name, **self._kw())
        )

    # -- parts -------------------------------------------------------------------------

    def _client(self) -> Any:
        return self.google.notebooks()

    def _kw(self) -> dict[str, Any]:
        return self.google.call()

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from pipeline.gcp import translated

        with translated(what, api="notebooks"):
            return fn()

    def _checked_repository(self, target: Target) -> str:
        """The image's repository, once its `<sha>` tag is checked to name the environment's digest."""
        repository = self.repository_of(target.env.image)
        found = self.tag_digest(target.env.image, target.sha)
        if found != target.digest:
            raise Refused(
                f"{repository}:{target.sha} names {found or 'nothing'}, not {target.digest} that "
                f"{target.env} points to; run `envctl sync {target.env.image}` and retry"
            )
        return repository

    def _find(self, name: str) -> Any | None:
        from google.api_core import exceptions

        def get() -> Any | None:
            try:
                return self._client().get_instance(name=self.full_name(name), **self._kw())
            except exceptions.NotFound:
                return None

        return self._call(f"Workbench instance {self.full_name(name)}", get)

    def _get(self, name: str) -> Any:
        check_name(name)
        found = self._find(name)
        if found is None or LABEL not in found.labels:
            raise UsageError(
                f"no instance named {name!r} in {self.parent}; `envctl instances list` shows them"
            )
        return found

    def _operation(self, verb: str, name: str, fn: Callable[[], Any]) -> None:
        what = f"{verb} of Workbench instance {self.full_name(name)}"
        self._wait(self._call(what, fn), name, what)

    def _wait(self, operation: Any, name: str, what: str) -> None:
        """Poll the long-running operation to its end; a line each time the instance's state changes."""
        self._until_done(operation, name, what)
        self._raise_failure(operation, what)

    def _until_done(self, operation: Any, name: str, what: str) -> None:
        try:
            self._poll(operation, name, what)
        except KeyboardInterrupt:
            output.warn(f"interrupted: the {what} goes on in Workbench; `envctl instances list` shows it")
            raise

    def _raise_failure(self, operation: Any, what: str) -> None:
        """The envctl error of an operation that ended in an error; nothing when it succeeded."""
        error = operation.exception(timeout=0)
        if error is not None:
            from pipeline.gcp import translate

            found_error = translate(error, what, api="notebooks")
            if found_error is None:
                raise error
            raise found_error from error

    def _poll(self, operation: Any, name: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        started = time.monotonic()
        seen = ""
        while not self._call(what, lambda: operation.done(retry=None)):
            found = self._find(name)
            state = _state(found) if found is not None else "gone"
            if state != seen:
                seen = state
                output.info(f"  {name}: {state} ({time.monotonic() - started:.0f} s)")
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the {what} is still running after {self.timeout:.0f} s (operation "
                    f"{operation.operation.name}); `envctl instances list` shows where it is"
                )
            time.sleep(self.poll_seconds)

    def _start_again(self, name: str, full: str) -> str | None:
        """After a failed update: start what the instance ran before; why that failed, or None."""
        try:
            self._operation(
                "start", name, lambda: self._client().start_instance(request={"name": full}, **self._kw())
            )
        except EnvctlError as e:
            return str(e)
        return None

    def _without_failed(self, name: str, error: EnvctlError) -> EnvctlError:
        """After a failed create: delete the instance it left behind, so that a retry can create it."""
        try:
            left = self._find(name)
            if left is None:
                return error
            output.info(f"removing instance {name}, which the failed creation left behind")
            self._operation(
                "delete", name, lambda: self._client().delete_instance(name=left.name, **self._kw())
            )
        except EnvctlError as e:
            return type(error)(
                f"{error}; removing the instance it left behind failed too ({e}): run "
                f"`envctl instances delete {name}` before trying again"
            )
        return error

    def _instance(self, instance: Any) -> Instance:
        metadata = dict(instance.gce_setup.metadata)
        disks = ", ".join(f"data disk {d.disk_size_gb} GB" for d in instance.gce_setup.data_disks)
        return Instance(
            name=instance.labels.get(LABEL) or instance.name.rsplit("/", 1)[-1],
            environment=metadata.get(META + "environment", ""),
            digest=metadata.get(META + "digest", ""),
            image_ref=metadata.get(META + "image-ref", ""),
            status=_state(instance),
            url=f"https://{instance.proxy_uri}" if instance.proxy_uri else None,
            volume=disks or None,
            created_at=instance.create_time.isoformat() if instance.create_time else None,
        )


def _update_refused(e: EnvctlError, name: str, target: Target, now: str) -> EnvctlError:
    """Workbench said no to the new container: why, where the instance is `now`, what to do instead."""
    if e.exit_code == 3:
        return e
    return Refused(
        f"Workbench would not move instance {name} to {target.env}: {e}; {now}. To move anyway: "
        "copy your work out of the instance, then "
        f"`envctl instances delete {name}` and `envctl instances create {name} --env {target.env}` "
        "(deleting the instance deletes its data disk)"
    )


def _state(instance: Any) -> str:
    return str(getattr(instance.state, "name", instance.state))
