"""AUTH001 (end-user credential flows) and AUTH002 (Google Cloud clients without a project)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from pipeline.spec.lint.cells import program
from pipeline.spec.lint.model import Cell, Context, Finding, found
from pipeline.spec.lint.names import dotted, has_keyword

# Last part of a called name -> why it needs a person.
USER_FLOWS = {
    "InstalledAppFlow": "InstalledAppFlow opens a browser for a person to sign in",
    "authenticate_user": "authenticate_user() signs in a person (Colab)",
    "get_user_credentials": "get_user_credentials() asks a person to sign in",
}
COLAB_AUTH = "google.colab.auth"
CREDENTIAL_FOLDER = ".config/gcloud"
# Client constructors whose project comes from the environment unless given.
NEED_PROJECT = {
    "google.cloud.bigquery.Client": 0,
    "google.cloud.storage.Client": 0,
    "google.cloud.firestore.Client": 0,
    "google.cloud.logging.Client": 0,
    "google.cloud.datastore.Client": 0,
    "google.cloud.aiplatform.init": None,
    "vertexai.init": None,
}


def _user_flow(name: str) -> str | None:
    if name == COLAB_AUTH:
        return "google.colab.auth signs in a person"
    for part in name.split(".")[-2:]:
        if part in USER_FLOWS:
            return USER_FLOWS[part]
    return None


def auth001(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    for cell in cells:
        seen: set[int] = set()
        for shell in cell.shell:
            words = shell.words
            if program(words) == "gcloud" and "auth" in words and "login" in words:
                seen.add(shell.line)
                yield found(ctx, "AUTH001", cell, shell.line, f"`{' '.join(words)}` signs in a person")
        for unit in cell.units:
            for node in unit.of(ast.ImportFrom, ast.Import, ast.Call, ast.Constant):
                line = unit.line_of(node)
                why: str | None = None
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    if any(f"{node.module}.{a.name}" == COLAB_AUTH for a in node.names):
                        why = _user_flow(COLAB_AUTH)
                elif isinstance(node, ast.Import):
                    if any(a.name == COLAB_AUTH for a in node.names):
                        why = _user_flow(COLAB_AUTH)
                elif isinstance(node, ast.Call):
                    why = _user_flow(dotted(node.func, known))
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and CREDENTIAL_FOLDER in node.value
                ):
                    why = f"reads a person's gcloud credentials ({node.value})"
                if why and line not in seen:
                    seen.add(line)
                    yield found(ctx, "AUTH001", cell, line, why)


def auth002(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Call):
                name = dotted(node.func, known)
                if name not in NEED_PROJECT or has_keyword(node, "project"):
                    continue
                position = NEED_PROJECT[name]
                if position is not None and len(node.args) > position:
                    continue
                short = ".".join(name.split(".")[-2:])
                yield found(
                    ctx,
                    "AUTH002",
                    cell,
                    unit.line_of(node),
                    f"`{short}()` without project=: a scheduled run may have no default project",
                )
