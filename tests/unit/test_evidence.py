"""The one evidence rule (`promote.policy`) and the ledger migration that stores tests keys."""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.ledger.db import SCHEMA_VERSION, Ledger, Version, now, schema_version
from pipeline.promote.policy import evidence_for
from tests.ledgerfacts import record_run

pytest_plugins = ["tests.pg"]

IMAGE = "test.evidence"
DIGEST = "sha256:" + "d" * 64


def _version(ledger: Ledger, name: str, test_key: str | None) -> Version:
    return ledger.record_version(
        Version(
            image=IMAGE,
            sha=name * 40,
            tree="0" * 40,
            inputs_key=f"inputs-{test_key}",
            build_key="same-build",
            digest=DIGEST,
            image_ref=f"localhost:5000/{IMAGE}@{DIGEST}",
            size=None,
            reused_from=None,
            labels={},
            sbom={},
            created_at=now(),
            test_key=test_key,
        )
    )


def _run(ledger: Ledger, version: Version, passed: bool, test_key: str | None) -> str:
    return record_run(ledger, version, passed, test_key)


def test_a_run_counts_for_its_digest_with_the_same_tests_key(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    a, b = _version(ledger, "a", "notebooks-ok"), _version(ledger, "b", "notebooks-broken")
    c = _version(ledger, "c", "notebooks-ok")  # back to a's tests, same digest
    untested = _version(ledger, "e", "other-notebooks")
    passed_a = _run(ledger, a, True, "notebooks-ok")
    failed_b = _run(ledger, b, False, "notebooks-broken")  # the digest's latest run failed

    assert evidence_for(ledger, a).passed and evidence_for(ledger, a).run_id == passed_a
    assert not evidence_for(ledger, b).passed and evidence_for(ledger, b).run_id == failed_b
    assert evidence_for(ledger, c).passed and evidence_for(ledger, c).run_id == passed_a
    assert evidence_for(ledger, untested).runs == 0


def test_old_rows_count_only_for_their_own_commit(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    # A ledger from before tests keys: drop the columns and step the schema back.
    with ledger.transaction() as conn:
        for table in ("versions", "test_runs"):
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN test_key"))
        # Schema 2: before the tests-key migrations (later ones add their columns only if absent).
        conn.execute(schema_version.update().values(version=2))
        conn.execute(
            sa.text(
                "INSERT INTO versions (image, sha, tree, inputs_key, build_key, digest, image_ref,"
                " labels, sbom, created_at) VALUES (:image, :sha, :tree, 'i', 'b', :digest, 'r', '{}', '{}',"
                " :at)"
            ),
            {"image": IMAGE, "sha": "a" * 40, "tree": "0" * 40, "digest": DIGEST, "at": now()},
        )
        conn.execute(
            sa.text(
                "INSERT INTO test_runs (run_id, image, sha, digest, passed, summary, artifacts,"
                " started_at, finished_at) VALUES ('old', :image, :sha, :digest, :passed, '{}', '', :at, :at)"
            ),
            {"image": IMAGE, "sha": "a" * 40, "digest": DIGEST, "passed": True, "at": now()},
        )
    ledger.engine.dispose()

    migrated = Ledger.open(ledger_url)
    assert migrated.version() == SCHEMA_VERSION
    old = migrated.get_version(IMAGE, "a" * 40)
    assert old is not None and old.test_key is None
    assert evidence_for(migrated, old).passed  # its own run
    newer = _version(migrated, "b", "any-key")  # same digest, another commit
    assert evidence_for(migrated, newer).runs == 0  # the old run does not count for it
