"""The artifact store seam: local by default, Cloud Storage for a gs:// `artifacts_url` (fake on the wire)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.cloud.storage")

from pipeline.errors import ConfigError, Unavailable
from pipeline.settings import Settings, load
from pipeline.testing.keep import LocalStore, store_for
from tests.gcpfakes.rest import FakeRequest
from tests.gcpfakes.storage import FakeStorage


def run_folder(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "r1"
    for name, text in {
        "summary.json": "{}",
        "junit.xml": "<testsuites/>",
        "nb/greet.ipynb": '{"cells": []}',
        "nb/greet.html": "<html></html>",
        "nb/greet.log": "ran\n",
        ".work/in/scratch.txt": "not an artifact",
    }.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    return run_dir


def settings(fake: FakeStorage, url: str) -> Settings:
    return Settings(
        repo=Path("."),
        artifacts_url=url,
        gcp_endpoints=f"storage={fake.endpoint}",
        gcp_timeout=5,
        gcp_retry=False,
    )


def test_local_by_default(tmp_path: Path) -> None:
    store = store_for(Settings(repo=tmp_path))
    assert isinstance(store, LocalStore)
    assert store.keep(tmp_path / "r", "r") == str(tmp_path / "r")


def test_a_run_folder_is_copied_under_the_run_id_summary_last(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path)
    with FakeStorage(buckets=("arts",)) as fake:
        store = store_for(settings(fake, "gs://arts/team/"))
        assert store.where(run_dir, "r1") == "gs://arts/team/r1/"
        assert store.keep(run_dir, "r1") == "gs://arts/team/r1/"
        kept = {name: o for (bucket, name), o in fake.objects.items()}
        assert set(kept) == {
            f"team/r1/{n}"
            for n in ("summary.json", "junit.xml", "nb/greet.ipynb", "nb/greet.html", "nb/greet.log")
        }
        assert kept["team/r1/nb/greet.ipynb"].data == b'{"cells": []}'
        assert kept["team/r1/nb/greet.ipynb"].content_type == "application/x-ipynb+json"
        assert kept["team/r1/nb/greet.html"].content_type == "text/html"
        last = fake.sent("POST")[-1]
        assert b'"name": "team/r1/summary.json"' in last.body or b'"team/r1/summary.json"' in last.body


def test_a_missing_bucket_is_exit_3_naming_it_and_writes_nothing(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path)
    with FakeStorage() as fake:
        with pytest.raises(Unavailable, match=r"gs://nope/r1/ failed: .*does not exist") as failed:
            store_for(settings(fake, "gs://nope")).keep(run_dir, "r1")
        assert "no evidence recorded" in str(failed.value) and str(run_dir) in str(failed.value)
        assert not fake.objects


def test_a_file_that_vanishes_mid_copy_is_exit_3_and_removes_what_was_copied(tmp_path: Path) -> None:
    run_dir = run_folder(tmp_path)
    with FakeStorage(buckets=("arts",)) as fake:

        def vanish_then_insert(request: FakeRequest) -> Any:
            (run_dir / "summary.json").unlink(missing_ok=True)  # copied last: gone before its turn
            return fake._insert(request)

        fake.route("POST", r"/upload/storage/v1/b/(?P<bucket>[^/]+)/o")(vanish_then_insert)
        with pytest.raises(Unavailable) as failed:
            store_for(settings(fake, "gs://arts/team")).keep(run_dir, "r1")
        message = str(failed.value)
        assert "\n" not in message and "No such file or directory" in message
        assert str(run_dir / "summary.json") in message and "nothing was kept there" in message
        assert len(fake.sent("POST")) == 4 and len(fake.sent("DELETE")) == 4
        assert not fake.objects


def test_a_url_that_is_not_gs_is_refused(tmp_path: Path) -> None:
    for url in ("s3://bucket/x", "gs://", "/tmp/artifacts", "gs://b/a//b"):
        with pytest.raises(ConfigError, match="not gs://BUCKET"):
            store_for(Settings(repo=tmp_path, artifacts_url=url))


def test_a_repository_may_not_send_the_artifacts_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.envctl]\nartifacts_url = "gs://someone-else"\n')
    with pytest.raises(ConfigError, match="ENVCTL_ARTIFACTS_URL"):
        load(repo=tmp_path, env={})
    assert load(repo=tmp_path / "x", env={"ENVCTL_ARTIFACTS_URL": "gs://ours"}).artifacts_url == "gs://ours"
