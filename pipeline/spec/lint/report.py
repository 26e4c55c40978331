"""Lint output: lines for people, JSON with stable keys, SARIF 2.1.0 for code-scanning pages."""

from __future__ import annotations

import json
from typing import Any

from pipeline import __version__
from pipeline.spec.lint.catalog import RULES
from pipeline.spec.lint.runner import LintReport

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def lines(report: LintReport) -> list[str]:
    out: list[str] = []
    for f in report.findings:
        out.append(f"{f.where()}: {f.rule} {f.severity}: {f.message}")
        if f.source:
            out.append(f"    {f.source}")
        out.append(f"  fix: {f.fix}")
    return out


def sarif(report: LintReport) -> dict[str, Any]:
    used = sorted({f.rule for f in report.findings} | set(RULES))
    index = {rule: i for i, rule in enumerate(used)}
    rules = [
        {
            "id": rule,
            "name": RULES[rule].title.title().replace(" ", ""),
            "shortDescription": {"text": RULES[rule].title},
            "fullDescription": {"text": RULES[rule].why},
            "help": {"text": RULES[rule].fix},
            "defaultConfiguration": {"level": RULES[rule].severity},
        }
        for rule in used
    ]
    results = [
        {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": f.severity,
            "message": {"text": f"{f.message}. Fix: {f.fix}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.notebook, "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": f.line, "snippet": {"text": f.source}},
                    },
                    "logicalLocations": [{"name": f"cell {f.cell}", "kind": "module"}],
                }
            ],
            "properties": {"cell": f.cell, "line": f.line},
        }
        for f in report.findings
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "envctl",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def sarif_text(report: LintReport) -> str:
    return json.dumps(sarif(report), indent=2) + "\n"
