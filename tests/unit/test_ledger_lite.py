"""`LiteLedger` (the standard library's sqlite3) against the SQLAlchemy `Ledger`: the same moves,
the same rows, the same refusals.

Real parts: two SQLite ledgers made by SQLAlchemy, a git repository whose commits are the
versions, and a docker-registry of the test's own holding three tiny images.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench._registry import push_tiny_image
from pipeline.errors import EnvctlError, Refused, Unavailable
from pipeline.ledger import lite, quick
from pipeline.ledger.db import Ledger, Version, now
from pipeline.ledger.lite import LiteLedger, for_moves
from pipeline.ledger.pointers import EnvId, MoveLedger
from pipeline.promote import moves
from pipeline.settings import Settings
from tests.ledgerfacts import record_run
from tests.minirepo import git
from tests.stageworld import OwnRegistry

NAMES = ("c1", "c2", "c3")
STORED_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRegistry]:
    own = OwnRegistry(tmp_path_factory.mktemp("registry"))
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Commits c1 -> c2 -> c3."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    shas = {}
    for name in NAMES:
        (path / "file").write_text(name)
        git(path, "add", "-A")
        git(path, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", name)
        shas[name] = git(path, "rev-parse", "HEAD")
    return path, shas


def _world(
    tmp_path: Path, registry: OwnRegistry, repo: Path, shas: dict[str, str], kind: str
) -> tuple[Settings, MoveLedger, str, dict[str, str]]:
    """A ledger (made by SQLAlchemy) with versions c1..c3 of `team.<kind>`, c2 and c3 tested."""
    image = f"team.{kind}"
    url = f"sqlite:///{tmp_path / kind / 'ledger.db'}"
    made = Ledger.open(url)
    digests = {}
    for name in NAMES:
        digests[name] = push_tiny_image(requests.Session(), registry.host, image, [shas[name]], name)
        version = Version(
            image=image,
            sha=shas[name],
            tree="0" * 40,
            inputs_key=name,
            build_key=name,
            digest=digests[name],
            image_ref=f"{registry.host}/{image}@{digests[name]}",
            size=1,
            reused_from=None,
            labels={},
            sbom={},
            created_at=now(),
        )
        made.record_version(version)
        if name != "c1":
            record_run(made, version)
    made.engine.dispose()
    settings = Settings(
        repo=repo, registry=registry.host, ledger_url=url, state_dir=tmp_path / kind / "state", actor="tester"
    )
    ledger: MoveLedger = Ledger.open(url) if kind == "sqlalchemy" else LiteLedger(quick_path(url), url)
    return settings, ledger, image, digests


def quick_path(url: str) -> Path:
    path = quick.sqlite_path(url)
    assert path is not None
    return path


def _scenario(
    settings: Settings, ledger: MoveLedger, image: str, digests: dict[str, str], shas: dict[str, str]
) -> list[Any]:
    """Moves and refusals of one image; what each said."""
    said: list[Any] = []

    def do(step: Callable[[], moves.Outcome]) -> None:
        try:
            said.append(step().to_json())
        except EnvctlError as e:
            said.append((type(e).__name__, e.exit_code, str(e)))

    def promote(stage: str, name: str, **kw: Any) -> Callable[[], moves.Outcome]:
        return lambda: moves.promote(settings, ledger, EnvId(image, stage), shas[name], **kw)  # type: ignore[arg-type]

    do(promote("staging", "c1"))
    do(promote("staging", "c2"))
    do(promote("staging", "c1"))  # back: refused
    do(promote("production", "c1"))  # no evidence: refused
    do(promote("production", "c1", force=True, reason="hotfix"))
    do(promote("production", "c2"))  # c1 becomes fallback
    do(promote("production", "c3"))
    do(promote("production", "c3"))  # nothing to move
    do(lambda: moves.rollback(settings, ledger, image))  # to c2
    do(lambda: moves.rollback(settings, ledger, image, to=shas["c1"][:9], force=True))
    do(lambda: moves.rollback(settings, ledger, image, to=shas["c3"][:9]))

    def prune_meanwhile() -> None:  # retention marks c3 pruned between the read and the swap
        if not pruned:
            pruned.append(Ledger.open(settings.ledger_url).set_pruned(image, digests["c3"], now()))

    pruned: list[int] = []
    do(promote("staging", "c3", on_read=prune_meanwhile))  # refused under the lock
    do(promote("staging", "c3"))  # pruned: refused before any transaction
    return said


def _rows(url: str, image: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]:
    with sqlite3.connect(quick_path(url)) as conn:
        pointers = conn.execute(
            "SELECT stage, sha, digest, generation, pinned, pin_reason, pinned_by FROM environments "
            "WHERE image = ? ORDER BY stage",
            (image,),
        ).fetchall()
        events = conn.execute(
            "SELECT id, stage, action, from_sha, to_sha, from_digest, to_digest, actor, ci_run_id, reason, "
            "forced FROM events WHERE image = ? ORDER BY id",
            (image,),
        ).fetchall()
        times = [
            r[0] for r in conn.execute("SELECT at FROM events UNION ALL SELECT updated_at FROM environments")
        ]
    return pointers, events, times


def test_the_same_moves_give_the_same_answers_and_rows_on_both_ledgers(
    tmp_path: Path, registry: OwnRegistry, repo: tuple[Path, dict[str, str]]
) -> None:
    path, shas = repo
    said, rows = {}, {}
    for kind in ("sqlalchemy", "lite"):
        settings, ledger, image, digests = _world(tmp_path, registry, path, shas, kind)
        said[kind] = _scenario(settings, ledger, image, digests, shas)
        pointers, events, times = _rows(settings.ledger_url, image)
        # the digests differ by image (the marker is the commit's name, the image's name is not in it)
        names = {d: n for n, d in digests.items()}
        rows[kind] = (
            [tuple(names.get(v, v) for v in r) for r in pointers],
            [tuple(names.get(v, v) for v in r) for r in events],
        )
        assert times and all(STORED_TIME.match(t) for t in times), times
        said[kind] = [re.sub(r"team\.(lite|sqlalchemy)", "IMAGE", repr(s)) for s in said[kind]]
        said[kind] = [
            re.sub(r"sha256:[0-9a-f]{64}", lambda m, n=names: n.get(m.group(0), m.group(0)), s)  # type: ignore[misc]
            for s in said[kind]
        ]
    assert said["lite"] == said["sqlalchemy"]
    assert rows["lite"] == rows["sqlalchemy"]
    answers = said["lite"]
    assert "does not descend" in answers[2] and "has no test evidence" in answers[3]
    assert "was pruned from the registry meanwhile" in answers[11]
    assert "was pruned from the registry on" in answers[12]
    # staging c1, c2; production c1 (forced), c2 and c3 (each with its fallback); three rollbacks
    assert [(e[1], e[2], e[4]) for e in rows["lite"][1]] == [
        ("staging", "promote", shas["c1"]),
        ("staging", "promote", shas["c2"]),
        ("production", "promote", shas["c1"]),
        ("fallback", "promote", shas["c1"]),
        ("production", "promote", shas["c2"]),
        ("fallback", "promote", shas["c2"]),
        ("production", "promote", shas["c3"]),
        ("production", "rollback", shas["c2"]),
        ("production", "rollback", shas["c1"]),
        ("production", "rollback", shas["c3"]),
    ]


def test_rows_one_ledger_writes_read_the_same_through_the_other(
    tmp_path: Path, registry: OwnRegistry, repo: tuple[Path, dict[str, str]]
) -> None:
    path, shas = repo
    settings, ledger, image, digests = _world(tmp_path, registry, path, shas, "lite")
    _scenario(settings, ledger, image, digests, shas)
    other = Ledger.open(settings.ledger_url)
    assert other.history(image) == ledger.history(image)
    assert other.pointers() == ledger.pointers() and other.snapshot(image) == ledger.snapshot(image)
    assert other.known_images() == ledger.known_images() == [image]
    assert other.list_versions(image) == ledger.list_versions(image)
    assert other.test_runs(image, digests["c2"]) == ledger.test_runs(image, digests["c2"])
    event = other.history(image)[-1]
    assert event.at.tzinfo is not None and isinstance(event.forced, bool)


def test_a_ledger_locked_past_the_busy_timeout_is_unavailable_and_nothing_is_written(
    tmp_path: Path, registry: OwnRegistry, repo: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, shas = repo
    settings, ledger, image, _ = _world(tmp_path, registry, path, shas, "lite")
    monkeypatch.setattr(quick, "SQLITE_BUSY_MS", 300)
    holder = sqlite3.connect(quick_path(settings.ledger_url), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(Unavailable) as locked:
            moves.promote(settings, ledger, EnvId(image, "staging"), shas["c1"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.value.exit_code == 3
    assert str(locked.value) == (
        f"the ledger at {settings.ledger_url} is unavailable: (sqlite3.OperationalError) database is locked; "
        "check ENVCTL_LEDGER_URL and that the database runs"
    )
    assert ledger.history(image) == [] and ledger.pointers(image) == []


def test_for_moves_opens_sqlite3_only_for_an_existing_current_sqlite_ledger(tmp_path: Path) -> None:
    def opened(url: str, password: str = "") -> type:
        return type(for_moves(Settings(repo=tmp_path, ledger_url=url, ledger_password=password)))

    url = f"sqlite:///{tmp_path / 'new' / 'ledger.db'}"
    assert opened(url) is Ledger  # SQLAlchemy creates it
    assert opened(url) is LiteLedger
    with sqlite3.connect(quick_path(url)) as conn:
        conn.execute("UPDATE schema_version SET version = version - 1")
    assert opened(url) is Ledger  # behind: SQLAlchemy migrates it ...
    assert opened(url) is LiteLedger  # ... and then it is current
    assert opened(f"{url}?timeout=5") is Ledger
    with pytest.raises(EnvctlError, match="ENVCTL_LEDGER_PASSWORD applies only to a PostgreSQL ledger"):
        opened(url, password="secret")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(Unavailable, match="is unavailable"):
        opened(f"sqlite:///{tmp_path / 'junk.db'}")
    assert lite.stored(now()).count(":") == 2


def test_a_move_refused_by_a_rule_writes_nothing(
    tmp_path: Path, registry: OwnRegistry, repo: tuple[Path, dict[str, str]]
) -> None:
    path, shas = repo
    settings, ledger, image, _ = _world(tmp_path, registry, path, shas, "lite")
    with pytest.raises(Refused, match="has no test evidence"):
        moves.promote(settings, ledger, EnvId(image, "production"), shas["c1"])
    assert ledger.history(image) == [] and ledger.pointers(image) == []
