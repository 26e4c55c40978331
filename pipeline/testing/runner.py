"""Containers for tests: one per notebook or smoke check, killed at a deadline, always removed.

Every container carries labels naming its run. A `Tracker` knows the live ones, so
Ctrl-C (KeyboardInterrupt) in the main thread can remove them while workers still wait,
and `sweep` removes whatever still carries the run's label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import requests

from pipeline.build.engine import TRANSPORT_ERRORS
from pipeline.errors import Unavailable
from pipeline.testing.artifacts import write_atomic
from pipeline.testing.model import ContainerExit

log = logging.getLogger(__name__)
RUN_LABEL = "org.envctl.run"
LOG_BYTES = 2_000_000


class Cancelled(Exception):
    """The run was interrupted before this container started."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What every test container of a run gets."""

    memory_bytes: int
    nano_cpus: int
    network: str


@dataclass
class Tracker:
    """The live containers of one run."""

    run_id: str
    _live: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def add(self, container: Any) -> None:
        with self._lock:
            if self.cancelled.is_set():
                raise Cancelled(self.run_id)
            self._live[container.id] = container

    def discard(self, container: Any) -> None:
        with self._lock:
            self._live.pop(container.id, None)

    def cancel(self) -> None:
        """Stop the run: no new container starts, every live one is removed."""
        with self._lock:
            self.cancelled.set()
            live = list(self._live.values())
        for container in live:
            remove(container)


def remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        if "already in progress" not in str(e):
            log.warning("could not remove container %s: %s", container.short_id, e)


def sweep(client: Any, run_id: str) -> int:
    """Remove every container labelled with this run; how many there were."""
    try:
        left = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        log.warning("could not list the containers of run %s: %s", run_id, e)
        return 0
    for container in left:
        remove(container)
    return len(left)


def _explain(error: Exception) -> str:
    text = str(getattr(error, "explanation", None) or error).strip()
    return text.splitlines()[0] if text else repr(error)


def pull_auth(image_ref: str) -> dict[str, str] | None:
    """Credentials for a pull from Artifact Registry (an ADC access token); None elsewhere.

    Other registries use what the engine's client config holds (`docker login`).
    """
    from pipeline.gcp import is_artifact_registry

    if not is_artifact_registry(image_ref.split("/", 1)[0]):
        return None
    from pipeline.gcp import access_token

    return {"username": "oauth2accesstoken", "password": access_token()}


def ensure_image(client: Any, image_ref: str) -> None:
    """Pull `repo@sha256:...` unless the engine has it already."""
    try:
        client.images.get(image_ref)
        return
    except docker.errors.ImageNotFound:
        pass
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        raise Unavailable(f"the Docker Engine could not look up {image_ref}: {_explain(e)}") from e
    log.info("pulling %s", image_ref)
    try:
        client.images.pull(image_ref, auth_config=pull_auth(image_ref))
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        raise Unavailable(
            f"could not pull {image_ref}: {_explain(e)}; is the registry up (`envctl stack status`)?"
        ) from e


def run_container(
    client: Any,
    tracker: Tracker,
    *,
    image_ref: str,
    command: Sequence[str],
    labels: Mapping[str, str],
    limits: Limits,
    deadline: float,
    mounts: Mapping[Path, tuple[str, str]] | None = None,
    log_file: Path | None = None,
    environment: Mapping[str, str] | None = None,
    entrypoint: Sequence[str] | None = None,
    changes: bool = False,
    user: str | None = None,
) -> ContainerExit:
    """Run one command in a fresh container from `image_ref`; kill it at `deadline` seconds.

    `mounts` maps a host folder to (container path, "ro" or "rw"). The container is
    removed on every path out of here; its output goes to `log_file`. `changes` asks for
    the paths the command added or changed in the container's own file system. `user`
    ("UID:GID") runs the command as that user rather than the image's.
    """
    container: Any = None
    started = time.monotonic()
    try:
        container = client.containers.create(
            image_ref,
            command=list(command),
            labels={RUN_LABEL: tracker.run_id, **labels},
            network_mode=limits.network,
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,
            nano_cpus=limits.nano_cpus,
            volumes={str(h): {"bind": c, "mode": m} for h, (c, m) in (mounts or {}).items()},
            init=True,
            detach=True,
            environment=dict(environment or {}),
            **({"entrypoint": list(entrypoint)} if entrypoint is not None else {}),
            **({"user": user} if user is not None else {}),
        )
        tracker.add(container)
        started = time.monotonic()
        container.start()
        deadline_hit = False
        exit_code: int | None = None
        try:
            exit_code = int(container.wait(timeout=deadline)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            if time.monotonic() - started < deadline - 1:
                raise  # the engine failed, not the deadline: reported as infrastructure
            deadline_hit = True
            log.info("container %s passed its deadline of %.0f s; killing it", container.short_id, deadline)
            try:
                container.kill()
            except docker.errors.APIError as e:
                log.debug("kill: %s", e)
        seconds = time.monotonic() - started
        if tracker.cancelled.is_set():
            raise Cancelled(tracker.run_id)
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        output: bytes = container.logs(stdout=True, stderr=True)
        changed = tuple(str(c.get("Path", "")) for c in (container.diff() or [])) if changes else ()
        if log_file is not None:
            write_atomic(log_file, output[-LOG_BYTES:])
        return ContainerExit(
            exit_code=None if deadline_hit else exit_code,
            oom_killed=oom,
            deadline_hit=deadline_hit,
            logs=output[-20_000:].decode(errors="replace"),
            seconds=seconds,
            changes=changed,
        )
    except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
        if tracker.cancelled.is_set():
            raise Cancelled(tracker.run_id) from e
        return ContainerExit(start_error=_explain(e), seconds=time.monotonic() - started)
    finally:
        if container is not None:
            remove(container)
            tracker.discard(container)


KEEP_ALIVE = ["python3", "-c", "import time\nwhile True: time.sleep(3600)"]


@dataclass
class SharedContainer:
    """One container for a whole run (`tests.isolation: run`): each notebook is a `docker exec` in it.

    Started on first use with the run's limits and mounts; removed by `close` (and by
    `sweep`, through its run label). A notebook that passes its deadline is killed with
    the container; the next one gets a fresh container.
    """

    client: Any
    tracker: Tracker
    image_ref: str
    labels: Mapping[str, str]
    limits: Limits
    mounts: Mapping[Path, tuple[str, str]]
    environment: Mapping[str, str]
    _container: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _forget(self) -> None:
        """Remove the run's container (dead, or killed at a deadline): the next notebook gets a fresh one."""
        container, self._container = self._container, None
        if container is not None:
            remove(container)
            self.tracker.discard(container)

    def _alive(self) -> bool:
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return False
        return bool(self._container.attrs.get("State", {}).get("Running"))

    def _start(self) -> Any:
        if self._container is not None and not self._alive():
            log.info("the run's container %s is gone; starting a fresh one", self._container.short_id)
            self._forget()
        if self._container is None:
            container = self.client.containers.create(
                self.image_ref,
                command=KEEP_ALIVE,
                labels={RUN_LABEL: self.tracker.run_id, **self.labels},
                network_mode=self.limits.network,
                mem_limit=self.limits.memory_bytes,
                memswap_limit=self.limits.memory_bytes,
                nano_cpus=self.limits.nano_cpus,
                volumes={str(h): {"bind": c, "mode": m} for h, (c, m) in self.mounts.items()},
                init=True,
                detach=True,
                environment=dict(self.environment),
                entrypoint=[],
            )
            self.tracker.add(container)
            try:
                container.start()
            except BaseException:
                remove(container)
                self.tracker.discard(container)
                raise
            self._container = container
        return self._container

    def close(self) -> None:
        with self._lock:
            self._forget()

    def _exit_code(self, exec_id: str, settle: float = 5.0) -> int | None:
        """The exec's exit code: the stream can close a moment before the engine records it."""
        until = time.monotonic() + settle
        while True:
            state = self.client.api.exec_inspect(exec_id)
            if not state.get("Running") or time.monotonic() >= until:
                code = state.get("ExitCode")
                return None if state.get("Running") or code is None else int(code)
            time.sleep(0.05)

    def run(self, command: Sequence[str], *, deadline: float, log_file: Path | None = None) -> ContainerExit:
        """Run `command` in the run's container; the same `ContainerExit` a fresh container gives."""
        started = time.monotonic()
        with self._lock:  # one notebook at a time: they share the container's memory and CPUs
            try:
                container = self._start()
                exec_id = self.client.api.exec_create(container.id, list(command))["Id"]
                box: dict[str, Any] = {}

                def attached() -> None:
                    try:
                        box["output"] = self.client.api.exec_start(exec_id, stream=False, demux=False)
                    except Exception as e:  # reported below, on the caller's thread
                        box["error"] = e

                started = time.monotonic()
                worker = threading.Thread(target=attached, daemon=True, name="envctl-exec")
                worker.start()
                worker.join(deadline)
                seconds = time.monotonic() - started
                if self.tracker.cancelled.is_set():
                    raise Cancelled(self.tracker.run_id)
                if worker.is_alive():
                    log.info(
                        "notebook in %s passed its deadline of %.0f s; killing it",
                        container.short_id,
                        deadline,
                    )
                    self._forget()
                    worker.join(30)
                    output = bytes(box.get("output") or b"")
                    if log_file is not None:
                        write_atomic(log_file, output[-LOG_BYTES:])
                    return ContainerExit(
                        deadline_hit=True, seconds=seconds, logs=output[-20_000:].decode(errors="replace")
                    )
                if "error" in box:
                    raise box["error"]
                output = bytes(box.get("output") or b"")
                code = self._exit_code(exec_id)
                if log_file is not None:
                    write_atomic(log_file, output[-LOG_BYTES:])
                return ContainerExit(
                    exit_code=code,
                    oom_killed=code == 137,
                    logs=output[-20_000:].decode(errors="replace"),
                    seconds=seconds,
                )
            except (docker.errors.APIError, *TRANSPORT_ERRORS) as e:
                if self.tracker.cancelled.is_set():
                    raise Cancelled(self.tracker.run_id) from e
                self._forget()  # whatever broke, the next notebook gets a fresh container
                return ContainerExit(start_error=_explain(e), seconds=time.monotonic() - started)
