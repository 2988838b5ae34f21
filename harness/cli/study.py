"""``harness study run`` and ``harness study report``: controlled comparisons of layers."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    results_option,
    study_or_fail,
)
from harness.cli.sweeps import SweepRequest, sweep_and_report
from harness.reporting import ConsoleReporter

if TYPE_CHECKING:
    from pathlib import Path

    from harness.execution.options import Execution
    from harness.execution.sweep import Executor
    from harness.protocol.studies import Study
    from harness.store.plan import PlannedRun


@click.group("study", context_settings=CONTEXT)
def study_group() -> None:
    """Studies: compare layers under one recipe (which, unlike a suite's, may differ from the
    protocol) and report how they train. The file format is in docs/studies.md; examples in
    studies/."""


@study_group.command("run", context_settings=CONTEXT)
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--only", default=None, help="Comma-separated entry names to run (default: all).")
@click.option("--rerun", is_flag=True, help="Run again even the runs that already have a record.")
@click.option("--dry-run", is_flag=True,
              help="List the runs (with their grid points) and whether each is done, and project "
                   "the cost of those to do from step times measured here; run nothing.")
@click.option("--estimate/--no-estimate", default=True, show_default=True,
              help="With --dry-run: measure and project the cost (a few seconds; on a cluster's "
                   "login node it measures the login node).")
@click.option("--allow-hidden", is_flag=True,
              help="Allow settings that a leaderboard suite keeps hidden (do not tune on them).")
@json_option("Print each entry's runs as JSON (nothing else on standard output).")
@results_option()
@execution_options(untrusted_default=False)
@executor_options
@output_options
@gathered(SweepRequest, "sweep")
def study_run_cmd(study_file: str, only: str | None, dry_run: bool, estimate: bool,
                  allow_hidden: bool, sweep: SweepRequest, console: ConsoleReporter) -> None:
    """Run every entry x setting x seed of STUDY_FILE that the results folder does not have yet.

    Runs go through the same store, worker processes, limits and checkpoints as `harness submit`,
    so an interrupted study continues where it stopped, and a run that any study or suite already
    made with the same file, setting, seed and recipe is reused. Study runs never appear on the
    leaderboard. The entries are your own files, so they are trusted by default (--untrusted
    sandboxes them). Exit 1 when any run failed, else 3 when any diverged.

    \b
    Example:
      harness study run studies/smoke.toml --results results
      harness study report studies/smoke.toml --results results --out study-report
    """
    from harness.execution.sweep import study_entry
    from harness.protocol.studies import hidden_settings, select_entries
    from harness.store.plan import plan_study
    from harness.store.results import ResultsStore

    console = for_json(console, sweep.as_json)
    study = study_or_fail(study_file)
    hidden = hidden_settings(study)
    if hidden and not allow_hidden:
        fail(f"{study_file}: hidden setting(s) {'; '.join(hidden)}: they are evaluated only for "
              "final submissions, so that nobody tunes on them. Pass --allow-hidden if you really "
              "mean to run them.", EXIT_USAGE)
    store = ResultsStore(sweep.results_dir)
    wanted = [n.strip() for n in only.split(",") if n.strip()] if only else None
    if dry_run:
        guarded(console, select_entries, study, wanted)
        planned = [r for r in guarded(console, plan_study, study, store,
                                          sweep.execution.precision)
                   if wanted is None or r.entry in wanted]
        dry_run_report(study, planned, DryRun(sweep.rerun, sweep.execution, sweep.executor,
                                               estimate), sweep.as_json, console)
        return
    console.info(f"study {study.name}: {shape_of(study)}; recipe: "
                 + ("; ".join(study.recipe.deviations()) or "the protocol's"))
    entries = guarded(console, select_entries, study, wanted)
    results = sweep_and_report(store, [study_entry(study, entry, sweep.rerun) for entry in entries],
                               sweep, console, f"study-{study.name}")
    ran = [r for res in results for r in res.ran]
    failed = [r for r in ran if r["status"] == "failed"]
    diverged = [r for r in ran if r["status"] == "diverged"]
    say = console.info if sweep.as_json else click.echo  # with --json, the summary goes to stderr
    say(f"\nstudy {study.name}: {len(ran)} run(s), "
               f"{sum(len(res.skipped) for res in results)} already done, {len(failed)} failed, "
               f"{len(diverged)} diverged. Report: harness study report {study_file} "
               f"--results {sweep.results_dir} --out DIR")
    if failed:
        sys.exit(EXIT_FAILED)
    if diverged:
        sys.exit(EXIT_DIVERGED)


def shape_of(study: Study) -> str:
    """``5 entries x 1 settings x 2 seeds, grid lr (2) x p (4): 56 runs``."""
    grid = " x ".join(f"{a.name} ({len(a.values)})" for a in study.axes)
    from harness.reporting import plural

    return (f"{plural(len(study.entries), 'entry', 'entries')} x "
            f"{plural(len(study.settings), 'setting')} x {plural(len(study.seeds), 'seed')}"
            + (f", grid {grid}" if grid else "") + f": {plural(study.run_count(), 'run')}")


@dataclass(frozen=True)
class DryRun:
    """What ``study run --dry-run`` was told: --rerun, how the runs would execute, on which
    executor, and whether to measure their cost (--estimate)."""

    rerun: bool
    execution: Execution
    executor: Executor
    measure: bool = True


def dry_run_report(study: Study, planned: list[PlannedRun], dry: DryRun, as_json: bool,
                   console: ConsoleReporter) -> None:
    """The runs a study would make (each with its grid point and whether it is done) and what
    those still to run would cost here: measured step times, multiplied out
    (harness.bench.estimate)."""
    import json

    from harness.bench.estimate import estimate, hours
    from harness.engine.device import resolve_device, usable_cpus
    from harness.protocol.entries import params_label

    rerun, executor, isolation = dry.rerun, dry.executor, dry.execution.isolation
    todo = [r for r in planned if not r.done or rerun]
    planned_json = [{"entry": r.entry, "point": dict(r.point), "setting": r.setting.key,
                     "seed": r.seed, "key": r.key, "done": r.done and not rerun} for r in planned]
    summary_json = {"study": study.name, "runs": len(planned), "to_run": len(todo),
                    "grid": [{"name": a.name, "kind": a.kind, "values": list(a.values)}
                             for a in study.axes], "planned": planned_json}
    jobs = getattr(executor, "jobs", None)  # None: a cluster's array, as wide as it gets
    threads = getattr(executor, "threads", None) or max(1, usable_cpus() // (jobs or 1))
    resolved = resolve_device(dry.execution.device)
    if not as_json:
        click.echo(f"study {study.name}: {shape_of(study)}")
        for a in study.axes:
            kind = "recipe field" if a.kind == "recipe" else "layer parameter"
            takers = "" if a.kind == "recipe" else " (entries that take it: " + ", ".join(
                e.name for e in study.entries if e.takes_param(a.name)) + ")"
            click.echo(f"  axis {a.name} ({kind}): {', '.join(map(str, a.values))}{takers}")
        for r in planned:
            point = params_label(dict(r.point))
            state = "done" if r.done and not rerun else "to run"
            click.echo(f"{r.entry:<20} {point:<22} {r.setting.key:<22} seed {r.seed:<6} {state}")
        click.echo(f"{len(todo)} run(s) to do of {len(planned)}")
    if not dry.measure:
        if as_json:
            click.echo(json.dumps({**summary_json, "estimate": None}, indent=2))
        return
    vetted = len({(r.entry, params_label(r.spec.layer_params)) for r in todo})
    found = guarded(console, estimate, [r.spec for r in todo], device=resolved, threads=threads,
                    jobs=jobs or 1, untrusted=isolation.untrusted, vetted=vetted)
    shapes = [{"arch": s.arch, "dataset": s.dataset, "batch_size": s.batch_size,
               "test_batch_size": s.test_batch_size, "optimizer": s.optimizer,
               "step_s": t.step_s, "test_batch_s": t.test_batch_s, "start_s": t.start_s,
               "start_measured": t.start_measured} for s, t in found.timings.items()]
    if as_json:
        click.echo(json.dumps({
            **summary_json,
            "estimate": {"device": str(resolved), "threads": threads, "jobs": jobs,
                         "vetting_s": found.vetting_s, "shapes": shapes, "total_s": found.total_s,
                         "wall_s": found.wall_s if jobs else None}}, indent=2))
        return
    if not todo:
        return
    click.echo(f"cost, measured here ({resolved}, {threads} thread(s) per run, BatchNorm's step; "
               f"harness.bench.estimate says what is left out)"
               + (": this machine, not the cluster's nodes" if jobs is None else "") + ":")
    for s in shapes:
        click.echo(f"  {s['arch']} on {s['dataset']}, batch {s['batch_size']}, {s['optimizer']}: "
                   f"{1000 * s['step_s']:.0f} ms per step, {1000 * s['test_batch_s']:.0f} ms per "
                   f"test batch of {s['test_batch_size']}, {s['start_s']:.1f} s per run besides "
                   f"its epochs (from {s['start_measured']}"
                   + ("; twice per untrusted run)" if isolation.untrusted else ")"))
    click.echo(f"  vetting {vetted} (file, parameters) pair(s) before the runs: {found.vetting_s:.0f} s")
    click.echo(f"projected: {len(todo)} runs x {hours(found.total_s / len(todo))} on average = "
               f"{hours(found.total_s)} of runs"
               + (f"; about {hours(found.wall_s)} of wall time on {jobs} worker(s)" if jobs else
                  "; the wall time depends on how many of the array's tasks run at once"))


@study_group.command("report", context_settings=CONTEXT)
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder to write index.html and study.json to.")
@results_option("Results folder to read.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Which runs to report (never mixed).")
@output_options
def study_report_cmd(study_file: str, out_dir: str, results_dir: str, precision: str,
                     console: ConsoleReporter) -> None:
    """Render STUDY_FILE's report from the results folder: learning curves, best accuracy with
    confidence intervals, convergence, stability, cost, gradient flow, activation statistics and
    a summary of the significant differences (HTML, no JavaScript; plus study.json).

    Runs are found by their key (entry file as it is now, setting, seed, recipe); a missing or
    failed run shows as such, and the report says which cells are incomplete.
    """
    from harness.leaderboard.study_report import build_report

    study = study_or_fail(study_file)

    def build() -> Path:
        try:
            return build_report(study, results_dir, out_dir, precision)
        except FileNotFoundError as exc:
            fail(str(exc))

    index = guarded(console, build)
    click.echo(f"study report: {index}  (open file://{index.resolve()})")
