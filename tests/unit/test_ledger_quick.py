"""Quick SQLite reads (stdlib sqlite3) answer exactly as the SQLAlchemy reads, or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.ledger import db, model, pointers, quick
from pipeline.ledger.db import Ledger
from pipeline.ledger.pointers import Who, move, read, set_pin
from pipeline.pipelines import records
from tests.helpers import envctl
from tests.ledgerfacts import numbered_version


def test_the_quick_schema_version_is_the_ledgers() -> None:
    assert model.SCHEMA_VERSION == db.SCHEMA_VERSION == len(db.MIGRATIONS)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for n, (image, stage) in enumerate(
        [("b.two", "production"), ("a.one", "staging"), ("a.one", "production"), ("b.two", "staging")], 1
    ):
        version = ledger.record_version(numbered_version(image, n))
        with ledger.transaction() as conn:
            move(conn, read(conn, image, stage), version.sha, version.digest, "promote", Who(actor="t"))
    ledger.record_version(numbered_version("c.only-built", 9))
    with ledger.transaction() as conn:
        set_pin(conn, read(conn, "a.one", "fallback"), True, Who(actor="ops", reason="incident 7"))
    records.start(ledger, run_id="run-1", branch="staging", sha="1" * 40, log=Path("l"), trigger="t")
    records.start(ledger, run_id="run-2", branch="staging", sha="2" * 40, log=Path("l"), trigger="t")
    return ledger


def test_pointers_and_images_are_the_same_as_through_sqlalchemy(ledger: Ledger) -> None:
    url = str(ledger.engine.url)
    every = pointers.pointers(ledger)
    assert len(every) == 5 and any(p.pinned and p.digest is None for p in every)
    assert quick.pointers(url) == every
    assert quick.pointers(url, "a.one") == pointers.pointers(ledger, "a.one")
    assert quick.pointers(url, "no.such") == []
    assert quick.known_images(url) == pointers.known_images(ledger) == ["a.one", "b.two", "c.only-built"]
    assert quick.run_ids(url) == ["run-2", "run-1"]
    assert all(p.updated_at is not None and p.updated_at.tzinfo is not None for p in every)


def test_an_absent_ledger_is_empty_and_stays_absent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none' / 'ledger.db'}"
    assert quick.pointers(url) == [] and quick.known_images(url) == [] and quick.run_ids(url) == []
    assert not (tmp_path / "none").exists()


def test_what_only_sqlalchemy_can_answer_is_left_to_it(ledger: Ledger, tmp_path: Path) -> None:
    assert quick.pointers("postgresql+psycopg://u@h/db") is None
    assert quick.pointers("sqlite://") is None
    assert quick.pointers(f"sqlite:///{tmp_path / 'ledger.db'}?mode=ro") is None
    (tmp_path / "junk.db").write_text("not a database")
    assert quick.pointers(f"sqlite:///{tmp_path / 'junk.db'}") is None
    path = Path(str(ledger.engine.url).removeprefix("sqlite:///"))
    ledger.engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    assert quick.pointers(f"sqlite:///{path}") is None


def test_status_of_a_ledger_newer_than_envctl_says_upgrade(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    ledger = Ledger.open(f"sqlite:///{tmp_path / '.envctl' / 'ledger.db'}")
    ledger.engine.dispose()
    with sqlite3.connect(tmp_path / ".envctl" / "ledger.db") as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    result = envctl("status", "--json", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "upgrade envctl" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_status_of_an_unknown_image_names_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    ledger = Ledger.open(f"sqlite:///{tmp_path / '.envctl' / 'ledger.db'}")
    ledger.record_version(numbered_version("a.one", 1))
    result = envctl("status", "b.two", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "envctl: error: unknown image 'b.two'; images in the ledger: a.one"
    bad = envctl("status", "NOT AN IMAGE", cwd=tmp_path)
    assert bad.returncode == 2 and "is not an image name" in bad.stderr


def test_signers_are_the_same_as_through_sqlalchemy(ledger: Ledger) -> None:
    from pipeline.ledger import signoffs

    url = str(ledger.engine.url)
    one, two = f"sha256:{1:064d}", f"sha256:{4:064d}"
    for image, digest, actor in [
        ("b.two", one, "Ann"),
        ("b.two", one, " ann "),  # the same person, another spelling
        ("b.two", one, "Bob"),
        ("a.one", one, "Cy"),  # the same digest under another image: signed apart
        ("b.two", two, "Dee"),
    ]:
        signoffs.record(ledger, image=image, sha="1" * 40, digest=digest, actor=actor, reason=None)
    named = [("b.two", one), ("a.one", one), ("b.two", two), ("a.one", two)]
    expected = {(i, d): signoffs.people(signoffs.for_digest(ledger, i, d)) for i, d in named}
    assert expected == {
        ("b.two", one): ["Ann", "Bob"],
        ("a.one", one): ["Cy"],
        ("b.two", two): ["Dee"],
        ("a.one", two): [],
    }
    assert quick.signers(url, named) == expected
    assert quick.signers(url, []) == {}


def test_signers_of_an_absent_or_foreign_ledger(tmp_path: Path) -> None:
    named = [("a.one", f"sha256:{1:064d}")]
    assert quick.signers(f"sqlite:///{tmp_path / 'none.db'}", named) == {("a.one", named[0][1]): []}
    assert not (tmp_path / "none.db").exists()
    assert quick.signers("postgresql+psycopg://u@h/db", named) is None
