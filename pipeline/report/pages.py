"""The environment pages: what each environment names now, its history, package diffs.

Each function returns {path inside the site: page text}; paths are relative to the root.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.ledger.db import TestRun
from pipeline.report import runs
from pipeline.report.data import Diff, Environment, Snapshot
from pipeline.report.html import Markup, age, badge, esc, join, link, page, short, slug, table, when


def env_page(env_id: str) -> str:
    return f"env/{slug(env_id)}.html"


def diff_page(image: str) -> str:
    return f"diff/{slug(image)}.html"


def _latest_run(snapshot: Snapshot, env: Environment, up: str) -> Markup:
    # The runs of this version (its commit and digest): a later commit that reused the
    # digest and failed says nothing against the commit this environment names.
    found = [
        r for r in snapshot.runs_of_digest(env.pointer.image, env.pointer.digest) if r.sha == env.pointer.sha
    ]
    if not found:
        return Markup('<span class="muted">no test run</span>')
    latest = max(found, key=lambda r: r.finished_at)
    outcome = "passed" if latest.passed else "failed"
    return join(
        [
            badge(outcome),
            " ",
            link(up + runs.test_page(latest.run_id), f"test run {short(latest.run_id, 22)}"),
        ]
    )


def _signed(env: Environment) -> Markup:
    if not env.signoffs:
        return Markup('<span class="muted">-</span>')
    names = [str(s.get("actor") or s.get("signed_by") or s.get("who") or "?") for s in env.signoffs]
    return esc(", ".join(names))


def _drift(env: Environment) -> Markup:
    if env.pointer.digest is None:
        return Markup('<span class="muted">-</span>')
    return badge(env.drift or "in sync")


def index(snapshot: Snapshot) -> dict[str, str]:
    headers = ["Environment", "SHA", "Digest", "Age", "Pin", "Tag", "Evidence"]
    if snapshot.signoffs_known:
        headers.append("Sign-offs")
    sections: list[str] = []
    by_image: dict[str, list[Environment]] = {}
    for env in snapshot.environments:
        by_image.setdefault(env.pointer.image, []).append(env)
    diffs = {d.old.rpartition(".")[0] for d in snapshot.diffs}
    for image, found in sorted(by_image.items()):
        rows: list[list[object]] = []
        for env in found:
            p = env.pointer
            env_id = f"{p.image}.{p.stage}"
            row: list[object] = [
                link(env_page(env_id), env_id),
                Markup(f'<span class="mono">{esc(short(p.sha))}</span>'),
                Markup(f'<span class="mono" title="{esc(p.digest)}">{esc(short(p.digest, 19))}</span>'),
                age(p.updated_at, snapshot.taken_at),
                join(["pinned: ", p.pin_reason or ""]) if p.pinned else "",
                _drift(env),
                _latest_run(snapshot, env, ""),
            ]
            if snapshot.signoffs_known:
                row.append(_signed(env))
            rows.append(row)
        extra = link(diff_page(image), "package diff") if image in diffs else ""
        sections.append(f"<h2>{esc(image)} <small>{extra}</small></h2>" + table(headers, rows))
    recent = runs.run_rows(snapshot.pipeline_runs[:10], "")
    body = Markup(
        f'<p class="muted">Ledger read {esc(when(snapshot.taken_at))}; tags compared with registry '
        f"{esc(snapshot.registry)}.</p>"
        + ("".join(sections) or '<p class="muted">No environment yet.</p>')
        + "<h2>Recent pipeline runs</h2>"
        + recent
    )
    return {"index.html": page("Environments", body, depth=0, taken_at=snapshot.taken_at)}


def _runs_of(snapshot: Snapshot, image: str, sha: str | None) -> Iterable[TestRun]:
    return (r for r in snapshot.test_runs if r.image == image and r.sha == sha)


def environment(snapshot: Snapshot, env: Environment) -> dict[str, str]:
    p = env.pointer
    env_id = f"{p.image}.{p.stage}"
    facts = [
        ("SHA", p.sha or "-"),
        ("digest", p.digest or "-"),
        ("updated", when(p.updated_at)),
        ("pinned", f"yes, by {p.pinned_by or '?'}: {p.pin_reason or ''}" if p.pinned else "no"),
        ("registry tag", _drift(env)),
        ("evidence", _latest_run(snapshot, env, "../")),
    ]
    if env.signoffs is not None:
        facts.append(("sign-offs", _signed(env)))
    items: list[str] = []
    for event in reversed(snapshot.history.get(env_id, [])):
        tested = [
            link("../" + runs.test_page(r.run_id), "passed" if r.passed else "failed")
            for r in _runs_of(snapshot, event.image, event.to_sha)
        ]
        what = f"{event.action}{' (forced)' if event.forced else ''}"
        items.append(
            f'<li class="{"forced" if event.forced else ""}"><div class="at">{esc(when(event.at))}</div>'
            f"<strong>{esc(what)}</strong> "
            f'<span class="mono">{esc(short(event.from_sha))} → {esc(short(event.to_sha))}</span> '
            f"by {esc(event.actor)}"
            + (f" [{esc(event.ci_run_id)}]" if event.ci_run_id else "")
            + (f"<div>{esc(event.reason)}</div>" if event.reason else "")
            + (f"<div>test runs of {esc(short(event.to_sha))}: {join(_sep(tested))}</div>" if tested else "")
            + "</li>"
        )
    body = Markup(
        '<dl class="facts">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
        + "</dl><h2>History</h2>"
        + (f'<ul class="timeline">{"".join(items)}</ul>' if items else '<p class="muted">no moves yet</p>')
    )
    return {env_page(env_id): page(env_id, body, depth=1, taken_at=snapshot.taken_at)}


def _sep(parts: list[Markup]) -> list[object]:
    out: list[object] = []
    for i, part in enumerate(parts):
        if i:
            out.append(", ")
        out.append(part)
    return out


def _diff_section(diff: Diff) -> str:
    result = diff.result
    rows: list[list[object]] = []
    for label, changes in (("added", result.added), ("removed", result.removed), ("changed", result.changed)):
        kind = Markup(f'<span class="{label}">{label}</span>')
        rows += [[kind, c.kind, c.name, c.old or "", c.new or ""] for c in changes]
    facts = [
        ("base image", result.base),
        ("python", result.python),
    ]
    listed = "".join(
        f"<dt>{esc(name)}</dt><dd>{esc(old or '-')}"
        + (f" → {esc(new or '-')}" if old != new else " (unchanged)")
        + "</dd>"
        for name, (old, new) in facts
    )
    return (
        f"<h2>{esc(diff.old)} ({esc(short(diff.old_sha))}) → "
        f"{esc(diff.new)} ({esc(short(diff.new_sha))})</h2>"
        f'<dl class="facts">{listed}</dl><p></p>'
        + (
            table(["", "kind", "package", diff.old, diff.new], rows)
            if rows
            else '<p class="muted">no differences in packages</p>'
        )
    )


def diffs(snapshot: Snapshot) -> dict[str, str]:
    by_image: dict[str, list[Diff]] = {}
    for diff in snapshot.diffs:
        by_image.setdefault(diff.old.rpartition(".")[0], []).append(diff)
    return {
        diff_page(image): page(
            f"{image}: packages",
            Markup("".join(_diff_section(d) for d in found)),
            depth=1,
            taken_at=snapshot.taken_at,
        )
        for image, found in by_image.items()
    }
