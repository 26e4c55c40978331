"""An executed notebook as HTML: cells, text outputs, PNG/JPEG images, the failing cell marked.

Rendered here rather than taken from nbconvert, whose pages load require.js and MathJax
from a CDN and carry the notebook's own HTML and scripts: every source and output is
shown as escaped text; only images pass, as base64 data URLs checked to be base64.
The report's notebook pages use it, and so does the test stage for each notebook's
HTML artifact (`document`), on the host, after the notebook's container is gone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.report.html import CSP, CSS, Markup, esc
from pipeline.testing.classify import INSERTED_TAGS, as_list, as_mapping, plain, tags_of

BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")
IMAGES = ("image/png", "image/jpeg", "image/gif")
FAILING_ID = "failing-cell"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return "" if value is None else str(value)


def _output(output: Mapping[str, Any]) -> Markup:
    kind = output.get("output_type")
    if kind == "stream":
        stream = "error" if output.get("name") == "stderr" else "stream"
        return Markup(f'<pre class="{stream}">{esc(plain(_text(output.get("text"))))}</pre>')
    if kind == "error":
        trace = "\n".join(str(line) for line in as_list(output.get("traceback")))
        text = plain(trace) or f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        return Markup(f'<pre class="error">{esc(text)}</pre>')
    if kind in {"execute_result", "display_data"}:
        data = as_mapping(output.get("data"))
        for mime in IMAGES:
            payload = _text(data.get(mime))
            if payload and BASE64.match(payload):
                compact = "".join(payload.split())
                return Markup(f'<img alt="{esc(mime)} output" src="data:{mime};base64,{compact}">')
        if "text/plain" in data:
            return Markup(f"<pre>{esc(plain(_text(data['text/plain'])))}</pre>")
        kinds = ", ".join(sorted(str(k) for k in data))
        return Markup(f'<pre class="muted">[{esc(kinds or "empty")} output not shown]</pre>')
    return Markup("")


def render(notebook: Mapping[str, Any], failing_cell: int | None) -> Markup:
    """The cells of an executed notebook; `failing_cell` counts the committed notebook's cells."""
    parts: list[str] = []
    index = 0
    for cell in as_list(notebook.get("cells")):
        if not isinstance(cell, Mapping):
            continue
        tags = tags_of(cell)
        if "papermill-error-cell-tag" in tags:
            continue  # papermill's own HTML banner; the hint says the same
        inserted = bool(tags & INSERTED_TAGS)
        kind = str(cell.get("cell_type", "code"))
        classes = ["cell", "markdown" if kind != "code" else "code"]
        attributes = ""
        if inserted:
            classes.append("inserted")
            label = "parameters injected by papermill"
        else:
            count = cell.get("execution_count")
            label = f"cell {index}" + (f" · In [{count}]" if kind == "code" and count is not None else "")
            if kind != "code":
                label += f" · {kind}"
            if failing_cell is not None and index == failing_cell:
                classes.append("failing")
                attributes = f' id="{FAILING_ID}"'
                label += " · failed here"
            index += 1
        outputs = "".join(_output(o) for o in as_list(cell.get("outputs")) if isinstance(o, Mapping))
        parts.append(
            f'<div class="{" ".join(classes)}"{attributes}><div class="prompt">{esc(label)}</div>'
            f"<pre>{esc(_text(cell.get('source')))}</pre>"
            + (f'<div class="output">{outputs}</div>' if outputs else "")
            + "</div>"
        )
    return Markup("\n".join(parts))


def hint(outcome: str, where: str, error: str, source_line: str, fix: str, *, jump: bool) -> Markup:
    """The box above a notebook that did not pass: what, where, the line, the hint."""
    link = f' <a href="#{FAILING_ID}">go to the failing cell</a>' if jump else ""
    return Markup(
        '<div class="hint" id="hint"><strong>'
        + esc(" · ".join(p for p in (outcome, where, error) if p))
        + "</strong>"
        + (f"<pre>{esc(source_line)}</pre>" if source_line else "")
        + f"<div>hint: {esc(fix or '-')}</div>{link}</div>"
    )


def document(title: str, body: Markup) -> str:
    """A page of its own, opened from a run's folder: the report's style, no script, no network."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body><main><h1>{esc(title)}</h1>\n{body}</main></body></html>\n"
    )
