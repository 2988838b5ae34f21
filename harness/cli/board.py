"""harness leaderboard build: the static site from a results folder."""

from __future__ import annotations

import click

from harness.cli.common import CONTEXT, guarded, output_options, results_folder_or_fail, results_option
from harness.reporting import ConsoleReporter


@click.group("leaderboard", context_settings=CONTEXT)
def leaderboard_group() -> None:
    """Build the HTML leaderboard from a results folder."""


@leaderboard_group.command("build", context_settings=CONTEXT)
@results_option("Results folder to read.")
@click.option("--out", "out_dir", default="leaderboard/site", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Folder to write the site to.")
@click.option("--reveal-hidden", is_flag=True,
              help="Show hidden settings' results (of final entries) and rank on all settings.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the leaderboard's table (leaderboard.json) to standard output too.")
@output_options
def leaderboard_build_cmd(results_dir: str, out_dir: str, reveal_hidden: bool, as_json: bool,
                          console: ConsoleReporter) -> None:
    """Write a static site: index.html, a page per entry, leaderboard.csv and leaderboard.json.

    It needs no network and works from file://. Without --reveal-hidden, hidden settings read
    "hidden" and the aggregates use public settings only. A file of the results folder that is
    not a valid record is left out with a warning (and listed on the site), never fatal.
    """
    from harness.leaderboard.site import build_site

    results_folder_or_fail(results_dir)
    site = guarded(console, build_site, results_dir, out_dir, reveal_hidden)
    for path, why in site.skipped.items():
        console.warn(f"skipped {path}: not a run record ({why})")
    for why, n in site.left_out.items():
        console.warn(f"left out {n} {why}")
    if as_json:
        click.echo((site.index.parent / "leaderboard.json").read_text(encoding="utf-8").rstrip())
    else:
        console.info(f"leaderboard: {site.index}  (open file://{site.index.resolve()})")
