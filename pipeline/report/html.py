"""HTML building blocks of the report: escaping, the page frame, tables and the style sheet.

Everything that comes from outside (notebook outputs, reasons, logs, names) passes
through `esc`; markup is only ever made here and in the page functions from escaped text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import quote

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class Markup(str):
    """Text that is already HTML; everything else gets escaped."""


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def slug(name: str) -> str:
    """A file name from an ID: its own characters when safe, else a cleaned one."""
    cleaned = SAFE_NAME.sub("_", name).lstrip(".") or "_"
    return cleaned[:150]


def href(path: str) -> str:
    """A relative link: each segment percent-quoted (file:// and http both read it)."""
    return quote(path, safe="/#")


def link(path: str, text: object, *, cls: str = "") -> Markup:
    klass = f' class="{esc(cls)}"' if cls else ""
    return Markup(f'<a href="{esc(href(path))}"{klass}>{esc(text)}</a>')


def badge(outcome: str) -> Markup:
    kind = {
        "passed": "ok",
        "promoted": "ok",
        "noop": "muted",
        "running": "muted",
        "in sync": "ok",
    }.get(outcome, "bad")
    return Markup(f'<span class="badge {kind}">{esc(outcome)}</span>')


def short(value: str | None, n: int = 12) -> str:
    return value[:n] if value else "-"


def when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


def age(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size}\u00a0{unit}"
    return f"{seconds}\u00a0s"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, cls: str = "") -> Markup:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{esc(cls)}"' if cls else ""
    if not body:
        return Markup('<p class="muted">none yet</p>')
    return Markup(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


# The browser may load nothing: no script, no font, no stylesheet or image from anywhere
# (images of notebook outputs are data: URLs), so file:// and --serve read the same.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"

NAV = (
    ("index.html", "Environments"),
    ("runs/index.html", "Pipeline runs"),
    ("tests/index.html", "Test runs"),
)


def page(title: str, body: Markup, *, depth: int, taken_at: datetime) -> str:
    """A whole page; `depth` is how many folders below the site's root it lives."""
    up = "../" * depth
    nav = " ".join(link(up + path, text) for path, text in NAV)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No network, no script: everything the page needs is in the site.
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)} · envctl</title><style>{CSS}</style></head>\n"
        f'<body><header><span class="brand">envctl</span> <nav>{nav}</nav></header>\n'
        f"<main><h1>{esc(title)}</h1>\n{body}</main>\n"
        f"<footer>generated {esc(when(taken_at))} by envctl report</footer></body></html>\n"
    )


CSS = """\
:root { --fg: #1d2330; --muted: #667085; --line: #d9dee7; --ok: #137333; --bad: #b3261e;
  --bg-ok: #e6f4ea; --bg-bad: #fce8e6; --accent: #1a56b0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: #f7f8fa; }
header { background: #1d2330; color: #fff; padding: .6rem 1.5rem; display: flex; gap: 1.5rem;
  align-items: baseline; }
header a { color: #cfe0ff; margin-right: 1rem; text-decoration: none; }
header a:hover { text-decoration: underline; }
.brand { font-weight: 700; letter-spacing: .02em; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
h1 { font-size: 1.4rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
a { color: var(--accent); }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); margin-bottom: 1rem;
  width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f6; font-weight: 600; font-size: .85rem; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 12.5px; }
pre { background: #fff; border: 1px solid var(--line); padding: .6rem .8rem; overflow: auto; margin: 0;
  white-space: pre-wrap; word-break: break-word; }
.badge { display: inline-block; white-space: nowrap; padding: 0 .45rem; border-radius: .6rem;
  font-size: .8rem; font-weight: 600; }
.badge.ok { background: var(--bg-ok); color: var(--ok); }
.badge.bad { background: var(--bg-bad); color: var(--bad); }
.badge.muted, .muted { color: var(--muted); }
.badge.muted { background: #eef1f6; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; background: #fff;
  border: 1px solid var(--line); padding: .6rem .8rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.timeline { list-style: none; padding: 0; margin: 0; border-left: 3px solid var(--line); }
.timeline li { margin: 0 0 .8rem; padding-left: 1rem; position: relative; }
.timeline li::before { content: ""; position: absolute; left: -8px; top: .35rem; width: 13px; height: 13px;
  border-radius: 50%; background: var(--accent); }
.timeline li.forced::before { background: var(--bad); }
.timeline .at { color: var(--muted); font-size: .85rem; }
.hint { background: var(--bg-bad); border-left: 4px solid var(--bad); padding: .6rem .8rem; margin: .6rem 0; }
.hint strong { color: var(--bad); }
.cell { background: #fff; border: 1px solid var(--line); margin: .6rem 0; }
.cell .prompt { color: var(--muted); font-size: .8rem; padding: .2rem .6rem;
  border-bottom: 1px solid var(--line); background: #f2f4f8; }
.cell pre { border: 0; }
.cell .output pre { background: #fbfbfd; border-top: 1px dashed var(--line); }
.cell .output pre.error { background: #fff4f3; color: #5f0f0a; }
.cell.inserted { opacity: .75; }
.cell.failing { border: 2px solid var(--bad); box-shadow: 0 0 0 3px var(--bg-bad); }
.cell.failing .prompt { background: var(--bg-bad); color: var(--bad); font-weight: 600; }
.cell.markdown pre { background: #fcfcf7; }
.cell img { max-width: 100%; display: block; padding: .4rem; }
.added { color: var(--ok); } .removed { color: var(--bad); }
footer { color: var(--muted); font-size: .8rem; padding: 1rem 1.5rem; }
"""
