"""envctl: build, test, promote and roll back notebook images from one git repository."""

from __future__ import annotations

__version__ = "0.1.0"
