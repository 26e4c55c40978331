"""Image checks, after the build and before the notebooks: IMG001-IMG004.

Each check runs inside the version (no network, the spec's limits, the image's own
user) and ends as a `Result` of kind "check"; a failed check is evidence like a
failing notebook: staging doesn't move and the report names the check and the fix.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.spec.lint.catalog import CHECKS
from pipeline.testing.model import ContainerExit, Result, Verdict
from pipeline.testing.probe import SCRIPT
from pipeline.testing.runner import Limits, run_container
from pipeline.testing.tasks import Run

log = logging.getLogger(__name__)
PROBE_DEADLINE = 300.0
BATCH_ROOT = "/envctl/batch"
# Shared library -> (Debian package, conda package) that provides it.
LIBRARIES: dict[str, tuple[str, str]] = {
    "libgomp.so.1": ("libgomp1", "libgomp"),
    "libgfortran.so.5": ("libgfortran5", "libgfortran5"),
    "libquadmath.so.0": ("libquadmath0", "libgcc-ng"),
    "libstdc++.so.6": ("libstdc++6", "libstdcxx-ng"),
    "libGL.so.1": ("libgl1", "libglvnd"),
    "libEGL.so.1": ("libegl1", "libglvnd"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib"),
    "libSM.so.6": ("libsm6", "xorg-libsm"),
    "libICE.so.6": ("libice6", "xorg-libice"),
    "libX11.so.6": ("libx11-6", "xorg-libx11"),
    "libXext.so.6": ("libxext6", "xorg-libxext"),
    "libXrender.so.1": ("libxrender1", "xorg-libxrender"),
    "libsndfile.so.1": ("libsndfile1", "libsndfile"),
    "libopenblas.so.0": ("libopenblas0", "openblas"),
    "libgeos_c.so.1": ("libgeos-c1v5", "geos"),
    "libaio.so.1": ("libaio1", "libaio"),
    "libnuma.so.1": ("libnuma1", "numactl"),
    "libpq.so.5": ("libpq5", "libpq"),
    "libodbc.so.2": ("unixodbc", "unixodbc"),
    "libxml2.so.2": ("libxml2", "libxml2"),
    "libjpeg.so.62": ("libjpeg62-turbo", "jpeg"),
    "libpng16.so.16": ("libpng16-16", "libpng"),
    "libz.so.1": ("zlib1g", "zlib"),
    "libffi.so.8": ("libffi8", "libffi"),
    "libssl.so.3": ("libssl3", "openssl"),
    "libcrypto.so.3": ("libssl3", "openssl"),
}
# Provided by the host's GPU driver at run time, never by the image.
DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-", "libnvcuvid.so", "libnvidia-ml.so")


def _result(check: str, *, problems: list[str], fix: str, seconds: float) -> Result:
    rule = CHECKS[check]
    verdict = (
        Verdict(outcome="failed", error=f"{check} {rule.title}: " + "; ".join(problems), hint=fix)
        if problems
        else Verdict(outcome="passed", hint="")
    )
    return Result(name=f"{check} {rule.title}", kind="check", verdict=verdict, seconds=seconds)


def image_config(run: Run) -> dict[str, Any]:
    config: dict[str, Any] = run.client.images.get(run.version.image_ref).attrs.get("Config") or {}
    return config


def _entry(config: dict[str, Any]) -> str:
    words = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    return str(words[0]) if words else ""


def probe(
    run: Run, config: dict[str, Any], folders: list[str]
) -> tuple[dict[str, Any] | None, ContainerExit]:
    want = {"kernel": run.spec.tests.kernel or "python3", "entry": _entry(config), "folders": folders}
    ran = run_container(
        run.client,
        run.tracker,
        image_ref=run.version.image_ref,
        command=["python3", "-c", SCRIPT],
        entrypoint=[],
        labels=run.labels("check:probe"),
        limits=Limits(memory_bytes=run.limits.memory_bytes, nano_cpus=run.limits.nano_cpus, network="none"),
        deadline=PROBE_DEADLINE,
        log_file=run.run_dir / "checks" / "probe.log",
        environment={"ENVCTL_PROBE": json.dumps(want)},
    )
    lines = [line for line in ran.logs.splitlines() if line.startswith("{")]
    if ran.exit_code != 0 or not lines:
        return None, ran
    try:
        found: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return None, ran
    return found, ran


def img001(facts: dict[str, Any], dockerfile: str, seconds: float) -> Result:
    problems: list[str] = []
    packages: list[str] = []
    for item in facts.get("elf", {}).get("missing", []):
        libraries = [lib for lib in item["libraries"] if not lib.startswith(DRIVER_LIBRARIES)]
        if not libraries:
            continue
        owner = item.get("distribution") or "no known distribution"
        named = []
        for lib in libraries:
            debian, conda = LIBRARIES.get(lib, ("", ""))
            named.append(f"{lib} (Debian {debian}, conda {conda})" if debian else lib)
            if debian and debian not in packages:
                packages.append(debian)
        problems.append(f"{item['file']} of {owner} needs {', '.join(named)}: not found")
    fix = (
        f"add `RUN apt-get update && apt-get install -y --no-install-recommends {' '.join(packages)}` "
        f"to {dockerfile}"
        if packages
        else f"install the system packages that provide these libraries in {dockerfile}"
    )
    return _result("IMG001", problems=problems, fix=fix, seconds=seconds)


def img002(
    facts: dict[str, Any] | None, ran: ContainerExit, config: dict[str, Any], dockerfile: str
) -> Result:
    problems: list[str] = []
    if facts is None:
        detail = ran.start_error or next(
            (line.strip() for line in reversed(ran.logs.splitlines()) if line.strip()), ""
        )
        problems.append(f"python3 does not start in the image ({detail or f'exit {ran.exit_code}'})")
        return _result(
            "IMG002", problems=problems, fix=f"install Python 3 in {dockerfile}", seconds=ran.seconds
        )
    kernel = facts["kernel"]
    if kernel.get("error"):
        problems.append(f"the kernel {kernel['name']!r} does not start ipykernel: {kernel['error']}")
    papermill = facts["papermill"]
    if not papermill.get("path"):
        problems.append("papermill is not on PATH")
    elif papermill.get("error"):
        problems.append(f"papermill does not run: {papermill['error']}")
    entry = facts["entry"]
    if entry.get("program") and not entry.get("ok"):
        what = "ENTRYPOINT" if config.get("Entrypoint") else "CMD"
        problems.append(f"the image's {what} {entry['program']!r} is not an executable file in the image")
    fix = f"install papermill and ipykernel in {dockerfile} (pip install papermill ipykernel)"
    if entry.get("program") and not entry.get("ok"):
        fix += "; point ENTRYPOINT/CMD at a program the image has"
    return _result("IMG002", problems=problems, fix=fix, seconds=ran.seconds)


def img004(facts: dict[str, Any], dockerfile: str, seconds: float) -> Result:
    user = facts["user"]
    who = f"user {user['name']} (uid {user['uid']})"
    problems: list[str] = []
    if user.get("home_error"):
        problems.append(f"{who}: HOME {user.get('home') or '(unset)'} is not writable ({user['home_error']})")
    if user.get("cwd_error"):
        problems.append(f"{who}: the working folder {user['cwd']} is not writable ({user['cwd_error']})")
    for folder, error in (user.get("folders") or {}).items():
        if error:
            problems.append(f"{who}: {folder}, which a notebook writes to, is not writable ({error})")
    home = user.get("home") or "/home/jupyter"
    fix = f"in {dockerfile}, create {home} and `chown` it (and the WORKDIR) to {user['name']}"
    return _result("IMG004", problems=problems, fix=fix, seconds=seconds)


def _written_elsewhere(changes: tuple[str, ...]) -> list[str]:
    ignored = (
        BATCH_ROOT,
        "/tmp",
        "/proc",
        "/dev",
        "/sys",
        "/run",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
    )
    kept = [
        p
        for p in changes
        if not any(p == i or p.startswith(i + "/") or i.startswith(p + "/") for i in ignored)
    ]
    kept = [p for p in kept if "/.cache/" not in p and "__pycache__" not in p]
    # Keep the deepest paths: /data/out.json rather than /data as well.
    return sorted(p for p in kept if not any(o.startswith(p + "/") for o in kept))


def img003(run: Run) -> Result | None:
    batch = run.spec.batch
    if batch is None:
        return None
    started = time.monotonic()
    mounts: dict[Path, tuple[str, str]] = {}
    environment: dict[str, str] = dict(run.spec.tests.env)
    folders: dict[str, Path] = {}
    for name in batch.all_variables:
        host = run.work / "batch" / name.lower()
        host.mkdir(parents=True, exist_ok=True)
        host.chmod(0o777)
        inside = f"{BATCH_ROOT}/{name.lower()}"
        mounts[host] = (inside, "rw")
        environment[name] = inside
        folders[name] = host
    ran = run_container(
        run.client,
        run.tracker,
        image_ref=run.version.image_ref,
        command=[],
        entrypoint=batch.command or None,
        labels=run.labels("check:batch"),
        limits=Limits(memory_bytes=run.limits.memory_bytes, nano_cpus=run.limits.nano_cpus, network="none"),
        deadline=float(batch.timeout),
        mounts=mounts,
        log_file=run.run_dir / "checks" / "batch.log",
        environment=environment,
        changes=True,
    )
    problems: list[str] = []
    command = " ".join(batch.command) or "the image's ENTRYPOINT/CMD"
    if ran.start_error:
        problems.append(f"{command} did not start: {ran.start_error}")
    elif ran.deadline_hit:
        problems.append(f"{command} still ran after {batch.timeout} s (batch.timeout); killed")
    elif ran.oom_killed:
        problems.append(f"{command} ran out of memory ({run.spec.tests.resources.memory})")
    elif ran.exit_code != 0:
        last = next((line.strip() for line in reversed(ran.logs.splitlines()) if line.strip()), "")
        problems.append(f"{command} exited {ran.exit_code}" + (f": {last}" if last else ""))
    empty = [name for name in batch.outputs if not any(p.is_file() for p in folders[name].rglob("*"))]
    if empty:
        problems.append(f"nothing was written to {', '.join(empty)}")
    elsewhere = _written_elsewhere(ran.changes)
    if elsewhere and (problems or empty):
        shown = ", ".join(elsewhere[:5]) + (f" and {len(elsewhere) - 5} more" if len(elsewhere) > 5 else "")
        problems.append(f"written elsewhere: {shown}")
    fix = (
        f"write the outputs under os.environ[{batch.outputs[0]!r}]"
        if batch.outputs
        else "read the AIP_* variables"
    ) + " instead of fixed folders; batch jobs keep only what lands in the AIP_* locations"
    return _result("IMG003", problems=problems, fix=fix, seconds=time.monotonic() - started)


def run_checks(run: Run, folders: list[str] | None = None) -> list[Result]:
    """IMG002, IMG001, IMG004 from one probe container, then IMG003 when the spec has `batch:`.

    `folders`: absolute folders the notebooks write to (IMG004 checks the user can).
    """
    config = image_config(run)
    dockerfile = run.spec.build.dockerfile
    facts, ran = probe(run, config, folders or [])
    results = [img002(facts, ran, config, dockerfile)]
    if facts is not None:
        results.append(img001(facts, dockerfile, ran.seconds))
        results.append(img004(facts, dockerfile, ran.seconds))
    batch = img003(run)
    if batch is not None:
        results.append(batch)
    return sorted(results, key=lambda r: r.name)
