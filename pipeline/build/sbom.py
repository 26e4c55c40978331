"""The software bill of materials of a built image: pip, conda where present, dpkg.

Taken inside the image (one short container, no network) and stored with the version.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import docker.errors

from pipeline.build.engine import TRANSPORT_ERRORS
from pipeline.errors import Unavailable

# Runs with the image's own python; prints one JSON document.
SCRIPT = r"""
import json, os, platform, shutil, subprocess, sys
def run(args, ok_only=False):
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except Exception:
        return ""
    return "" if ok_only and done.returncode != 0 else done.stdout
out = {"python": platform.python_version(), "pip": [], "dpkg": []}
try:
    out["pip"] = [{"name": p["name"], "version": p["version"]}
                  for p in json.loads(run([sys.executable, "-m", "pip", "list", "--format", "json"]) or "[]")]
except ValueError:
    pass
for line in run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n"]).splitlines():
    name, _, version = line.partition("\t")
    if name:
        out["dpkg"].append({"name": name, "version": version})
try:  # top-level import names (what `envctl lint` ENV002 compares imports with)
    import importlib.metadata as md
    out["modules"] = sorted(md.packages_distributions())
except Exception:
    pass
out["env"] = sorted(os.environ)  # names only: what the image's config sets
if shutil.which("conda"):  # only what a working conda lists: a failing one records nothing
    try:
        out["conda"] = [{"name": p["name"], "version": p["version"]}
                        for p in json.loads(run(["conda", "list", "--json"], ok_only=True))]
    except ValueError:
        pass
print(json.dumps(out))
"""


def collect(client: Any, image: str, *, timeout: int = 300) -> dict[str, Any]:
    """Run the SBOM script inside `image` and return its result."""
    container = None
    try:
        container = client.containers.create(
            image,
            command=["python3", "-c", SCRIPT],
            entrypoint=[],
            network_mode="none",
            labels={"org.envctl.purpose": "sbom"},
        )
        container.start()
        status = container.wait(timeout=timeout)
        logs = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if status.get("StatusCode") != 0:
            raise Unavailable(f"the SBOM of {image} could not be taken (exit {status.get('StatusCode')})")
        data: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
        return data
    except (docker.errors.DockerException, *TRANSPORT_ERRORS, ValueError, IndexError) as e:
        raise Unavailable(f"the SBOM of {image} could not be taken: {e}") from e
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
