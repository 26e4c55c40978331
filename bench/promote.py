"""Benchmark: `envctl promote` against the registry calls it stands for.

Goal (issue 15): `envctl promote` within 10x of a manifest GET and PUT by curl, the
least a retag can cost from a shell. On a registry of the benchmark's own on 127.0.0.1
(docker-registry; its storage is only ours to measure), in one run, best of N each:

- curl: `curl GET` of the version's manifest, then `curl PUT` of those bytes under a tag
- `envctl promote IMAGE.production --rev SHA` (ledger transaction, then a manifest-level
  retag), a fresh production tag each time (the ledger moves back in between). The
  commit has the image's spec, as a real one does: the first promotion validates it
  with the spec model and keeps its rules (`pipeline.spec.rules`); that first one is
  printed too, apart from the best of the rest
- `python -c pass`, for scale

With `--docker` it also builds an image of ~550 MB (the local base plus a RUN writing
200 MB of random data) and times `docker pull && docker tag && docker push` of it
against its promotion, with the blob bytes the registry stored during each (the
promotion must add 0: no layer moves). That needs the Docker Engine (`envctl stack up`).

Run: PYTHONPATH=$PWD .venv/bin/python bench/promote.py [--docker]
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench._registry import MANIFEST_TYPE, push_tiny_image, start_registry  # noqa: E402
from bench._scratch import compile_bytecode  # noqa: E402
from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run  # noqa: E402
from pipeline.publish.oci import Registry  # noqa: E402

RUNS = 7
CURL_GOAL = 10.0

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


SPEC = """\
image: {image}
build:
  dockerfile: docker/Dockerfile
  context: docker
  base: {{local: localhost:5000/dlc/base-cpu:local, gcp: us-docker.pkg.dev/x/y/base-cpu.py310}}
tests:
  notebooks: [test-notebooks/*.ipynb]
promotion:
  production:
    signoffs: 0
"""


def commit(repo: Path, image: str) -> str:
    run("git", "init", "-q", "-b", "main", cwd=repo)
    (repo / "README").write_text("bench\n")
    (repo / "environments").mkdir()
    (repo / "environments" / f"{image}.yaml").write_text(SPEC.format(image=image))
    run("git", "add", "-A", cwd=repo)
    run("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "b", cwd=repo)
    return run("git", "rev-parse", "HEAD", cwd=repo)


def record(ledger: Ledger, image: str, sha: str, tree: str, digest: str, ref: str, size: int) -> None:
    """The version of `sha` and a passing test run of it: what production needs."""
    ledger.record_version(
        Version(
            image=image,
            sha=sha,
            tree=tree,
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


def promote_argv(image: str, sha: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli.main", "promote", f"{image}.production", "--rev", sha]


def timed(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    run(*args, cwd=cwd, env=env)
    return time.perf_counter() - started


def reset(url: str, image: str) -> None:
    """Forget the environments of `image` so that the next promotion moves production again."""
    import sqlalchemy as sa

    from pipeline.ledger.db import environments

    with Ledger.open(url).transaction() as conn:
        conn.execute(sa.delete(environments).where(environments.c.image == image))


def against_curl(work: Path, host: str, repo: Path, sha: str, image: str, env: dict[str, str]) -> None:
    digest = push_tiny_image(requests.Session(), host, image, [sha], image)
    url = env["ENVCTL_LEDGER_URL"]
    record(Ledger.open(url), image, sha, run("git", "rev-parse", "HEAD^{tree}", cwd=repo), digest, "", 1)
    manifest = work / "manifest.json"
    base = f"http://{host}/v2/{image}/manifests"
    get = ["curl", "-sSf", "-H", f"Accept: {MANIFEST_TYPE}", "-o", str(manifest), f"{base}/{sha}"]
    put = ["curl", "-sSf", "-X", "PUT", "-H", f"Content-Type: {MANIFEST_TYPE}", "--data-binary"]
    curl_s, promote_s, floor_s = [], [], []
    for n in range(RUNS):
        curl_s.append(timed(*get) + timed(*put, f"@{manifest}", f"{base}/curl-{n}"))
        reset(url, image)
        promote_s.append(timed(*promote_argv(image, sha), cwd=repo, env=env))
        if Registry(host).digest_of(image, "production") != digest:
            raise SystemExit("the production tag does not name the promoted digest")
        floor_s.append(timed(sys.executable, "-c", "pass"))
    first = promote_s.pop(0)  # validated the spec with the model; the rest read its kept rules
    curl, promote, floor = min(curl_s), min(promote_s), min(floor_s)
    ratio = promote / curl
    print(f"curl GET + PUT of the manifest   {curl * 1000:.0f} ms (best of {RUNS})")
    print(f"envctl promote                   {promote * 1000:.0f} ms ({promote / floor:.1f}x python -c pass)")
    print(f"  the first one (spec validated) {first * 1000:.0f} ms ({first / curl:.1f}x curl)")
    print(f"python -c pass                   {floor * 1000:.0f} ms")
    verdict = "meets" if ratio <= CURL_GOAL else "MISSES"
    print(f"promote / curl: {ratio:.1f}x; goal {CURL_GOAL:.0f}x: {verdict}")


def main() -> None:
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="envctl-bench-"))
    process, host, storage = start_registry(work)
    try:
        repo = work / "repo"
        repo.mkdir()
        image = f"bench.promote-{secrets.token_hex(3)}"
        sha = commit(repo, image)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
        env |= {
            "ENVCTL_LEDGER_URL": f"sqlite:///{work / 'ledger.db'}",
            "ENVCTL_REGISTRY": host,
            "ENVCTL_STATE_DIR": str(work / "state"),
        }
        against_curl(work, host, repo, sha, image, env)
        if "--docker" in sys.argv[1:]:
            against_docker(work, host, storage, repo, sha, env)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def against_docker(work: Path, host: str, storage: Path, repo: Path, sha: str, env: dict[str, str]) -> None:
    from pipeline.backends import ContextFile
    from pipeline.build.engine import build, connect, context_tar, push

    client = connect()
    image = f"bench.promote-{secrets.token_hex(3)}"  # one of its own: the curl part promoted the other
    local_tag = f"envctl-bench/{image}:payload"
    ref = f"{host}/{image}:{sha}"
    try:
        print(f"building {image} (base + 200 MB of random data) ...", file=sys.stderr)
        context = context_tar({"Dockerfile": ContextFile(DOCKERFILE.format(uuid.uuid4().hex).encode())})
        build(client, context=context, dockerfile="Dockerfile", tag=local_tag, buildargs={}, labels={})
        size = client.images.get(local_tag).attrs["Size"]
        client.images.get(local_tag).tag(ref)
        print(f"pushing {size / 1e6:.0f} MB to the bench registry {host} ...", file=sys.stderr)
        digest = push(client, ref)
        tree = run("git", "rev-parse", "HEAD^{tree}", cwd=repo)
        record(Ledger.open(env["ENVCTL_LEDGER_URL"]), image, sha, tree, digest, ref, size)

        before = blob_bytes(storage)
        promote_s = timed(*promote_argv(image, sha), cwd=repo, env=env)
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
        print(f"docker pull && tag && push      {docker_s:.2f} s (layers already local are not pulled)")
        print(f"ratio (docker / envctl)         {docker_s / promote_s:.1f}x")
        print(f"layer bytes uploaded (promote)  {promote_bytes}")
        print(f"layer bytes uploaded (docker)   {docker_bytes}")
        if promote_bytes != 0:
            raise SystemExit("promotion uploaded layer bytes; it must move none")
    finally:
        for tag in (ref, f"{host}/{image}:production-docker", local_tag):
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


if __name__ == "__main__":
    main()
