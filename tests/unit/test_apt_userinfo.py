"""The local base's root file system keeps no apt mirror credentials."""

from __future__ import annotations

from pathlib import Path

from pipeline.machine import scrub_userinfo, without_userinfo
from pipeline.stack.base_image import _scrub_apt_sources


def test_userinfo_becomes_an_auth_conf_entry() -> None:
    clean, auth = without_userinfo("https://ci%40corp:s3cr%2Ft@mirror.example:8443/debian")
    assert clean == "https://mirror.example:8443/debian"
    assert auth == "machine mirror.example:8443/debian login ci@corp password s3cr/t\n"
    assert without_userinfo("http://mirror.invalid/debian") == ("http://mirror.invalid/debian", "")


def test_every_url_loses_its_userinfo() -> None:
    text = "deb https://u:p@m.example/debian bookworm main\nURIs: http://tok@m2.example/x\n# mail a@b.c\n"
    assert (
        scrub_userinfo(text)
        == "deb https://m.example/debian bookworm main\nURIs: http://m2.example/x\n# mail a@b.c\n"
    )


def test_the_root_file_system_sources_are_scrubbed(tmp_path: Path) -> None:
    apt = tmp_path / "etc" / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("deb https://user:secret@mirror.example/debian bookworm main\n")
    (apt / "sources.list.d" / "extra.sources").write_text("URIs: https://user:secret@mirror.example/debian\n")
    _scrub_apt_sources(tmp_path)
    for path in (apt / "sources.list", apt / "sources.list.d" / "extra.sources"):
        assert "secret" not in path.read_text() and "mirror.example/debian" in path.read_text()
