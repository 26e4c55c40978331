"""Benchmark: `envctl promote` against `docker pull && docker tag && docker push` of one image.

Builds an image of ~550 MB (the local base, ~350 MB, plus a RUN writing 200 MB of
random data), pushes it to a docker-registry of the benchmark's own on 127.0.0.1 (so
the registry's storage is only ours to measure), then in one run times:

- promotion: `envctl promote IMAGE.production --rev SHA` (ledger transaction, then a
  manifest-level retag), and
- the docker way: remove the local copy, `docker pull`, `docker tag`, `docker push`.

Prints both times, the ratio, and the blob bytes the registry stored during each (the
promotion must add 0: no layer moves).

Run: .venv/bin/python bench/promote.py  (needs `envctl stack up`)
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.backends import ContextFile  # noqa: E402
from pipeline.build.engine import build, connect, context_tar, push  # noqa: E402
from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run  # noqa: E402
from pipeline.publish.oci import Registry  # noqa: E402

BASE = "localhost:5000/dlc/base-cpu:local"
DOCKERFILE = (
    f"FROM {BASE}\nRUN head -c 200000000 /dev/urandom > /opt/bench-payload && echo {{}} > /opt/marker\n"
)


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    return result.stdout.strip()


def blob_bytes(storage: Path) -> int:
    blobs = storage / "docker" / "registry" / "v2" / "blobs"
    return sum(p.stat().st_size for p in blobs.rglob("data") if p.is_file()) if blobs.exists() else 0


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
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
    while not Registry(host, timeout=2).ping():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"docker-registry did not start; see {work / 'registry.log'}")
        time.sleep(0.1)
    return process, host, storage


def main() -> None:
    client = connect()
    work = Path(tempfile.mkdtemp(prefix="envctl-bench-"))
    image = f"bench.promote-{secrets.token_hex(3)}"
    process, host, storage = start_registry(work)
    local_tag = f"envctl-bench/{image}:payload"
    try:
        repo = work / "repo"
        repo.mkdir()
        run("git", "init", "-q", "-b", "main", cwd=repo)
        (repo / "README").write_text("bench\n")
        run("git", "add", "-A", cwd=repo)
        run(
            "git",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "bench",
            cwd=repo,
        )
        sha = run("git", "rev-parse", "HEAD", cwd=repo)

        print(f"building {image} (base + 200 MB of random data) ...", file=sys.stderr)
        context = context_tar({"Dockerfile": ContextFile(DOCKERFILE.format(uuid.uuid4().hex).encode())})
        build(client, context=context, dockerfile="Dockerfile", tag=local_tag, buildargs={}, labels={})
        size = client.images.get(local_tag).attrs["Size"]
        ref = f"{host}/{image}:{sha}"
        client.images.get(local_tag).tag(ref)
        print(f"pushing {size / 1e6:.0f} MB to the bench registry {host} ...", file=sys.stderr)
        digest = push(client, ref)

        ledger_url = f"sqlite:///{work / 'ledger.db'}"
        ledger = Ledger.open(ledger_url)
        ledger.record_version(
            Version(
                image=image,
                sha=sha,
                tree=run("git", "rev-parse", "HEAD^{tree}", cwd=repo),
                inputs_key="bench",
                build_key="bench",
                digest=digest,
                image_ref=ref,
                size=size,
                reused_from=None,
                labels={},
                sbom={},
                created_at=now(),
            )
        )
        record_test_run(
            ledger,
            TestRun(
                run_id=uuid.uuid4().hex,
                image=image,
                sha=sha,
                digest=digest,
                passed=True,
                summary={},
                artifacts="",
                started_at=now(),
                finished_at=now(),
            ),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
        env |= {
            "ENVCTL_LEDGER_URL": ledger_url,
            "ENVCTL_REGISTRY": host,
            "ENVCTL_STATE_DIR": str(work / "state"),
        }

        started = time.monotonic()
        run(sys.executable, "-m", "pipeline.cli.main", "--version", cwd=repo, env=env)
        startup_s = time.monotonic() - started

        before = blob_bytes(storage)
        started = time.monotonic()
        run(
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "promote",
            f"{image}.production",
            "--rev",
            sha,
            cwd=repo,
            env=env,
        )
        promote_s = time.monotonic() - started
        promote_bytes = blob_bytes(storage) - before
        if Registry(host).digest_of(image, "production") != digest:
            raise SystemExit("the production tag does not name the promoted digest")

        for tag in (ref, local_tag):
            client.images.remove(tag, force=True)
        before = blob_bytes(storage)
        started = time.monotonic()
        run("docker", "pull", "-q", ref)
        run("docker", "tag", ref, f"{host}/{image}:production-docker")
        run("docker", "push", "-q", f"{host}/{image}:production-docker")
        docker_s = time.monotonic() - started
        docker_bytes = blob_bytes(storage) - before

        print(f"image size                      {size / 1e6:.0f} MB ({digest})")
        print(f"envctl promote                  {promote_s:.2f} s")
        print(f"  of which Python start-up      {startup_s:.2f} s (envctl --version)")
        print(f"docker pull && tag && push      {docker_s:.2f} s (layers already local are not pulled)")
        print(f"ratio (docker / envctl)         {docker_s / promote_s:.1f}x")
        print(f"layer bytes uploaded (promote)  {promote_bytes}")
        print(f"layer bytes uploaded (docker)   {docker_bytes}")
        if promote_bytes != 0:
            raise SystemExit("promotion uploaded layer bytes; it must move none")
    finally:
        for tag in (
            f"{host}/{image}:{sha}" if "sha" in locals() else "",
            f"{host}/{image}:production-docker",
            local_tag,
        ):
            if tag:
                subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
