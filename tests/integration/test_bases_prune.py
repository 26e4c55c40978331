"""Base watch, base refresh and retention on a stack of the test's own (issue 14, items 1 and 3).

A private stack (`envctl stack up --skip-base` on a free port, its own state folder
and Docker client config) holds two tiny bases derived from the shared stand-in base,
and a mini repository with one image on each. Re-pushing one base with a change must
make `bases` show exactly the image built on it, and `--refresh-base` rebuild only
that one; `prune` then deletes the version the refresh left behind, its garbage
collection frees bytes on the private registry's disk (never the shared one), every
referenced version stays pullable with the plain docker client, a rollback to the
pruned version exits 1 naming the build command, and that build brings it back.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline.build.engine import ContextFile, build, connect, context_tar, push
from pipeline.errors import Unavailable
from pipeline.ledger.db import Ledger
from pipeline.publish.oci import Registry
from tests import minirepo
from tests.helpers import envctl
from tests.ownstack import Stack, own_stack

pytestmark = pytest.mark.integration

SHARED_BASE = "localhost:5000/dlc/base-cpu:local"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_stack(tmp_path_factory.mktemp("bases")) as private:
        yield private


def push_base(stack: Stack, name: str, marker: str) -> str:
    """Build `<private>/dlc/<name>:local` from the shared base with one file changed; its digest."""
    client = connect()
    ref = f"{stack.host}/dlc/{name}:local"
    dockerfile = f"FROM {SHARED_BASE}\nCOPY marker /etc/{name}-marker\n"
    context = context_tar(
        {"Dockerfile": ContextFile(dockerfile.encode()), "marker": ContextFile(marker.encode())}
    )
    build(client, context=context, dockerfile="Dockerfile", tag=ref, buildargs={}, labels={})
    credentials = stack.credentials()
    return push(client, ref, auth=credentials)


def add_image(mini: minirepo.MiniRepo, image: str, base: str) -> None:
    """A second image in the mini repo: the first one's files under another name and base."""
    for relative in (
        "environments/__IMAGE__.yaml",
        "docker/__IMAGE__/Dockerfile",
        "docker/__IMAGE__/greeting.py",
        "docker/__IMAGE__/.dockerignore",
        "test-notebooks/__IMAGE__/greet.ipynb",
    ):
        text = mini.read(relative).replace(mini.image, image)
        target = mini.path / relative.replace("__IMAGE__", image)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("localhost:5000/dlc/base-cpu:local", base))


def set_base(mini: minirepo.MiniRepo, base: str) -> None:
    spec = mini.read("environments/__IMAGE__.yaml").replace("localhost:5000/dlc/base-cpu:local", base)
    mini.write("environments/__IMAGE__.yaml", spec)


def run_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def docker_pull(stack: Stack, ref: str) -> subprocess.CompletedProcess[str]:
    """`docker pull` with no login at all (reads are anonymous)."""
    empty = stack.docker_config.parent / "no-login"
    empty.mkdir(exist_ok=True)
    docker = shutil.which("docker")
    assert docker is not None
    return subprocess.run(
        [docker, "pull", ref],
        env={"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(empty)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bases_refresh_and_prune(stack: Stack, tmp_path: Path) -> None:
    a_old = push_base(stack, "base-a", "a1\n")
    b_digest = push_base(stack, "base-b", "b1\n")
    mini = minirepo.make(tmp_path, prefix="bases")
    a, b = mini.image, mini.image.replace("mini-", "minib-")
    add_image(mini, b, f"{stack.host}/dlc/base-b:local")
    set_base(mini, f"{stack.host}/dlc/base-a:local")
    first = mini.commit("two images, one on each base")
    env = {**stack.env, "ENVCTL_ACTOR": "tester"}  # the stack's state folder: its ledger, its GC

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return envctl(*args, cwd=mini.path, env=env, timeout=900)

    try:
        staged = run_json(cli("pipeline", "run", "--branch", "staging", "--rev", first, "--json"))
        assert {k: v["state"] for k, v in staged["verdicts"].items()} == {a: "promoted", b: "promoted"}

        rows = {r["image"]: r for r in run_json(cli("bases", "--json"))}
        assert rows[a]["staging"]["base_digest"] == rows[a]["current_digest"] == a_old
        assert rows[b]["staging"]["base_digest"] == rows[b]["current_digest"] == b_digest
        assert rows[a]["moved"] == rows[b]["moved"] == {"staging": False, "production": False}
        assert rows[a]["base"] == f"{stack.host}/dlc/base-a:local"

        # Base A is released again with a change; B is not.
        a_new = push_base(stack, "base-a", "a2\n")
        assert a_new != a_old
        rows = {r["image"]: r for r in run_json(cli("bases", "--json"))}
        assert rows[a]["current_digest"] == a_new and rows[a]["staging"]["base_digest"] == a_old
        assert rows[a]["moved"]["staging"] is True
        assert rows[b]["moved"]["staging"] is False and rows[b]["current_digest"] == b_digest
        table = cli("bases")
        assert table.returncode == 0 and a in table.stdout

        before = {r["stage"]: r for r in run_json(cli("status", b, "--json"))}
        refreshed = run_json(cli("pipeline", "run", "--branch", "staging", "--refresh-base", "--json"))
        assert len(refreshed) == 1
        run = refreshed[0]
        assert run["trigger"] == "base-refresh"
        assert f"base moved from {a_old} to {a_new}" in run["reason"]
        assert set(run["verdicts"]) == {a}  # only the image on the moved base
        assert run["verdicts"][a]["state"] == "promoted" and run["verdicts"][a]["built"] == "built"
        assert run["verdicts"][a]["test_run"]
        refresh_sha = run["sha"]
        assert refresh_sha != first
        assert minirepo.git(mini.path, "rev-parse", f"{refresh_sha}^{{tree}}") == minirepo.git(
            mini.path, "rev-parse", f"{first}^{{tree}}"
        )
        assert minirepo.git(mini.path, "rev-parse", f"refs/envctl/refresh/{refresh_sha}") == refresh_sha
        assert {r["stage"]: r for r in run_json(cli("status", b, "--json"))}["staging"] == before["staging"]
        events = run_json(cli("history", f"{a}.staging", "--json"))
        assert f"base moved from {a_old} to {a_new}" in events[-1]["reason"]

        ledger = Ledger.open(f"sqlite:///{stack.state / 'ledger.db'}")
        new_a = ledger.get_version(a, refresh_sha)
        old_a = ledger.get_version(a, first)
        assert new_a is not None and old_a is not None
        assert new_a.labels["org.opencontainers.image.base.digest"] == a_new
        assert new_a.origin == first and new_a.digest != old_a.digest
        # The new version's image really is on the new base (no stale cache).
        registry = Registry(stack.host)
        labels = registry.labels(a, new_a.digest)
        assert labels is not None and labels["org.opencontainers.image.base.digest"] == a_new
        rows = {r["image"]: r for r in run_json(cli("bases", "--json"))}
        assert rows[a]["moved"]["staging"] is False
        nothing = run_json(cli("pipeline", "run", "--branch", "staging", "--refresh-base", "--json"))
        assert nothing == []

        # A later push on top of S reuses the refresh's bytes (a retag) as a version of its own
        # commit: it carries no refresh label, so staging compares from it, not from S.
        mini.write("NOTES.md", "not part of any image\n")
        later = mini.commit("notes")
        pushed = run_json(cli("pipeline", "run", "--branch", "staging", "--rev", later, "--json"))
        assert pushed["verdicts"][a]["state"] == "promoted" and pushed["verdicts"][a]["built"] == "reused"
        later_a = ledger.get_version(a, later)
        assert later_a is not None and later_a.digest == new_a.digest
        assert later_a.origin == later and "org.envctl.refresh-of" not in later_a.labels

        # Production takes the rebuilt version for a merge of the commit it rebuilt.
        produced = run_json(cli("pipeline", "run", "--branch", "production", "--rev", first, "--json"))
        assert produced["verdicts"][a]["sha"] == refresh_sha

        # Retention: A's first version is referenced by nothing but its history; it is
        # younger than the default minimum age (1 day), so only --older-than 0 takes it.
        young = run_json(cli("prune", "--keep", "1", "--dry-run", "--json"))
        assert all(p["candidates"] == [] for p in young["images"])
        assert "newer than 1 day" in {p["image"]: p for p in young["images"]}[a]["kept"][old_a.digest]
        dry = run_json(cli("prune", "--keep", "1", "--older-than", "0", "--dry-run", "--json"))
        planned = {p["image"]: p for p in dry["images"]}
        assert [c["digest"] for c in planned[a]["candidates"]] == [old_a.digest]
        assert planned[b]["candidates"] == [] and dry["bytes_freed"] is None
        assert registry.manifest(a, old_a.digest) is not None  # a dry run deletes nothing

        on_disk = stack.storage_bytes()
        pruned = run_json(cli("prune", "--keep", "1", "--older-than", "0", "--json"))
        assert {p["image"]: p["pruned"] for p in pruned["images"]} == {a: [old_a.digest], b: []}
        freed = on_disk - stack.storage_bytes()
        assert pruned["bytes_freed"] > 0 and freed >= pruned["bytes_freed"]
        print(f"prune: garbage collection freed {pruned['bytes_freed']} bytes; on disk {freed} bytes in all")
        assert registry.manifest(a, old_a.digest) is None
        assert registry.digest_of(a, first) is None  # its `<sha>` tag went with it
        marked = ledger.get_version(a, first)
        assert marked is not None and marked.pruned_at is not None

        # Every referenced version stays pullable by the plain docker client.
        minirepo.remove_local_images(f"{stack.host}/{a}")
        minirepo.remove_local_images(f"{stack.host}/{b}")
        for status_row in [*run_json(cli("status", a, "--json")), *run_json(cli("status", b, "--json"))]:
            if status_row["digest"]:
                pulled = docker_pull(stack, status_row["image_ref"])
                assert pulled.returncode == 0, (status_row["environment"], pulled.stderr)
        gone = docker_pull(stack, f"{stack.host}/{a}@{old_a.digest}")
        assert gone.returncode != 0

        # A rollback to the pruned version says no and names the build that brings it back.
        refused = cli("rollback", a, "--to", first[:12])
        assert refused.returncode == 1, refused.stderr
        assert f"envctl build {a} --rev {first}" in refused.stderr
        assert "Traceback" not in refused.stderr

        rebuilt = cli("build", a, "--rev", first, "--json")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert json.loads(rebuilt.stdout)["digest"] == old_a.digest
        back = ledger.get_version(a, first)
        assert back is not None and back.pruned_at is None
        assert registry.digest_of(a, first) == old_a.digest
        assert cli("rollback", a, "--to", first[:12]).returncode == 0
    finally:
        for name in (a, b, "dlc/base-a", "dlc/base-b"):
            with contextlib.suppress(Exception):
                minirepo.remove_local_images(f"{stack.host}/{name}")


def test_stack_up_restarts_a_registry_started_without_deletes(stack: Stack) -> None:
    """A registry an older envctl started (deletes off) is restarted by `stack up` with deletes on."""
    from pipeline.settings import load
    from pipeline.stack import daemons, registry_server

    settings = load(env=stack.env)
    client = connect()
    ref = f"{stack.host}/guard/tiny:1"
    context = context_tar({"Dockerfile": ContextFile(b"FROM scratch\nCOPY m /m\n"), "m": ContextFile(b"m\n")})
    build(client, context=context, dockerfile="Dockerfile", tag=ref, buildargs={}, labels={})
    credentials = stack.credentials()
    try:
        digest = push(client, ref, auth=credentials)
        daemons.stop(settings.stack_dir, registry_server.NAME)
        old = registry_server.render(settings, deletes=False)
        registry_server.config_path(settings).write_text(old)
        daemons.start(
            settings.stack_dir,
            registry_server.NAME,
            ["docker-registry", "serve", str(registry_server.config_path(settings))],
            ready=lambda: registry_server.answers_on_socket(registry_server.socket_path(settings)),
            deadline=30,
        )
        writer = Registry(stack.host, credentials=credentials)
        with pytest.raises(Unavailable, match="does not allow deletes"):
            writer.delete_manifest("guard/tiny", digest)

        up = envctl("stack", "up", "--skip-base", env=stack.env)
        assert up.returncode == 0, up.stderr
        assert "configuration changed" in up.stderr
        assert registry_server.config_path(settings).read_text() == registry_server.render(settings)
        anonymous = requests.delete(f"http://{stack.host}/v2/guard/tiny/manifests/{digest}", timeout=10)
        assert anonymous.status_code == 401  # deletes stay the credentials'
        assert Registry(stack.host, credentials=credentials).delete_manifest("guard/tiny", digest)
        assert Registry(stack.host).manifest("guard/tiny", digest) is None
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(ref, force=True)
