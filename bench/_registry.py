"""What the registry benchmarks share: a private registry and tiny images pushed by API."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from pathlib import Path

import requests
import yaml

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A docker-registry of the benchmark's own on 127.0.0.1 (its storage is only ours)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    storage = work / "registry"
    config = work / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "error"},
                "storage": {"filesystem": {"rootdirectory": str(storage)}},
                "http": {"addr": host},
            }
        )
    )
    log = (work / "registry.log").open("ab")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://{host}/v2/", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.terminate()
            raise SystemExit(f"docker-registry did not start; see {work / 'registry.log'}")
        time.sleep(0.1)
    return process, host, storage


def _blob(session: requests.Session, base: str, repo: str, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = session.post(f"{base}/{repo}/blobs/uploads/", timeout=30)
    started.raise_for_status()
    location = started.headers["Location"]
    location = location if location.startswith("http") else base.removesuffix("/v2") + location
    joiner = "&" if "?" in location else "?"
    done = session.put(
        f"{location}{joiner}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    done.raise_for_status()
    return {"digest": digest, "size": len(data)}


def push_tiny_image(session: requests.Session, host: str, repo: str, tags: list[str], marker: str) -> str:
    """A one-layer OCI image (a few hundred bytes) under `tags` of `repo`; its manifest digest."""
    base = f"http://{host}/v2"
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"m": marker}}})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_blob(session, base, repo, config.encode()),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    **_blob(session, base, repo, marker.encode() * 16),
                }
            ],
        }
    ).encode()
    for tag in tags:
        put = session.put(
            f"{base}/{repo}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": MANIFEST_TYPE},
            timeout=30,
        )
        put.raise_for_status()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()
