"""``harness eval`` and ``harness check``: one file, one run or one report."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import click

from harness.cli.common import (
    CONTEXT,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_USAGE,
    execution_options,
    fail,
    for_json,
    gathered,
    guarded,
    json_option,
    output_options,
    param_option,
    results_option,
)
from harness.protocol.catalog import (
    ARCHITECTURES,
    DATASET_ALIASES,
    DATASETS,
    TRACKS,
    compatibility_error,
    resolve_dataset_name,
    track_of,
)
from harness.protocol.entries import params_label
from harness.protocol.recipe import TRACK_RECIPES, Recipe
from harness.reporting import ConsoleReporter, plural
from harness.store.record import finite

if TYPE_CHECKING:
    from pathlib import Path

    from harness.execution.options import Execution
    from harness.protocol.spec import RunSpec
    from harness.vetting.check import Report
    from harness.vetting.submission import Submission

DATASET_CHOICES = list(DATASETS) + list(DATASET_ALIASES)


@dataclass(frozen=True)
class EvalSetting:
    """What ``harness eval`` trains: ARCH on DATASET from SEED, on the first images of each split
    (None: all), the layer built with ``params``; ``allow_hidden``: a hidden setting is meant."""

    arch: str
    dataset: str
    seed: int
    limit_train: int | None
    limit_test: int | None
    params: dict[str, Any]
    allow_hidden: bool


@dataclass(frozen=True)
class RecipeOverrides:
    """The recipe's fields that ``harness eval`` was given (None: the track's recipe's value)."""

    epochs: int | None
    batch_size: int | None
    lr: float | None
    momentum: float | None
    weight_decay: float | None
    warmup_epochs: int | None


def execute(spec: RunSpec, results_dir: str, console: ConsoleReporter, *,
            submission: Submission | None = None, checks: list[dict[str, Any]] | None = None,
            extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """One run in this process, with the console's progress bar and the reference's log lines;
    returns (record, path)."""
    from harness.engine.runner import run_eval

    class Eval(ConsoleReporter):
        def run_started(self, record: dict[str, Any]) -> None:
            sub, env = record["submission"], record["environment"]
            announce(self, record["config"], record.get("entry") or sub["name"], sub["sha256"],
                     f"{env['device']} ({env['device_name']}), "
                     f"{record['model']['parameters']:,} parameters", record["deviations"])
            super().run_started(record)

    reporter = Eval(console.level, console.echo)
    record, path = guarded(console, run_eval, spec, results_dir, submission=submission,
                           checks=checks, extra=extra, reporter=reporter)
    summarise(record, path, console)
    return record, path


def announce(console: ConsoleReporter, cfg: dict[str, Any], name: str, sha256: str, how: str,
             deviations: list[str]) -> None:
    """The first lines of a run, trusted or not: what runs where (``cfg``: a record's config), and
    what makes it not comparable."""
    from harness import __version__

    console.info(f"harness {__version__}: {name} (sha256 {sha256[:12]}) in {cfg['arch']} on "
                 f"{cfg['dataset']}, seed {cfg['seed']}, {plural(cfg['epochs'], 'epoch')}, {how}")
    for d in deviations:
        console.info(f"note: not comparable with the reference: {d}", err=True)


def summarise(record: dict[str, Any], path: Path, console: ConsoleReporter) -> None:
    """The last lines of a run, trusted or not: its score, time and speed, dynamics, record."""
    if record["best_acc"] is not None:
        speed = record.get("train_images_per_s")
        console.info(f"best test accuracy {record['best_acc']:.2f}% at epoch {record['best_epoch']}, "
                     f"final {record['final_acc']:.2f}%, {record.get('wall_s') or 0:.0f}s"
                     + (f", {speed:.0f} train images/s" if speed else ""))
    dyn, inference = record.get("dynamics") or {}, record.get("inference")
    if (dyn.get("epochs_to_reach") or {}).get("95%") is not None:
        gap = dyn.get("generalisation_gap")
        console.info(f"dynamics: 95% of the best by epoch {dyn['epochs_to_reach']['95%']}, "
                     f"{dyn['loss_rises']} test-loss rise(s) over 5%"
                     + (f", generalisation gap {gap:.2f}" if gap is not None else "")
                     + (f"; inference {inference['median_ms']:.1f} ms per batch of "
                        f"{inference['batch_size']}" if inference else ""))
    if record["status"] == "failed" and (record.get("failure") or {}).get("traceback"):
        console.detail(record["failure"]["traceback"])
    console.info(f"record: {path}")


def preflight(console: ConsoleReporter, submission: str, timeout: float, track: str = "cnn",
              params: dict[str, Any] | None = None) -> tuple[Submission, Report]:
    """Load the file and run the pre-flight checks on ``track``'s layout, the layer built with
    ``params``; exit with one line on a fatal failure."""
    from harness.vetting.check import WARN
    from harness.vetting.check import preflight as run_preflight
    from harness.vetting.submission import load

    loaded = guarded(console, load, submission)
    report = guarded(console, run_preflight, loaded, timeout, submission, (track,), params)
    for row in report.rows:
        if row.status == WARN:
            console.warn(row.detail)
    return loaded, report


@click.command("eval", context_settings=CONTEXT)
@click.argument("submission")
@click.option("--arch", required=True, type=click.Choice(list(ARCHITECTURES)), help="Architecture.")
@click.option("--dataset", required=True, type=click.Choice(DATASET_CHOICES, case_sensitive=False),
              help="Dataset (digits is bundled and needs no download).")
@click.option("--seed", default=42, show_default=True, type=int,
              help="Seeds python, numpy and torch; the data order and augmentation derive from it.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Training epochs. Default: the track's recipe (cnn: 200; other: not comparable).")
@click.option("--batch-size", type=click.IntRange(min=2),
              help="Training batch size. Default: the track's recipe (cnn: 128).")
@click.option("--lr", type=click.FloatRange(min=0),
              help="Learning rate. Default: the track's recipe (cnn: SGD 0.1; changing it makes "
                   "the run not comparable).")
@click.option("--momentum", type=click.FloatRange(0, 1),
              help="SGD momentum. Default: the track's recipe (cnn: 0.9).")
@click.option("--weight-decay", type=click.FloatRange(min=0),
              help="Weight decay. Default: the track's recipe (cnn: 5e-4). `harness list "
                   "--track T` shows each track's recipe.")
@click.option("--warmup-epochs", type=click.IntRange(min=0),
              help="Warm-up epochs of a warmup_cosine recipe (transformer: 10; rnn: 1); fewer "
                   "than --epochs.")
@click.option("--limit-train", type=click.IntRange(min=2), default=None,
              help="Use only the first N training images (smoke runs; recorded as not comparable).")
@click.option("--limit-test", type=click.IntRange(min=1), default=None,
              help="Use only the first N test images (smoke runs; recorded as not comparable).")
@click.option("--allow-hidden", is_flag=True,
              help="Allow a setting that is hidden in a suite (do not tune on it).")
@param_option
@json_option("Print the run record as JSON (nothing else on standard output).")
@results_option()
@execution_options(untrusted_default=False)
@output_options
@gathered(EvalSetting, "setting")
@gathered(RecipeOverrides, "overrides")
def eval_cmd(submission: str, setting: EvalSetting, overrides: RecipeOverrides, as_json: bool,
             results_dir: str, execution: Execution, console: ConsoleReporter) -> None:
    """Train SUBMISSION's CustomNorm in ARCH on DATASET under the reference protocol (a CNN), or
    under the recipe of ARCH's track (mlp, rnn, transformer: docs/tracks.md).

    SUBMISSION is a .py file defining CustomNorm(num_features), or a baseline's name (see
    `harness list`). The fatal checks of `harness check` run first; a layer that fails one is not
    trained. Prints the reference's TRAIN_METRICS lines and a final `TEST_METRICS: test_acc=BEST`,
    and writes one JSON run record.

    Trusted by default: the run executes in this process (--run-timeout and --memory-limit do not
    apply). With --untrusted it runs as `harness submit` runs a file: this process never imports
    it; it trains in a sandbox without the test set, its test logits come from another without
    labels, and this process scores them.

    \b
    Examples:
      harness eval custom_norm.py --arch resnet20 --dataset digits --epochs 15
      harness eval dyt --arch transformer4 --dataset digits_rows --epochs 5 --warmup-epochs 1
    """
    from harness.protocol.spec import RunSpec
    from harness.protocol.suites import hidden_in
    from harness.store.results import ResultsStore

    console = for_json(console, as_json)
    arch, dataset = setting.arch, setting.dataset.lower()
    mismatch = compatibility_error(arch, resolve_dataset_name(dataset))
    if mismatch:
        fail(mismatch, EXIT_USAGE)
    hidden = hidden_in(arch, dataset)
    if hidden and not setting.allow_hidden:
        fail(f"{arch} on {dataset} is a hidden setting of suite {', '.join(hidden)}: it is evaluated "
             "only for final submissions, so that nobody tunes on it. Pass --allow-hidden if you "
             "really mean to run it.", EXIT_USAGE)
    recipe = recipe_for(arch, overrides, console)
    spec = execution.apply(RunSpec(submission=submission, arch=arch, dataset=dataset,
                                   seed=setting.seed, recipe=recipe, limit_train=setting.limit_train,
                                   limit_test=setting.limit_test, precision=execution.precision,
                                   params=setting.params))
    if execution.isolation.untrusted:
        record, path = guarded(console, eval_untrusted, spec, results_dir, execution, console)
    else:
        from harness.vetting.vet import scan_row

        vetting = execution.vetting
        loaded, report = preflight(console, submission, vetting.check_timeout, track_of(arch),
                                   setting.params)
        spec = spec.with_(submission=str(loaded.path))
        row, scan = guarded(console, scan_row, loaded.path, submission, vetting)
        record, path = execute(spec, results_dir, console, submission=loaded,
                               checks=[row, *report.to_json()["checks"]], extra={"scan": scan})
        ResultsStore(results_dir).index(record)
    from harness.store.derived import FLAGS

    for flag in record.get("flags", []):
        console.warn(f"flag: {flag}: {FLAGS.get(flag, '')}")
    if as_json:
        click.echo(json.dumps(finite(record), indent=2))
    if record["status"] == "failed":
        fail(f"run failed: {record['failure']['message']} (record: {path})")
    if record["best_acc"] is not None and not as_json:
        click.echo(f"TEST_METRICS: test_acc={record['best_acc']:.2f}")
    if record["status"] == "diverged":
        fail(f"run diverged: {record['failure']['message']}; best accuracy before it is kept",
              EXIT_DIVERGED)


def recipe_for(arch: str, overrides: RecipeOverrides, console: ConsoleReporter) -> Recipe:
    """The recipe of ``arch``'s track with the fields the command line gave; exit 2 when they do
    not make a recipe. A short run keeps the recipe's shape: its warm-up is scaled as its epochs
    are, unless --warmup-epochs says otherwise."""
    track, base = track_of(arch), TRACK_RECIPES[track_of(arch)]
    given = asdict(overrides)
    epochs, warmup_epochs = given["epochs"], given["warmup_epochs"]
    if warmup_epochs is not None and base.schedule != "warmup_cosine":
        fail(f"--warmup-epochs applies to a warm-up schedule; the {track} track's recipe is "
             f"{base.schedule}, without warm-up", EXIT_USAGE)
    if warmup_epochs is None and epochs is not None and 0 < base.warmup_epochs and epochs <= base.warmup_epochs:
        given = {**given, "warmup_epochs": round(epochs * base.warmup_epochs / base.epochs)}
        console.info(f"warm-up: {plural(given['warmup_epochs'], 'epoch')} (the recipe's "
                     f"{base.warmup_epochs} of {base.epochs}, scaled to {epochs}); --warmup-epochs "
                     "sets it")
    try:
        return replace(base, **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        fail(f"the {track} track's recipe with these options: {exc}"
             + (" (give --warmup-epochs fewer than --epochs)" if "warmup" in str(exc) else ""),
             EXIT_USAGE)


def eval_untrusted(spec: RunSpec, results_dir: str, execution: Execution,
                   console: ConsoleReporter) -> tuple[dict[str, Any], Path]:
    """One run of an untrusted file, vetted and run split in sandboxes (harness.execution.untrusted); the
    record is written here, from this process's own scoring."""
    from harness.execution.local import run_in_worker
    from harness.execution.sweep import vet_entry
    from harness.execution.task import Task
    from harness.store.results import ResultsStore

    store = ResultsStore(results_dir)
    vetted = vet_entry(store, spec.submission, execution, (track_of(spec.arch),),
                       (spec.layer_params,))
    spec = spec.with_(submission=str(vetted.copy), sha256=vetted.sha256)
    task = Task(spec, f"{vetted.path.stem} {spec.arch}-{spec.dataset} seed {spec.seed}",
                {"submission_source": str(vetted.path), "scan": vetted.scan},
                vetted.checks_for(spec.layer_params))
    from harness.engine.runner import config_fields, deviations

    dataset = resolve_dataset_name(spec.dataset)
    announce(console, config_fields(spec, dataset), vetted.path.stem, vetted.sha256,
             "sandboxed (untrusted: trained apart from the test set, scored here)",
             deviations(spec, DATASETS[dataset]))
    import torch

    # The threads a trusted eval would train with here, so that both give the same numbers.
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads()), "MKL_NUM_THREADS": str(torch.get_num_threads())}
    record = run_in_worker(task, store, threads, store.root / "logs", 0, execution.isolation,
                           echo=console.info)
    if record is None:  # Ctrl-C stopped it: its checkpoint is kept, the same command resumes it
        raise KeyboardInterrupt
    path = store.runs_dir / f"{record['run_id']}.json"
    summarise(record, path, console)
    return record, path


_STATUS_COLOURS = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "bright_black"}


@click.command("check", context_settings=CONTEXT)
@click.argument("submission")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds each check may take before it counts as hung (0: no limit).")
@click.option("--track", "tracks", multiple=True, type=click.Choice(list(TRACKS) + ["all"]),
              help="Check on this track's layout (repeatable; all: every track). Default: the "
                   "tracks the file declares in TRACKS (a file without it: cnn).")
@param_option
@output_options
def check_cmd(submission: str, as_json: bool, timeout: float, tracks: tuple[str, ...],
              params: dict, console: ConsoleReporter) -> None:
    """Vet SUBMISSION's CustomNorm in seconds: one row per check, pass / warn / fail.

    SUBMISSION is a .py file or a baseline's name. Each track feeds the layer its own layout
    ([B, C, H, W] in a CNN, [B, C] in an MLP, [B, C, T] in an RNN or a Transformer); the checks
    run on each track asked for and the report says which tracks the layer fits. Exit 0 when
    nothing fails, 1 otherwise. Warnings (e.g. batch-dependent at evaluation) do not fail; they
    are what a reader of a result needs to know.
    """
    import json as json_mod

    from harness.vetting.check import run_checks

    chosen = tuple(t for t in TRACKS if "all" in tracks or t in tracks) or None
    report = guarded(console, run_checks, submission, timeout=timeout, tracks=chosen, params=params)
    if as_json:
        click.echo(json_mod.dumps({**report.to_json(), "params": params}, indent=2))
    else:
        given = f"  with {params_label(params)}" if params else ""
        click.echo(f"{report.submission}{given}"
                   + (f"  (sha256 {report.sha256[:12]})" if report.sha256 else ""))
        width = max(len(r.name) for r in report.rows)
        shown = None
        for r in report.rows:
            if r.track and r.track != shown:
                shown = r.track
                click.echo(f" {r.track} track, layout {TRACKS[r.track].layout}:")
            status = click.style(f"{r.status.upper():<4}", fg=_STATUS_COLOURS[r.status], bold=True)
            click.echo(f"  {status}  {r.name:<{width}}  {r.detail}")
        counts = {s: sum(r.status == s for r in report.rows) for s in _STATUS_COLOURS}
        click.echo(f"{counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed"
                   + (f", {counts['skip']} skipped" if counts["skip"] else ""))
        fits = report.fits()
        if fits:
            click.echo("fits: " + ", ".join(f"{t} {'yes' if ok else 'no'}" for t, ok in fits.items()))
    sys.exit(0 if report.ok else EXIT_FAILED)
