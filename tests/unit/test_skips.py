"""tests/skips.py: a skip fails the session unless ENVCTL_TEST_ALLOW_SKIP allows it by name.

Each case runs pytest in a child process on a tiny test file with the plugin loaded.
"""

from __future__ import annotations

import pytest

from tests.helpers import ROOT
from tests.skips import ALLOW_VARIABLE, is_allowed

pytest_plugins = ["pytester"]

TINY = """
import pytest

def test_runs():
    pass

def test_needs_a_part():
    pytest.skip("the part is not here")

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ledger(backend):
    if backend == "postgresql":
        pytest.skip("PostgreSQL is not installed")

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False
"""

MISSING_MODULE = """
import pytest

lib = pytest.importorskip("envctl_no_such_module_anywhere")

def test_uses_it():
    pass
"""


def run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, allow: str | None, **files: str
) -> pytest.RunResult:
    pytester.makepyfile(**(files or {"test_tiny": TINY}))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    if allow is None:
        monkeypatch.delenv(ALLOW_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(ALLOW_VARIABLE, allow)
    return pytester.runpytest_subprocess("-p", "tests.skips", "-p", "no:cacheprovider")


def test_an_unallowed_skip_fails_the_run_and_is_listed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, None)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*skipped tests that were not allowed*",
            "SKIPPED test_tiny.py::test_needs_a_part: the part is not here",
            "SKIPPED test_tiny.py::test_ledger[[]postgresql[]]: PostgreSQL is not installed",
            f"*{ALLOW_VARIABLE}=*",
        ]
    )


@pytest.mark.parametrize(
    "allow",
    [
        "test_needs_a_part,test_ledger",
        " test_needs_a_part , test_ledger[postgresql] ",
        "test_tiny.py::*",
        "test_tiny.py",
        "*part*,*postgresql*",
    ],
)
def test_skips_allowed_by_name_or_pattern_pass(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, allow: str
) -> None:
    result = run(pytester, monkeypatch, allow)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=2, skipped=2, xfailed=1)
    assert "not allowed" not in result.stdout.str()


def test_allowing_one_skip_leaves_the_other_failing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, "test_needs_a_part")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    listed = [line for line in result.stdout.lines if line.startswith("SKIPPED test_tiny.py::")]
    assert listed == ["SKIPPED test_tiny.py::test_ledger[postgresql]: PostgreSQL is not installed"]


def test_a_module_skipped_at_import_fails_unless_allowed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"test_optional": MISSING_MODULE, "test_other": "def test_runs():\n    pass\n"}
    refused = run(pytester, monkeypatch, None, **files)
    assert refused.ret == pytest.ExitCode.TESTS_FAILED
    refused.stdout.fnmatch_lines(["SKIPPED test_optional.py: could not import*envctl_no_such_module*"])
    allowed = run(pytester, monkeypatch, "test_optional.py", **files)
    assert allowed.ret == pytest.ExitCode.OK, allowed.stdout.str()


def test_a_failure_stays_a_failure(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(pytester, monkeypatch, "*", test_bad="def test_fails():\n    assert False\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    ("nodeid", "pattern", "ok"),
    [
        ("tests/pg.py::test_a[postgresql]", "test_a", True),
        ("tests/pg.py::test_a[postgresql]", "test_a[sqlite]", False),
        ("tests/pg.py::test_ab", "test_a", False),
        ("tests/pg.py::test_a[postgresql]", "test_a[postgresql]", True),
        ("tests/integration/test_race.py::test_x", "tests/integration/*", True),
        ("tests/integration/test_race.py::test_x", "tests/unit/*", False),
    ],
)
def test_is_allowed(nodeid: str, pattern: str, ok: bool) -> None:
    assert is_allowed(nodeid, [pattern]) is ok
