"""Promotion: the policy (evidence, refusals) and the moves (promote, rollback, pin)."""
