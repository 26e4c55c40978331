"""The run's bytecode cache on the host: read-only for everyone, still removed with the run."""

from __future__ import annotations

import os
import stat
import tempfile
from concurrent.futures import Future
from pathlib import Path

from pipeline.testing.stage import _cache
from pipeline.testing.tasks import WarmUpFailed, read_only, remove_work

NOBODY = 65534


def tree(work: Path) -> Path:
    cache = work / "pycache"
    (cache / "usr" / "lib").mkdir(parents=True)
    (cache / "usr" / "lib" / "mod.cpython-311.pyc").write_bytes(b"cached")
    (cache / "top.pyc").write_bytes(b"top")
    (work / "out").mkdir()
    (work / "out" / "nb.ipynb").write_text("{}")
    return cache


def as_user(work: Path, cache: Path) -> int:
    """In a child that is not root (root ignores modes): make the cache read-only, try to
    write into it, then remove the work folder. The exit code has a bit per step that failed."""
    for path in [work, *work.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            read_only(cache)
            for attempt in (
                lambda: (cache / "usr" / "lib" / "planted.pyc").write_bytes(b"x"),
                lambda: (cache / "usr" / "lib" / "mod.cpython-311.pyc").write_bytes(b"x"),
                lambda: (cache / "usr" / "new").mkdir(),
            ):
                try:
                    attempt()
                    code |= 1
                except PermissionError:
                    pass
            remove_work(work)
        except BaseException:
            code |= 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_the_cache_is_read_only_for_its_owner_too_and_the_run_still_removes_it() -> None:
    # Outside pytest's temporary folders (root's own, closed to other users).
    top = Path(tempfile.mkdtemp(prefix="envctl-pycache-", dir="/tmp"))
    try:
        os.chown(top, NOBODY, NOBODY)
        work = top / ".work"
        cache = tree(work)
        if os.getuid() == 0:
            assert as_user(work, cache) == 0
        else:
            read_only(cache)
            remove_work(work)
        assert not work.exists()
    finally:
        remove_work(top)


def test_read_only_modes(tmp_path: Path) -> None:
    cache = tree(tmp_path / ".work")
    (cache / "link").symlink_to(tmp_path / ".work" / "out" / "nb.ipynb")
    read_only(cache)
    modes = {p.relative_to(cache).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in cache.rglob("*")}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o555
    assert {k: v for k, v in modes.items() if k != "link"} == {
        "usr": 0o555,
        "usr/lib": 0o555,
        "usr/lib/mod.cpython-311.pyc": 0o444,
        "top.pyc": 0o444,
    }
    # a link is left alone: what it points to keeps its mode
    assert stat.S_IMODE((tmp_path / ".work" / "out" / "nb.ipynb").stat().st_mode) & 0o200
    remove_work(tmp_path / ".work")
    assert not (tmp_path / ".work").exists()


def test_a_failed_warm_up_is_a_warning_and_no_cache() -> None:
    said: list[str] = []
    failed: Future[Path | None] = Future()
    failed.set_exception(WarmUpFailed("exit 3: boom"))
    assert _cache(failed, said.append) is None
    assert said == ["the bytecode warm-up failed (exit 3: boom); the notebooks run without the cache"]
    broken: Future[Path | None] = Future()
    broken.set_exception(OSError("engine gone"))
    assert _cache(broken, said.append) is None
    assert (
        said[1] == "the bytecode warm-up failed (OSError: engine gone); the notebooks run without the cache"
    )
