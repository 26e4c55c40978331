"""`envctl report`: write the static HTML site of the ledger and the runs; optionally serve it."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline import output
from pipeline.cli.common import settings_of


@click.command("report")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the site (default: .envctl/report); an earlier report there is replaced.",
)
@click.option("--serve", is_flag=True, help="Serve the site on 127.0.0.1 after writing it, until Ctrl-C.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default="a free port", help="Port of --serve."
)
@click.pass_context
def command(ctx: click.Context, out: Path | None, serve: bool, port: int) -> None:
    """Write a static HTML report: environments, their history, pipeline and test runs, diffs.

    \b
    Plain HTML and CSS with relative links: open index.html from disk, no network needed.
    Drift is read from the registry as `status` does (`unknown` when it does not answer).
    """
    from pipeline.backends import publisher_for
    from pipeline.ledger.db import Ledger, now
    from pipeline.report import data, site

    settings = settings_of(ctx)
    target = out if out is not None else settings.state_dir / "report"
    site.require_replaceable(target)
    ledger = Ledger.for_settings(settings)
    with output.step(f"writing the report to {target}"):
        publisher = publisher_for(settings, timeout=10)
        snapshot = data.collect(ledger, publisher, now(), artifacts_dir=settings.artifacts_dir)
        files = site.render(snapshot)
        site.write(target, files)
    if any(e.drift == "unknown" for e in snapshot.environments):
        output.warn(f"registry {publisher.host} did not answer; the report shows drift as unknown")
    index = target.absolute() / "index.html"
    click.echo(index.as_uri())
    if serve:
        _serve(target, port)


def _serve(root: Path, port: int) -> None:
    from pipeline.errors import Unavailable
    from pipeline.report.serve import server, url

    try:
        httpd = server(root, port)
    except OSError as e:
        raise Unavailable(
            f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}; choose another --port"
        ) from e
    with httpd:
        click.echo(url(httpd))
        output.info("serving the report; Ctrl-C stops")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            output.info("stopped")
