"""What instances share across backends: names, the environment's target, staleness, JSON keys."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from pipeline.errors import UsageError
from pipeline.instances.local import check_port, jupyter_command
from pipeline.instances.model import Instance, check_name, current_digest, target
from pipeline.ledger import pointers as envs
from pipeline.ledger.db import Ledger, Version, now

SHA = "c" * 40
DIGEST = "sha256:" + "1" * 64


@pytest.mark.parametrize("name", ["a", "alice-nlp", "bob2", "x" * 40])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Alice", "alice_nlp", "alice.nlp", "-a", "a-", "2bob", "x" * 41, "a b"])
def test_bad_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match="not an instance name"):
        check_name(name)


def _ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record_version(
        Version(
            image="nlp.keras-batch",
            sha=SHA,
            tree="t" * 40,
            inputs_key="i",
            build_key="b",
            digest=DIGEST,
            image_ref=f"localhost:5000/nlp.keras-batch:{SHA}",
            size=None,
            reused_from=None,
            labels={},
            sbom={},
            created_at=now(),
        )
    )
    return ledger


def test_target_is_where_the_environment_points_now(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(UsageError, match=r"unknown image 'nlp\.other'"):
        target(ledger, "nlp.other.production")
    with pytest.raises(UsageError, match="no version yet"):
        target(ledger, "nlp.keras-batch.production")
    with pytest.raises(UsageError, match="unknown stage"):
        target(ledger, "nlp.keras-batch.nightly")
    assert current_digest(ledger, "nlp.keras-batch.staging") is None

    with ledger.transaction() as conn:
        pointer = envs.read(conn, "nlp.keras-batch", "staging")
        envs.move(conn, pointer, SHA, DIGEST, "promote", envs.Who(actor="test"))
    found = target(ledger, "nlp.keras-batch.staging")
    assert (str(found.env), found.sha, found.digest) == ("nlp.keras-batch.staging", SHA, DIGEST)
    assert current_digest(ledger, "nlp.keras-batch.staging") == DIGEST


def test_stale_when_the_environment_moved() -> None:
    base = Instance(
        name="a",
        environment="x.staging",
        digest=DIGEST,
        image_ref="",
        status="running",
        url=None,
        volume=None,
        created_at=None,
    )
    assert base.stale is None
    assert dataclasses.replace(base, current_digest=DIGEST).stale is False
    moved = dataclasses.replace(base, current_digest="sha256:" + "2" * 64)
    assert moved.stale is True
    assert set(moved.to_json()) == {
        "name",
        "environment",
        "digest",
        "sha",
        "image_ref",
        "status",
        "url",
        "volume",
        "created_at",
        "current_digest",
        "stale",
    }


def test_a_listening_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} on 127.0.0.1 is in use"):
            check_port(port)


def test_jupyter_listens_on_loopback_only_and_takes_no_token_on_its_command_line() -> None:
    command = jupyter_command(8899)
    assert "--ServerApp.ip=127.0.0.1" in command and "--ServerApp.port=8899" in command
    assert "--ServerApp.port_retries=0" in command
    assert not any("token" in part.lower() for part in command), command
