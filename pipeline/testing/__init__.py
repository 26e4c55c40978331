"""Notebook tests: run a spec's test notebooks with papermill inside one version of an image.

The entry point is `run_tests`; `envctl test` and the pipelines call it.
"""

from __future__ import annotations

from pipeline.testing.model import Outcome, Result, TestReport, Verdict
from pipeline.testing.stage import run_tests

__all__ = ["Outcome", "Result", "TestReport", "Verdict", "run_tests"]
