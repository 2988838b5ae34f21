"""``harness submit``, ``harness baselines run`` and ``harness status``: entries over suites."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from harness.cli.common import (
    CONTEXT,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_USAGE,
    execution_options,
    executor_options,
    fail,
    for_json,
    gathered,
    guarded,
    json_option,
    output_options,
    results_folder_or_fail,
    results_option,
    study_or_fail,
    suite_option,
    suite_or_fail,
)
from harness.reporting import ConsoleReporter
from harness.store.record import finite

if TYPE_CHECKING:
    from harness.execution.options import Execution
    from harness.execution.sweep import Executor, SweepEntry, SweepResult
    from harness.store.results import ResultsStore


@dataclass(frozen=True)
class SweepRequest:
    """What a command that runs a sweep (``submit``, ``baselines run``, ``study run``) was told
    beyond its entries: where the records go, how each run executes and on which executor,
    whether to return once submitted (--detach), to run again what is done (--rerun), and to
    print JSON (--json)."""

    results_dir: str
    execution: Execution
    executor: Executor
    detach: bool
    rerun: bool
    as_json: bool


def sweep_and_report(store: ResultsStore, entries: list[SweepEntry], sweep: SweepRequest,
                     console: ConsoleReporter, batch_name: str = "harness") -> list[SweepResult]:
    """Prepare every entry, run all their runs as one batch on the sweep's executor (one pool of
    workers, or one job array), and print a summary per entry (with --json, JSON: each entry's
    runs). Returns the SweepResults in entry order."""
    from harness.execution.sweep import prepare, run_prepared

    as_json = sweep.as_json
    console = for_json(console, as_json)

    prepared = []
    for entry in entries:
        if len(entries) > 1:
            console.info(f"== {entry.name} ({entry.source})")
        prepared.append(guarded(console, prepare, store, entry, sweep.execution, console))
    results = guarded(console, run_prepared, prepared, store, sweep.executor, detach=sweep.detach,
                      name=batch_name, reporter=console)
    submitted = next((r.submitted for r in results if r.submitted is not None), None)
    if submitted is not None:
        console.info(f"\n{', '.join(r.entry for r in results if r.submitted)}: submitted "
                     f"{len(submitted.job_ids)} run(s) (jobs {', '.join(submitted.job_ids[:3])}"
                     f"{', ...' if len(submitted.job_ids) > 3 else ''}); logs in "
                     f"{submitted.folder}; follow with `harness status --results {store.root}`")
    if as_json:
        click.echo(json.dumps([summary_json(r) for r in results], indent=2))
    for result in results:
        if result.submitted is not None or as_json:
            continue
        name = result.entry
        diverged = [r for r in result.ran if r["status"] == "diverged"]
        click.echo(f"{name}: {len(result.ran)} run(s), {len(result.skipped)} skipped (already "
                   f"done), {len(result.ran) - len(diverged) - len(result.failed)} ok, "
                   f"{len(diverged)} diverged, {len(result.failed)} failed")
        if result.failed or diverged:
            by_category = Counter(r["failure"]["category"] for r in result.failed + diverged)
            click.echo("failures by category: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(by_category.items())), err=True)
            for r in result.failed + diverged:
                click.echo(f"  {r['failure']['category']}: {r['suite']['setting']} seed "
                           f"{r['config']['seed']}: {r['failure']['message']}", err=True)
            click.echo(f"logs: {store.root / 'logs'}", err=True)
    return results


def summary_json(result: SweepResult) -> dict[str, Any]:
    """An entry's sweep as JSON: what ran (each record's key fields) and what was skipped."""
    def ran(r: dict) -> dict:
        return {"run_id": r["run_id"], "setting": (r.get("suite") or {}).get("setting"),
                "seed": r["config"]["seed"], "status": r["status"], "best_acc": r.get("best_acc"),
                "flags": r.get("flags", []), "failure": r.get("failure")}

    return finite({"entry": result.entry, "ran": [ran(r) for r in result.ran],
                   "skipped": [{"setting": s.setting.key, "seed": s.seed,
                                "why": "done" if s.done else "running"} for s in result.skipped],
                   "submitted": result.submitted.job_ids if result.submitted else None})


@click.command("submit", context_settings=CONTEXT)
@click.argument("submission")
@click.option("--name", required=True, help="The entry's name on the leaderboard.")
@suite_option
@click.option("--final", is_flag=True,
              help="A final submission: also run the suite's hidden settings.")
@click.option("--replace", is_flag=True,
              help="The entry NAME exists with another file: make this file its current version "
                   "(recorded in the entry's history and shown on its page).")
@click.option("--rerun", is_flag=True, help="Run again even the runs that already have a record.")
@json_option("Print the entry's runs as JSON (nothing else on standard output).")
@results_option()
@execution_options(untrusted_default=True)
@executor_options
@output_options
@gathered(SweepRequest, "sweep")
def submit_cmd(submission: str, name: str, suite_name: str | None, track: str | None, final: bool,
               replace: bool, sweep: SweepRequest, console: ConsoleReporter) -> None:
    """Submit SUBMISSION as entry NAME: run every public setting x seed of a suite.

    The file is copied into RESULTS/submissions/ under its sha256 and trained from that copy.
    Runs that already have a completed record (same file, setting, seed, recipe and protocol) are
    skipped, so re-running an interrupted submit continues where it stopped. With --final the
    hidden settings run too.

    A submission is untrusted by default (see --untrusted and docs/security.md): vetted in a
    sandbox, trained in one without the test set, scored by this process from the logits of
    others that hold no labels. Each run is held to a wall-clock timeout, a memory limit and a
    disk quota (the kernel's, on its tmpfs); a run that fails is recorded with its category
    (interface, exception, timeout, out-of-memory, resource-limit, malformed, diverged, crashed)
    and never stops the others. An
    entry name belongs to its first file: another file needs --replace. Ends with a summary;
    exit 1 when any run failed, else 3 when any diverged.
    """
    from harness.execution.sweep import SweepEntry
    from harness.protocol.entries import validate_entry_name
    from harness.store.results import ResultsStore

    try:
        validate_entry_name(name)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    suite = suite_or_fail(suite_name, track)
    entry = SweepEntry(submission, name, "submission", suite, final, replace=replace,
                       rerun=sweep.rerun)
    [result] = sweep_and_report(ResultsStore(sweep.results_dir), [entry], sweep, console, name)
    if result.failed:
        sys.exit(EXIT_FAILED)
    if any(r["status"] == "diverged" for r in result.ran):
        sys.exit(EXIT_DIVERGED)


@click.group("baselines", context_settings=CONTEXT)
def baselines_group() -> None:
    """Run the baselines, so the leaderboard always has them to compare with."""


@baselines_group.command("run", context_settings=CONTEXT)
@suite_option
@click.option("--only", default=None, help="Comma-separated baseline names (default: all).")
@click.option("--rerun", is_flag=True, help="Run again even the runs that already have a record.")
@json_option("Print each baseline's runs as JSON (nothing else on standard output).")
@results_option()
@execution_options(untrusted_default=False)
@executor_options
@output_options
@gathered(SweepRequest, "sweep")
def baselines_run_cmd(suite_name: str | None, track: str | None, only: str | None,
                      sweep: SweepRequest, console: ConsoleReporter) -> None:
    """Run every baseline on a suite as a final entry (public and hidden settings).

    Every baseline that declares the suite's track (its TRACKS) runs, unless --only names some.
    Each run executes in its own process with a wall-clock timeout and a memory limit. The
    baselines ship with the harness, so they are trusted by default.
    """
    from harness.execution.sweep import SweepEntry
    from harness.protocol.entries import baseline_names, baselines_dir, declared_tracks
    from harness.store.results import ResultsStore

    suite = suite_or_fail(suite_name, track)
    names = baseline_names()
    fits = [n for n in names if suite.track in declared_tracks(baselines_dir() / f"{n}.py")]
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            fail(f"unknown baseline(s) {', '.join(unknown)}; baselines: {', '.join(names)}", EXIT_USAGE)
        other = [n for n in wanted if n not in fits]
        if other:
            fail(f"{', '.join(other)} do(es) not declare the {suite.track} track (its TRACKS); "
                 f"the {suite.track} track's baselines: {', '.join(fits)}", EXIT_USAGE)
        names = wanted
    else:
        names = fits  # the baselines that declare the suite's track
    store = ResultsStore(sweep.results_dir)
    # A baseline's file ships with the harness: a newer harness's version replaces the old one.
    entries = [SweepEntry(name, name, "baseline", suite, final=True, replace=True, rerun=sweep.rerun)
               for name in names]
    results = sweep_and_report(store, entries, sweep, console, f"baselines-{suite.name}")
    failed = sum(len(result.failed) for result in results)
    if failed:
        fail(f"{failed} baseline run(s) failed")


_STATE_COLOURS = {"done": "green", "diverged": "yellow", "running": "cyan",
                  "interrupted": "magenta", "failed": "red", "missing": "bright_black"}


@click.command("status", context_settings=CONTEXT)
@click.option("--suite", "suite_name", default=None,
              help="A suite: every entry submitted to it (default: every suite with entries).")
@click.option("--study", "study_file", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="A study file instead of a suite.")
@results_option("Results folder to read.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--all", "show_all", is_flag=True, help="List every run, not only those not done.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs and their states as JSON.")
@output_options
def status_cmd(suite_name: str | None, study_file: str | None, results_dir: str, precision: str,
               show_all: bool, as_json: bool, console: ConsoleReporter) -> None:
    """Which runs of a suite or a study are done, running, interrupted, failed or missing.

    Read from the results folder alone, so it works from any machine that shares it (a cluster's
    login node while the runs go on elsewhere). A run is "running" while its worker's claim in
    RESULTS/running/ has a heartbeat less than 5 minutes old; "interrupted" when the claim went
    stale or a checkpoint waits to be resumed. What is not done is left to run: the same
    `harness submit`, `baselines run` or `study run` command continues it.
    """
    import json as json_mod
    from dataclasses import asdict

    from harness.protocol.studies import point_label
    from harness.protocol.suites import all_suites
    from harness.store.plan import plan_study, plan_suite
    from harness.store.results import ResultsStore
    from harness.store.status import STATES, run_states

    if suite_name and study_file:
        fail("give --suite or --study, not both", EXIT_USAGE)
    results_folder_or_fail(results_dir)
    store = ResultsStore(results_dir)
    if study_file:
        study = study_or_fail(study_file)
        groups = [(f"study {study.name}", guarded(console, plan_study, study, store, precision))]
    else:
        suites = [suite_or_fail(suite_name)] if suite_name else all_suites()
        groups = [(f"suite {s.name}", guarded(console, plan_suite, store, s, precision)) for s in suites]
        groups = [g for g in groups if g[1] or suite_name]
        if not groups:
            fail(f"{results_dir}: no entries registered to any suite; pass --suite or --study",
                 EXIT_USAGE)
    report = []
    for title, planned in groups:
        states = run_states(store, planned)
        report.append((title, states))
    if as_json:
        click.echo(json_mod.dumps([{"group": t, "runs": [asdict(r) for r in rs]} for t, rs in report],
                                  indent=2))
        return
    for title, states in report:
        counts = {s: sum(r.state == s for r in states) for s in STATES}
        click.echo(f"{title}: {len(states)} run(s): " + ", ".join(
            click.style(f"{counts[s]} {s}", fg=_STATE_COLOURS[s]) for s in STATES if counts[s]))
        if not states:
            click.echo("  no entries registered to it")
        for r in states:
            if show_all or r.state not in ("done", "diverged"):
                click.echo(f"  {click.style(f'{r.state:<11}', fg=_STATE_COLOURS[r.state])} "
                           f"{point_label(r.entry, r.point):<24} {r.setting:<22} seed {r.seed:<6} {r.detail}")
        left = counts["missing"] + counts["failed"] + counts["interrupted"]
        if left:
            click.echo(f"  left to run: {left} ({counts['missing']} missing, {counts['failed']} "
                       f"failed, {counts['interrupted']} interrupted)")
