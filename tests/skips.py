"""A skipped test could not fail: unless allowed by name, any skip fails the session.

Tests here run against real parts (Docker Engine, registry, git, PostgreSQL); a test
that skips because a part is missing proves nothing, and a green run must not hide it.
`ENVCTL_TEST_ALLOW_SKIP` lists the skips that are fine, comma-separated: a test name
(`test_a`, which covers all its parameters), a name with its parameters
(`test_a[postgresql]`) or a node-id pattern (`tests/integration/test_race.py::*`,
`*postgresql*`). Every other skip is listed with its reason at the end and the
session exits 1 even when everything else passed.

Loaded by tests/conftest.py; a pytest plugin of its own (`-p tests.skips`) so that its
own test can run it on a tiny test file.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

import pytest

ALLOW_VARIABLE = "ENVCTL_TEST_ALLOW_SKIP"


def allowed_patterns(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def is_allowed(nodeid: str, patterns: list[str]) -> bool:
    """True when a pattern names the test, the test with its parameters, or matches its node id."""
    name = nodeid.rpartition("::")[2]
    bare = name.partition("[")[0]
    return any(
        candidate == pattern or fnmatch.fnmatchcase(candidate, pattern)  # '[...]' is literal first
        for pattern in patterns
        for candidate in (nodeid, name, bare, nodeid.partition("::")[0])
    )


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "no reason given")


@dataclass(eq=False)
class SkipGuard:
    patterns: list[str]
    unallowed: list[tuple[str, str]] = field(default_factory=list)

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not is_allowed(report.nodeid, self.patterns):
            self.unallowed.append((report.nodeid, _reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a module-level skip, e.g. pytest.importorskip
            self._record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self._record(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        ok = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if self.unallowed and session.exitstatus in ok:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.unallowed:
            return
        terminalreporter.section("skipped tests that were not allowed", sep="=", red=True, bold=True)
        for nodeid, reason in self.unallowed:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line(
            f"A skipped test checked nothing: make the part it needs available (`make test` installs "
            f"and starts them), or allow the skip by name: {ALLOW_VARIABLE}=test_name,path::pattern*"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipGuard(allowed_patterns(os.environ.get(ALLOW_VARIABLE))), "envctl-skips")
