"""The pipelines: staging and production runs, their records, git hooks."""
