"""A fake of the Vertex AI Workbench API (notebooks v2, REST), as `notebooks_v2.NotebookServiceClient` calls it.

State: instances by full name, each a `notebooks_v2.Instance` (state, machine type,
accelerator configs, container image, metadata, labels, data disks) and the identity of
its data disk (`data_disk_of(name)`: the Compute Engine disk that holds the user's work,
kept across stop, update and start, gone with the instance).

Served: instances create (`POST .../instances?instanceId=`), get, list (with the
`labels.KEY:*` filter), patch (`updateMask`: machine type, accelerators, container image
and metadata only while STOPPED, labels any time), `:stop`, `:start`, delete. Every write
is a long-running operation at `/v2/.../operations/*` that finishes after
`reads_to_finish` reads of it; the instance's state moves as Workbench's does
(PROVISIONING -> ACTIVE, STOPPING -> STOPPED, STARTING -> ACTIVE). `script_error(verb, ...)`
makes the next operation of that verb end in an error (a GPU quota, a zone out of capacity);
as in Workbench, a create that ends in an error leaves its instance behind (STOPPED, with
its data disk) until it is deleted.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from tests.gcpfakes.rest import FakeRequest, FakeRestServer, GoogleError, proto_json

LOCATION = r"/v2/(?P<parent>projects/[^/]+/locations/[^/]+)"
INSTANCE = LOCATION + r"/instances/(?P<id>[^/:]+)"
#: What an update may change, and whether the instance must be stopped for it.
UPDATABLE = {
    "gce_setup.machine_type": True,
    "gce_setup.accelerator_configs": True,
    "gce_setup.container_image": True,
    "gce_setup.metadata": False,
    "labels": False,
}
DEFAULT_DISK_GB = 100


def _in_parent(name: str, parent: str) -> bool:
    """`projects/P/locations/-` (every location, as Google's list calls read it) or one location."""
    if parent.endswith("/locations/-"):
        return re.fullmatch(re.escape(parent[:-1]) + r"[^/]+/instances/[^/]+", name) is not None
    return name.startswith(parent + "/instances/")


def _snake(path: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), path)


@dataclass
class _Pending:
    """An operation in flight: what it does to which instance once it is done."""

    name: str
    verb: str
    instance: str
    final_state: str | None  # None: the instance is deleted at the end
    reads: int = 0
    error: GoogleError | None = None


class FakeNotebooks(FakeRestServer):
    """Workbench instances in memory; every state change goes through an operation."""

    def __init__(self, *, reads_to_finish: int = 2) -> None:
        super().__init__()
        from google.cloud import notebooks_v2 as nb

        self.nb = nb
        self.instances: dict[str, Any] = {}  # full name -> nb.Instance
        self.disks: dict[str, str] = {}  # full name -> the data disk's Compute Engine name
        self.reads_to_finish = reads_to_finish
        self._pending: dict[str, _Pending] = {}
        self._errors: dict[str, deque[GoogleError]] = {}
        self.route("GET", r"/v2/(?P<name>projects/[^/]+/locations/[^/]+/operations/[^/]+)")(self._operation)
        self.route("POST", LOCATION + r"/instances")(self._create)
        self.route("GET", LOCATION + r"/instances")(self._list)
        self.route("GET", INSTANCE)(self._get)
        self.route("PATCH", INSTANCE)(self._update)
        self.route("POST", INSTANCE + r":stop")(self._stop)
        self.route("POST", INSTANCE + r":start")(self._start)
        self.route("DELETE", INSTANCE)(self._delete)

    # -- what tests script and read ------------------------------------------------------

    def script_error(self, verb: str, error: GoogleError) -> None:
        """The next operation `verb` (create, stop, update, start, delete) ends with `error`."""
        with self.lock:
            self._errors.setdefault(verb, deque()).append(error)

    def instance(self, name: str) -> Any:
        """The instance whose ID or full name is `name`, or None."""
        with self.lock:
            for full, found in self.instances.items():
                if name in {full, full.rsplit("/", 1)[-1]}:
                    return self.nb.Instance.deserialize(self.nb.Instance.serialize(found))
        return None

    def data_disk_of(self, name: str) -> str | None:
        with self.lock:
            return next(
                (d for full, d in self.disks.items() if name in {full, full.rsplit("/", 1)[-1]}), None
            )

    def writes(self) -> list[FakeRequest]:
        """The requests that could change state, in order (no GET)."""
        return [r for r in self.sent() if r.method != "GET"]

    # -- operations ----------------------------------------------------------------------

    def _begin(self, parent: str, verb: str, instance: str, final_state: str | None) -> str:
        name = f"{parent}/operations/operation-{secrets.token_hex(6)}"
        errors = self._errors.get(verb)
        pending = _Pending(name, verb, instance, final_state, error=errors.popleft() if errors else None)
        with self.lock:
            self._pending[name] = pending
        return self._keep(pending, done=False)

    def _keep(self, pending: _Pending, *, done: bool) -> str:
        nb = self.nb
        metadata = nb.OperationMetadata(
            target=pending.instance, verb=pending.verb, api_version="v2", status_message=""
        )
        response: Any = None
        if done and pending.error is None:
            from google.protobuf import empty_pb2

            gone = pending.final_state is None
            response = empty_pb2.Empty() if gone else self.instances[pending.instance]
        return self.add_operation(
            pending.name,
            done=done,
            metadata=metadata,
            response=response,
            error=pending.error if done else None,
        )

    def _operation(self, request: FakeRequest) -> Any:
        with self.lock:
            pending = self._pending.get(request.groups["name"])
            if pending is not None:
                pending.reads += 1
                if pending.reads >= self.reads_to_finish:
                    del self._pending[pending.name]
                    self._finish(pending)
        return self._get_operation(request)

    def _finish(self, pending: _Pending) -> None:
        found = self.instances.get(pending.instance)
        if pending.error is not None:
            if found is not None:
                found.state = self._rest_state(pending.verb)
        elif pending.final_state is None:
            self.instances.pop(pending.instance, None)
            self.disks.pop(pending.instance, None)
        elif found is not None:
            found.state = self.nb.State[pending.final_state]
            found.update_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if pending.final_state == "ACTIVE" and not found.proxy_uri:
                found.proxy_uri = f"{secrets.token_hex(8)}-dot-us-central1.notebooks.googleusercontent.com"
            if pending.final_state == "STOPPED":
                found.proxy_uri = ""
        self._keep(pending, done=True)

    def _rest_state(self, verb: str) -> Any:
        """Where a failed operation leaves the instance: as it was before it (a failed create: STOPPED)."""
        return self.nb.State["ACTIVE" if verb == "stop" else "STOPPED"]

    # -- instances -----------------------------------------------------------------------

    def _find(self, request: FakeRequest) -> tuple[str, Any]:
        name = f"{request.groups['parent']}/instances/{request.groups['id']}"
        found = self.instances.get(name)
        if found is None:
            raise GoogleError("NOT_FOUND", f"Resource '{name}' was not found")
        return name, found

    def _create(self, request: FakeRequest) -> str:
        nb = self.nb
        parent = request.groups["parent"]
        instance_id = request.param("instanceId")
        if not re.fullmatch(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?", instance_id):
            raise GoogleError("INVALID_ARGUMENT", f"invalid instance id {instance_id!r}")
        body = request.message(nb.Instance)
        setup = body.gce_setup
        if not setup.machine_type:
            raise GoogleError("INVALID_ARGUMENT", "gce_setup.machine_type is required")
        if "vm_image" in setup and "container_image" in setup:
            raise GoogleError("INVALID_ARGUMENT", "set one of vm_image and container_image")
        image = setup.container_image
        if "container_image" in setup and (not image.repository or not image.tag):
            raise GoogleError("INVALID_ARGUMENT", "container_image needs a repository and a tag")
        name = f"{parent}/instances/{instance_id}"
        with self.lock:
            if name in self.instances:
                raise GoogleError("ALREADY_EXISTS", f"Resource '{name}' already exists")
            body.name = name
            body.id = secrets.token_hex(8)
            body.state = nb.State.PROVISIONING
            body.creator = "tester@example.com"
            body.create_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if not setup.data_disks:
                setup.data_disks.append(
                    nb.DataDisk(disk_size_gb=DEFAULT_DISK_GB, disk_type=nb.DiskType.PD_BALANCED)
                )
            zone = parent.rsplit("/", 1)[-1]
            self.disks[name] = (
                f"projects/{parent.split('/')[1]}/zones/{zone}/disks/{instance_id}-data-{body.id}"
            )
            self.instances[name] = body
            return self._begin(parent, "create", name, "ACTIVE")

    def _get(self, request: FakeRequest) -> str:
        with self.lock:
            return proto_json(self._find(request)[1])

    def _list(self, request: FakeRequest) -> dict[str, Any]:
        parent = request.groups["parent"]
        wanted = request.param("filter")
        match = re.fullmatch(r"labels\.([a-z0-9_-]+):\*", wanted) if wanted else None
        if wanted and match is None:
            raise GoogleError("INVALID_ARGUMENT", f"fake: filter {wanted!r} is not served")
        with self.lock:
            items = [
                json.loads(proto_json(i))
                for name, i in sorted(self.instances.items())
                if _in_parent(name, parent) and (match is None or match[1] in i.labels)
            ]
        return {"instances": items}

    def _stop(self, request: FakeRequest) -> str:
        with self.lock:
            name, found = self._find(request)
            if found.state != self.nb.State.ACTIVE:
                raise GoogleError("FAILED_PRECONDITION", f"instance {name} is {found.state.name}, not ACTIVE")
            found.state = self.nb.State.STOPPING
            return self._begin(request.groups["parent"], "stop", name, "STOPPED")

    def _start(self, request: FakeRequest) -> str:
        with self.lock:
            name, found = self._find(request)
            if found.state != self.nb.State.STOPPED:
                raise GoogleError(
                    "FAILED_PRECONDITION", f"instance {name} is {found.state.name}, not STOPPED"
                )
            found.state = self.nb.State.STARTING
            return self._begin(request.groups["parent"], "start", name, "ACTIVE")

    def _update(self, request: FakeRequest) -> str:
        nb = self.nb
        mask = [_snake(p) for p in request.param("updateMask").split(",") if p]
        if not mask:
            raise GoogleError("INVALID_ARGUMENT", "update_mask is required")
        unknown = [p for p in mask if p not in UPDATABLE]
        if unknown:
            raise GoogleError(
                "INVALID_ARGUMENT", f"update_mask names fields that can't be updated: {unknown}"
            )
        body = request.message(nb.Instance)
        with self.lock:
            name, found = self._find(request)
            if body.name and body.name != name:
                raise GoogleError("INVALID_ARGUMENT", f"instance.name {body.name!r} does not match the URL")
            if any(UPDATABLE[p] for p in mask) and found.state != nb.State.STOPPED:
                raise GoogleError(
                    "FAILED_PRECONDITION",
                    f"instance {name} must be STOPPED to change {', '.join(p for p in mask if UPDATABLE[p])}; "
                    f"it is {found.state.name}",
                )
            for path in mask:
                if path == "labels":
                    found.labels = dict(body.labels)
                    continue
                field = path.removeprefix("gce_setup.")
                if field == "metadata":
                    found.gce_setup.metadata = dict(body.gce_setup.metadata)
                elif field == "accelerator_configs":
                    del found.gce_setup.accelerator_configs[:]
                    found.gce_setup.accelerator_configs.extend(body.gce_setup.accelerator_configs)
                elif field == "container_image":
                    image = body.gce_setup.container_image
                    if not image.repository or not image.tag:
                        raise GoogleError("INVALID_ARGUMENT", "container_image needs a repository and a tag")
                    found.gce_setup.container_image = image
                else:
                    setattr(found.gce_setup, field, getattr(body.gce_setup, field))
            state = found.state.name
            return self._begin(request.groups["parent"], "update", name, state)

    def _delete(self, request: FakeRequest) -> str:
        with self.lock:
            name, found = self._find(request)
            found.state = self.nb.State.DELETED
            return self._begin(request.groups["parent"], "delete", name, None)
