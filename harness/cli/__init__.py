"""The ``harness`` command line.

Exit codes: 0 success; 1 failure (unusable submission, missing data, a run that failed);
2 usage error; 3 the run diverged (its record is written); 130 interrupted.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections import Counter
from typing import Any

import click

from harness import __version__
from harness.protocol.data import DATASET_ALIASES, DATASETS
from harness.protocol.models import ARCHS
from harness.reporting import Progress
from harness.protocol.recipe import PROTOCOL_RECIPE, Recipe

EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _guarded(verbose: bool, fn, *args, **kwargs):
    """Run ``fn``; turn every error into one line (or a traceback with --verbose) and an exit code."""
    from harness.protocol.spec import RunError
    from harness.store.results import EntryTaken
    from harness.vetting.submission import SubmissionError
    from harness.protocol.suites import SuiteError

    try:
        return fn(*args, **kwargs)
    except (SuiteError, EntryTaken) as exc:
        _fail(str(exc), EXIT_USAGE)
    except (SubmissionError, RunError) as exc:
        if verbose:
            traceback.print_exc()
        _fail(str(exc))
    except KeyboardInterrupt:
        from harness.execution.watch import kill_workers

        kill_workers()  # in sessions of their own, they did not get the Ctrl-C
        _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug in the harness still ends in one line
        if verbose:
            traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)")


def _execute(config, results_dir, *, submission=None, checks=None, extra=None, verbose=False):
    """One run with a progress bar and the reference's log lines; returns (record, path)."""
    from harness.engine.runner import run_eval

    progress: dict[str, Any] = {}

    def on_start(record: dict[str, Any]) -> None:
        sub, cfg = record["submission"], record["config"]
        who = record.get("entry") or sub["name"]
        click.echo(f"harness {__version__}: {who} (sha256 {sub['sha256'][:12]}) in "
                   f"{cfg['arch']} on {cfg['dataset']}, seed {cfg['seed']}, {cfg['epochs']} epochs, "
                   f"{record['environment']['device']} ({record['environment']['device_name']}), "
                   f"{record['model']['parameters']:,} parameters")
        for d in record["deviations"]:
            click.echo(f"note: not comparable with the reference: {d}", err=True)
        n = record["data"]["train_size"]
        progress["bar"] = Progress(cfg["epochs"], -(-n // cfg["batch_size"]))

    def run():
        try:
            return run_eval(config, results_dir, submission=submission, checks=checks, extra=extra,
                            on_start=on_start, on_epoch=lambda e: progress["bar"].epoch(e),
                            on_step=lambda: progress["bar"].step())
        finally:
            if "bar" in progress:
                progress["bar"].close()

    record, path = _guarded(verbose, run)
    if record["best_acc"] is not None:
        click.echo(f"best test accuracy {record['best_acc']:.2f}% at epoch {record['best_epoch']}, "
                   f"final {record['final_acc']:.2f}%, {record['wall_s']:.0f}s, "
                   f"{record['train_images_per_s'] or 0:.0f} train images/s")
    dyn, inference = record.get("dynamics") or {}, record.get("inference")
    if (dyn.get("epochs_to_reach") or {}).get("95%") is not None:
        gap = dyn.get("generalisation_gap")
        click.echo(f"dynamics: 95% of the best by epoch {dyn['epochs_to_reach']['95%']}, "
                   f"{dyn['loss_rises']} test-loss rise(s) over 5%"
                   + (f", generalisation gap {gap:.2f}" if gap is not None else "")
                   + (f"; inference {inference['median_ms']:.1f} ms per batch of "
                      f"{inference['batch_size']}" if inference else ""))
    if record["status"] == "failed" and verbose and record["failure"].get("traceback"):
        click.echo(record["failure"]["traceback"], err=True)
    click.echo(f"record: {path}")
    return record, path


def _preflight(verbose: bool, submission: str, timeout: float):
    """Load the file and run the pre-flight checks; exit with one line on a fatal failure."""
    from harness.vetting.check import WARN, preflight
    from harness.vetting.submission import load

    loaded = _guarded(verbose, load, submission)
    report = _guarded(verbose, preflight, loaded, timeout, submission)
    for row in report.rows:
        if row.status == WARN:
            click.echo(f"warning: {row.detail}", err=True)
    return loaded, report


# Options shared by every command that runs training.
def _run_options(fn):
    options = [
        click.option("--results", "--out", "results_dir", default="results", show_default=True,
                     type=click.Path(file_okay=False, path_type=str),
                     help="Results folder: records go to RESULTS/runs/ (see docs/run-record.md)."),
        click.option("--data-root", type=click.Path(file_okay=False, path_type=str), default=None,
                     help="Dataset folder. Default: $HARNESS_DATA, else ~/.cache/harness/data."),
        click.option("--download/--no-download", default=True, show_default=True,
                     help="Download missing datasets when the network allows."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (a CUDA GPU when present), cpu, cuda or cuda:N."),
        click.option("--check-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0),
                     help="Seconds each pre-flight check may take (0: no limit)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                     help="fp32 is the protocol's; bf16 autocasts the forward pass (recorded, not "
                          "comparable, never mixed with fp32 on the leaderboard)."),
        click.option("--channels-last/--no-channels-last", default=None,
                     help="NHWC tensors. Default: on for CUDA, off for CPU. Like every speed option, "
                          "checked against the plain model on one batch first (see harness/fast.py)."),
        click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=None,
                     help="Let cuDNN time its convolution algorithms. Default: on for CUDA."),
        click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the model; falls back to eager (with a warning) when the "
                          "compiled step does not match the eager one."),
        click.option("--compile-backend", default="inductor", show_default=True,
                     help="torch.compile backend (aot_eager: no speed-up, for debugging)."),
        click.option("--cuda-graphs", is_flag=True,
                     help="Capture the step in CUDA graphs (torch.compile mode reduce-overhead; CUDA "
                          "only; implies --compile)."),
        click.option("--resume/--no-resume", default=True, show_default=True,
                     help="Continue a run from its last end-of-epoch checkpoint when an earlier "
                          "attempt was killed (RESULTS/checkpoints/); --no-resume starts over."),
        click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors."),
    ]

    @functools.wraps(fn)
    def with_speed(*args, channels_last, cudnn_benchmark, compile_, compile_backend, cuda_graphs,
                   **kwargs):
        from harness.protocol.spec import SpeedOptions

        speed = SpeedOptions(channels_last=channels_last, cudnn_benchmark=cudnn_benchmark,
                             compile=compile_, compile_backend=compile_backend,
                             cuda_graphs=cuda_graphs)
        return fn(*args, speed=speed, **kwargs)

    for option in reversed(options):
        with_speed = option(with_speed)
    return with_speed


def _isolation_options(untrusted_default: bool):
    """Options of the commands that run suites: limits of each run's worker process, the sandbox."""
    def decorate(fn):
        options = [
            click.option("--run-timeout", default=24 * 3600.0, show_default=True,
                         type=click.FloatRange(min=0),
                         help="Wall-clock seconds a run may take before it is killed and recorded as "
                              "a timeout (0: no limit)."),
            click.option("--memory-limit", default=None, type=click.FloatRange(min=0.1),
                         metavar="GIB",
                         help="Resident memory (GiB) a run's processes may use before they are killed "
                              "and recorded as out-of-memory. Default: 80% of this machine's memory "
                              "shared out over the parallel runs."),
            click.option("--disk-quota", default=4.0, show_default=True,
                         type=click.FloatRange(min=0.01), metavar="GIB",
                         help="Disk space (GiB) an untrusted run's checkpoint and hand-over folder "
                              "may take before the run is killed and recorded as resource-limit."),
            click.option("--untrusted/--trusted", default=untrusted_default, show_default=True,
                         help="Untrusted: this process never imports the file. Its checks run in a "
                              "sandbox (bubblewrap: no network, no results folder, no data, a "
                              "read-only minimal file system, limits, a syscall filter); its "
                              "training runs in one without the test set, and its test logits come "
                              "from another without labels; the harness alone computes the score. "
                              "See docs/security.md."),
            click.option("--scan-policy", type=click.Choice(["report", "refuse"]),
                         default="report", show_default=True,
                         help="report: the static scan's findings are recorded and shown (the "
                              "sandbox is the boundary). refuse: a finding in code the harness "
                              "runs refuses the file (unless --trust-code)."),
            click.option("--trust-code", is_flag=True,
                         help="With --scan-policy refuse: run a file despite its findings (recorded, "
                              "and shown on its leaderboard page); only for code you have read."),
            click.option("--unsafe-no-namespaces", is_flag=True,
                         help="Run untrusted code where bubblewrap cannot start: without the "
                              "sandbox's file-system and network isolation (limits and the "
                              "filter still apply; the record says so)."),
        ]

        @functools.wraps(fn)
        def with_isolation(*args, run_timeout, memory_limit, disk_quota, untrusted, scan_policy,
                           trust_code, unsafe_no_namespaces, check_timeout, **kwargs):
            from harness.execution.local import Isolation

            isolation = Isolation(timeout_s=run_timeout or None,
                                  memory_bytes=int(memory_limit * 2**30) if memory_limit else None,
                                  untrusted=untrusted, namespaces=not unsafe_no_namespaces,
                                  check_timeout=check_timeout,
                                  disk_quota_bytes=int(disk_quota * 2**30))
            from harness.execution.sweep import Vetting

            return fn(*args, isolation=isolation, vetting=Vetting(scan_policy, trust_code),
                      check_timeout=check_timeout, **kwargs)

        for option in reversed(options):
            with_isolation = option(with_isolation)
        return with_isolation
    return decorate


def _executor_options(fn):
    """Where the runs of a sweep execute: here (default) or as a Slurm job array (submitit)."""
    options = [
        click.option("--executor", type=click.Choice(["local", "slurm", "submitit-local"]),
                     default="local", show_default=True,
                     help="local: worker processes on this machine (--jobs). slurm: one job array "
                          "for all the command's runs, through submitit (--slurm-*). submitit-local: the slurm path "
                          "with submitit's local processes, to try a cluster set-up on one machine."),
        click.option("--slurm-config", type=click.Path(dir_okay=False, exists=True, path_type=str),
                     default=None,
                     help="TOML file of Slurm options (partition, time_min, gpus, cpus, mem_gb, "
                          "array_parallelism, account, qos, constraint); --slurm-* options win."),
        click.option("--slurm-partition", default=None, help="Slurm partition."),
        click.option("--slurm-time", "slurm_time_min", type=click.IntRange(min=1), default=None,
                     metavar="MIN", help="Time limit of each run's job, minutes (default 1440)."),
        click.option("--slurm-gpus", type=click.IntRange(min=0), default=None,
                     help="GPUs per run (default 1)."),
        click.option("--slurm-cpus", type=click.IntRange(min=1), default=None,
                     help="CPUs per run (default 8)."),
        click.option("--slurm-mem", "slurm_mem_gb", type=click.FloatRange(min=0.1), default=None,
                     metavar="GB", help="Memory per run, GB (default 32)."),
        click.option("--slurm-array-parallelism", type=click.IntRange(min=1), default=None,
                     help="At most this many runs of an array at once (default 64)."),
        click.option("--detach", is_flag=True,
                     help="With a cluster executor: return once the array is submitted; follow it "
                          "with `harness status`; rerun the same command to finish what failed."),
    ]

    @functools.wraps(fn)
    def with_executor(*args, executor, slurm_config, slurm_partition, slurm_time_min, slurm_gpus,
                      slurm_cpus, slurm_mem_gb, slurm_array_parallelism, detach, isolation,
                      **kwargs):
        chosen = None
        if executor != "local":
            from harness.execution.slurm import ClusterError, SlurmExecutor, SlurmOptions

            try:
                options = SlurmOptions.from_sources(slurm_config, {
                    "partition": slurm_partition, "time_min": slurm_time_min, "gpus": slurm_gpus,
                    "cpus": slurm_cpus, "mem_gb": slurm_mem_gb,
                    "array_parallelism": slurm_array_parallelism})
                chosen = SlurmExecutor(options, isolation, backend=executor)
            except ClusterError as exc:
                _fail(str(exc), EXIT_USAGE)
        elif detach:
            _fail("--detach needs a cluster executor (--executor slurm)", EXIT_USAGE)
        return fn(*args, executor=chosen, detach=detach, isolation=isolation, **kwargs)

    for option in reversed(options):
        with_executor = option(with_executor)
    return with_executor


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="harness")
def main() -> None:
    """Benchmark drop-in normalization layers (CustomNorm) under one fixed training protocol.

    A submission is one Python file defining ``CustomNorm(num_features)``, a drop-in for
    ``nn.BatchNorm2d``. Start with `harness check FILE`, then `harness eval` (one run) or
    `harness submit` (a whole suite), then `harness leaderboard build`.
    """


_DATASET_CHOICES = list(DATASETS) + list(DATASET_ALIASES)


@main.command("eval")
@click.argument("submission")
@click.option("--arch", required=True, type=click.Choice(list(ARCHS)), help="Architecture.")
@click.option("--dataset", required=True, type=click.Choice(_DATASET_CHOICES, case_sensitive=False),
              help="Dataset (digits is bundled and needs no download).")
@click.option("--seed", default=42, show_default=True, type=int,
              help="Seeds python, numpy and torch; the data order and augmentation derive from it.")
@click.option("--epochs", default=PROTOCOL_RECIPE.epochs, show_default=True,
              type=click.IntRange(min=1), help="Training epochs (other than 200: not comparable).")
@click.option("--batch-size", default=PROTOCOL_RECIPE.batch_size, show_default=True,
              type=click.IntRange(min=2), help="Training batch size (other than 128: not comparable).")
@click.option("--lr", default=PROTOCOL_RECIPE.lr, show_default=True, type=click.FloatRange(min=0),
              help="SGD learning rate (changing it makes the run not comparable).")
@click.option("--momentum", default=PROTOCOL_RECIPE.momentum, show_default=True,
              type=click.FloatRange(0, 1), help="SGD momentum (changing it: not comparable).")
@click.option("--weight-decay", default=PROTOCOL_RECIPE.weight_decay, show_default=True,
              type=click.FloatRange(min=0), help="SGD weight decay (changing it: not comparable).")
@click.option("--limit-train", type=click.IntRange(min=2), default=None,
              help="Use only the first N training images (smoke runs; recorded as not comparable).")
@click.option("--limit-test", type=click.IntRange(min=1), default=None,
              help="Use only the first N test images (smoke runs; recorded as not comparable).")
@click.option("--allow-hidden", is_flag=True,
              help="Allow a setting that is hidden in a suite (do not tune on it).")
@_run_options
@_isolation_options(untrusted_default=False)
def eval_cmd(submission: str, arch: str, dataset: str, seed: int, epochs: int, batch_size: int,
             lr: float, momentum: float, weight_decay: float, limit_train: int | None,
             limit_test: int | None, allow_hidden: bool, results_dir: str, data_root: str | None,
             download: bool, device: str, check_timeout: float, precision: str, speed, resume: bool,
             isolation, vetting, verbose: bool) -> None:
    """Train SUBMISSION's CustomNorm in ARCH on DATASET under the reference protocol.

    SUBMISSION is a .py file defining CustomNorm(num_features), or a baseline's name (see
    `harness list`). The fatal checks of `harness check` run first; a layer that fails one is not
    trained. Prints the reference's TRAIN_METRICS lines and a final `TEST_METRICS: test_acc=BEST`,
    and writes one JSON run record.

    Trusted by default: the run executes in this process (--run-timeout and --memory-limit do not
    apply). With --untrusted it runs as `harness submit` runs a file: this process never imports
    it; it trains in a sandbox without the test set, its test logits come from another without
    labels, and this process scores them.

    \b
    Example:
      harness eval custom_norm.py --arch resnet20 --dataset digits --epochs 15
    """
    from harness.protocol.spec import RunSpec
    from harness.store.results import ResultsStore
    from harness.protocol.suites import hidden_in

    hidden = hidden_in(arch, dataset)
    if hidden and not allow_hidden:
        _fail(f"{arch} on {dataset} is a hidden setting of suite {', '.join(hidden)}: it is evaluated "
              "only for final submissions, so that nobody tunes on it. Pass --allow-hidden if you "
              "really mean to run it.")
    recipe = Recipe(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                    weight_decay=weight_decay)
    config = RunSpec(submission=submission, arch=arch, dataset=dataset.lower(), seed=seed,
                       recipe=recipe, limit_train=limit_train, limit_test=limit_test,
                       device=device, data_root=data_root, download=download, precision=precision,
                       speed=speed, resume=resume)
    if isolation.untrusted:
        record, path = _guarded(verbose, _eval_untrusted, config, results_dir, isolation, vetting,
                                check_timeout)
    else:
        from harness.execution.sweep import scan_row

        loaded, preflight = _preflight(verbose, submission, check_timeout)
        config = config.with_(submission=str(loaded.path))
        row, scan = _guarded(verbose, scan_row, loaded.path, submission, vetting.scan_policy,
                             vetting.trust_code)
        record, path = _execute(config, results_dir, submission=loaded,
                                checks=[row, *preflight.to_json()["checks"]],
                                extra={"scan": scan}, verbose=verbose)
        ResultsStore(results_dir).index(record)
    for flag, meaning in (("chance", "its final test accuracy is at chance level (within 3 "
                                     "binomial standard errors): it learnt nothing the test set "
                                     "can show"),
                          ("batch-dependent", "its test logits change with the test batching "
                                              "(harness.protocol.scoring): its accuracy depends on how the "
                                              "test set is batched")):
        if flag in record.get("flags", []):
            click.echo(f"flag: {flag}: {meaning}", err=True)
    if record["status"] == "failed":
        _fail(f"run failed: {record['failure']['message']} (record: {path})")
    if record["best_acc"] is not None:
        click.echo(f"TEST_METRICS: test_acc={record['best_acc']:.2f}")
    if record["status"] == "diverged":
        _fail(f"run diverged: {record['failure']['message']}; best accuracy before it is kept",
              EXIT_DIVERGED)


def _eval_untrusted(config, results_dir: str, isolation, vetting, check_timeout: float):
    """One run of an untrusted file, vetted and run split in sandboxes (harness.execution.split); the
    record is written here, from this process's own scoring."""
    from harness.execution.local import Task, run_in_worker
    from harness.store.results import ResultsStore
    from harness.execution.sweep import vet

    store = ResultsStore(results_dir)
    vetted = vet(store, config.submission, isolation, vetting.trust_code, vetting.scan_policy,
                 check_timeout)
    config = config.with_(submission=str(vetted.copy), sha256=vetted.sha256)
    task = Task(config, f"{vetted.path.stem} {config.arch}-{config.dataset} seed {config.seed}",
                {"submission_source": str(vetted.path), "scan": vetted.scan},
                vetted.checks)
    record = run_in_worker(task, store, {}, store.root / "logs", 0, isolation,
                           echo=lambda line: click.echo(line))
    path = store.runs_dir / f"{record['run_id']}.json"
    if record["best_acc"] is not None:
        click.echo(f"best test accuracy {record['best_acc']:.2f}% at epoch {record['best_epoch']}, "
                   f"final {record['final_acc']:.2f}%")
    click.echo(f"record: {path}")
    return record, path


def _sweep_and_report(store, entries: list[dict], rerun: bool, device: str, data_root,
                      download: bool, check_timeout: float, precision: str, speed, jobs: int,
                      resume: bool, isolation, vetting, verbose: bool, executor=None,
                      detach: bool = False, batch_name: str = "harness", replace: bool = False):
    """Prepare every entry (each a dict of source, name, kind, suite, final and optionally
    register and record_extra), run all their runs as one batch (one pool of workers, or one job
    array), and print a summary per entry. Returns the SweepResults in entry order."""
    from harness.execution.sweep import prepare, run_prepared

    def hooks(name: str) -> dict:
        def on_run(run, i, n):
            hidden = " (hidden)" if run.setting.hidden else ""
            if jobs == 1 and executor is None:
                click.echo(f"\n[{i}/{n}] {name}: {run.setting.key}{hidden}, seed {run.seed}")
            else:  # a cluster's array: queued, not yet started
                click.echo(f"[{i}/{n}] {name}: {run.setting.key}{hidden}, seed {run.seed}: "
                           + ("started" if executor is None else "in the array"))

        def on_done(run, record):
            best = record.get("best_acc")
            failure = record.get("failure")
            click.echo(f"  {name}: {run.setting.key}, seed {run.seed}: {record['status']}"
                       + (f", best {best:.2f}%" if best is not None else "")
                       + (f" [{failure['category']}] {failure['message']}" if failure else ""))

        def on_skip(run, i, n):
            why = "already done" if run.done else "running elsewhere (harness status)"
            click.echo(f"[{i}/{n}] {name}: {run.setting.key}, seed {run.seed}: {why}, skipped")

        return {"on_run": on_run, "on_done": on_done, "on_skip": on_skip}

    prepared = []
    for entry in entries:
        if len(entries) > 1:
            click.echo(f"== {entry['name']} ({entry['source']})")
        prepared.append(_guarded(
            verbose, prepare, store, entry["source"], entry["name"], entry["kind"], entry["suite"],
            entry["final"], register=entry.get("register", True),
            record_extra=entry.get("record_extra"), rerun=rerun, device=device,
            data_root=data_root, download=download, check_timeout=check_timeout,
            precision=precision, speed=speed, resume=resume, isolation=isolation,
            trust_code=vetting.trust_code, scan_policy=vetting.scan_policy,
            replace=entry.get("replace", replace), **hooks(entry["name"])))
    results = _guarded(verbose, run_prepared, prepared, store, jobs=jobs, device=device,
                       isolation=isolation, executor=executor, detach=detach, name=batch_name,
                       echo=lambda line: click.echo(f"    {line}"))
    submitted = next((r.submitted for r in results if r.submitted is not None), None)
    if submitted is not None:
        click.echo(f"\n{', '.join(r.entry for r in results if r.submitted)}: submitted "
                   f"{len(submitted.job_ids)} run(s) (jobs {', '.join(submitted.job_ids[:3])}"
                   f"{', ...' if len(submitted.job_ids) > 3 else ''}); logs in "
                   f"{submitted.folder}; follow with `harness status --results {store.root}`")
    for result in results:
        if result.submitted is not None:
            continue
        name = result.entry
        diverged = [r for r in result.ran if r["status"] == "diverged"]
        click.echo(f"\n{name}: {len(result.ran)} run(s), {len(result.skipped)} skipped (already "
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


def _suite_or_fail(name: str):
    from harness.protocol.suites import SuiteError, load_suite

    try:
        return load_suite(name)
    except SuiteError as exc:
        _fail(str(exc))


@main.command("submit")
@click.argument("submission")
@click.option("--name", required=True, help="The entry's name on the leaderboard.")
@click.option("--suite", "suite_name", default="default", show_default=True,
              help="Suite to run (see `harness list`).")
@click.option("--final", is_flag=True,
              help="A final submission: also run the suite's hidden settings.")
@click.option("--replace", is_flag=True,
              help="The entry NAME exists with another file: make this file its current version "
                   "(recorded in the entry's history and shown on its page).")
@click.option("--rerun", is_flag=True, help="Run again even the runs that already have a record.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs at once per GPU (or in all on a CPU), each in its own worker process, "
                   "spread over every visible GPU; logs go to RESULTS/logs/.")
@_run_options
@_isolation_options(untrusted_default=True)
@_executor_options
def submit_cmd(submission: str, name: str, suite_name: str, final: bool, replace: bool,
               rerun: bool, jobs: int, results_dir: str, data_root: str | None, download: bool,
               device: str, check_timeout: float, precision: str, speed, resume: bool, isolation,
               vetting, executor, detach: bool, verbose: bool) -> None:
    """Submit SUBMISSION as entry NAME: run every public setting x seed of a suite.

    The file is copied into RESULTS/submissions/ under its sha256 and trained from that copy.
    Runs that already have a completed record (same file, setting, seed, recipe and protocol) are
    skipped, so re-running an interrupted submit continues where it stopped. With --final the
    hidden settings run too.

    A submission is untrusted by default (see --untrusted and docs/security.md): vetted in a
    sandbox, trained in one without the test set, scored by this process from the logits of
    another that holds no labels. Each run is held to a wall-clock timeout, a memory limit and a
    disk quota; a run that fails is recorded with its category (interface, exception, timeout,
    out-of-memory, resource-limit, malformed, diverged, crashed) and never stops the others. An
    entry name belongs to its first file: another file needs --replace. Ends with a summary;
    exit 1 when any run failed, else 3 when any diverged.
    """
    from harness.store.results import ResultsStore, validate_entry_name

    try:
        validate_entry_name(name)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    suite = _suite_or_fail(suite_name)
    entry = {"source": submission, "name": name, "kind": "submission", "suite": suite,
             "final": final}
    [result] = _sweep_and_report(ResultsStore(results_dir), [entry], rerun, device, data_root,
                                 download, check_timeout, precision, speed, jobs, resume,
                                 isolation, vetting, verbose, executor=executor, detach=detach,
                                 batch_name=name, replace=replace)
    if result.failed:
        sys.exit(EXIT_FAILED)
    if any(r["status"] == "diverged" for r in result.ran):
        sys.exit(EXIT_DIVERGED)


@main.group("baselines")
def baselines_group() -> None:
    """Run the baselines, so the leaderboard always has them to compare with."""


@baselines_group.command("run")
@click.option("--suite", "suite_name", default="default", show_default=True, help="Suite to run.")
@click.option("--only", default=None, help="Comma-separated baseline names (default: all).")
@click.option("--rerun", is_flag=True, help="Run again even the runs that already have a record.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs at once per GPU (or in all on a CPU), each in its own worker process, "
                   "spread over every visible GPU; logs go to RESULTS/logs/.")
@_run_options
@_isolation_options(untrusted_default=False)
@_executor_options
def baselines_run_cmd(suite_name: str, only: str | None, rerun: bool, jobs: int, results_dir: str,
                      data_root: str | None, download: bool, device: str, check_timeout: float,
                      precision: str, speed, resume: bool, isolation, vetting,
                      executor, detach: bool, verbose: bool) -> None:
    """Run every baseline on a suite as a final entry (public and hidden settings).

    Each run executes in its own process with a wall-clock timeout and a memory limit. The
    baselines ship with the harness, so they are trusted by default.
    """
    from harness.store.results import ResultsStore
    from harness.vetting.submission import baseline_names

    suite = _suite_or_fail(suite_name)
    names = baseline_names()
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            _fail(f"unknown baseline(s) {', '.join(unknown)}; baselines: {', '.join(names)}", EXIT_USAGE)
        names = wanted
    store = ResultsStore(results_dir)
    # A baseline's file ships with the harness: a newer harness's version replaces the old one.
    entries = [{"source": name, "name": name, "kind": "baseline", "suite": suite, "final": True,
                "replace": True}
               for name in names]
    results = _sweep_and_report(store, entries, rerun, device, data_root, download, check_timeout,
                                precision, speed, jobs, resume, isolation, vetting, verbose,
                                executor=executor, detach=detach, batch_name=f"baselines-{suite.name}")
    failed = sum(len(result.failed) for result in results)
    if failed:
        _fail(f"{failed} baseline run(s) failed")


@main.command("bench")
@click.option("--arch", default="resnet20", show_default=True, type=click.Choice(list(ARCHS)))
@click.option("--dataset", default="cifar10", show_default=True,
              type=click.Choice(_DATASET_CHOICES, case_sensitive=False),
              help="Real files when present under --data-root, else random data of its shape and size.")
@click.option("--norm", "norms", multiple=True,
              help="Measure step time relative to BatchNorm for this norm (a file or baseline name; "
                   "repeatable; 'all' for every baseline) instead of the pipeline comparison.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--steps", default=None, type=click.IntRange(min=1),
              help="Training steps per measurement (default: 30 on CPU, 200 on a GPU).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Interleaved rounds; medians are reported.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(min=0),
              help="DataLoader workers of the reference-style pipeline (the reference uses 4).")
@click.option("--compile", "compiled", is_flag=True,
              help="torch.compile the harness's model and the bound (checked first, as in training); "
                   "with --norm: measure compiled models too.")
@click.option("--packing", type=click.IntRange(min=2), default=None, metavar="N",
              help="Instead: suite throughput of --jobs N against --jobs 1 (2N one-epoch runs of "
                   "--limit-train images each way, BatchNorm, worker processes both ways).")
@click.option("--instruments", "instruments", is_flag=True,
              help="Instead: the cost of the run's instruments (layer probes, eval timing): whole runs "
                   "of --norm (default batch_norm) with them on and off, alternating; needs real "
                   "data (digits, or noise for CIFAR-sized random images).")
@click.option("--split", "split", is_flag=True,
              help="Instead: the cost of scoring in a sandboxed process of its own (how untrusted "
                   "runs are scored) against scoring in the run's own process: whole runs of "
                   "batch_norm both ways at two lengths (--epochs and 3x as many), projected onto "
                   "a protocol run.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="With --instruments: epochs per run; with --split: the shorter run's epochs.")
@click.option("--limit-train", type=click.IntRange(min=128), default=None,
              help="With --packing: training images per run (default 10240); with --instruments: "
                   "the first N training images (default: all); with --split: default 2560.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=str), default=None)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the results, with a description of the machine, to this file.")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
def bench_cmd(arch: str, dataset: str, norms: tuple[str, ...], device: str, steps: int | None,
              rounds: int, workers: int, compiled: bool, packing: int | None, instruments: bool,
              split: bool, epochs: int, limit_train: int | None, data_root: str | None,
              json_out: str | None, verbose: bool) -> None:
    """Measure training images/s: the harness vs the reference-style pipeline vs the bare model.

    In one process, alternating round by round: (a) the harness's epoch, data pipeline included;
    (b) the reference's DataLoader with per-image PIL transforms, 4 workers and `.item()` every
    step; (c) forward + backward + SGD on one resident batch (the upper bound). Prints the ratios
    and a projected 200-epoch wall time. With --norm, the step time of each norm relative to
    BatchNorm instead.
    """
    from harness.bench import run
    from harness.store.record import write_json_atomic
    from harness.engine.device import resolve_device

    dev = _guarded(verbose, resolve_device, device)
    if split:
        from harness.bench import machine, split_overhead
        from harness.store.record import utc_now
        from harness.execution.sandbox import sandbox_unavailable

        if sandbox_unavailable():
            _fail(f"--split needs the sandbox: {sandbox_unavailable()}")
        out = _guarded(verbose, split_overhead, arch, dataset.lower(), device, (epochs, 3 * epochs),
                       rounds, limit_train or 2560, 1000, progress=lambda m: click.echo(m, err=True))
        out.update({"benchmark": "harness bench --split", "date": utc_now(), "arch": arch,
                    "dataset": dataset.lower(), "machine": machine(dev)})
        click.echo(f"{arch} on {dataset}, {out['machine']['description']}: scoring in its own "
                   f"process costs {out['fixed_s']:.1f}s once and {out['per_epoch_s']:.3f}s per epoch "
                   f"(wall-clock slope {out['per_epoch_wall_s']:+.3f}s, scoring time "
                   f"{out['per_epoch_eval_s']:+.3f}s; {100 * out['overhead_at'][str(3 * epochs)]:+.1f}% "
                   f"of a {3 * epochs}-epoch run here); projected onto a protocol run (200 epochs, "
                   f"{out['protocol_run_s'] / 3600:.1f} h at this speed): "
                   f"{100 * out['projected_protocol_overhead']:+.2f}%")
        if json_out:
            write_json_atomic(json_out, out)
            click.echo(f"wrote {json_out}")
        return
    if instruments:
        from harness.bench import instrument_overhead, machine
        from harness.store.record import utc_now

        norm = norms[0] if norms else "batch_norm"
        out = _guarded(verbose, instrument_overhead, arch, dataset.lower(), norm, dev, epochs,
                       rounds, limit_train, data_root, progress=lambda m: click.echo(m, err=True))
        out.update({"benchmark": "harness bench --instruments", "date": utc_now(), "arch": arch,
                    "dataset": dataset.lower(), "rounds": rounds, "machine": machine(dev)})
        click.echo(f"{arch} on {dataset} with {out['norm']}, {out['epochs']} epochs of "
                   f"{out['train_size']} images ({out['steps']} steps), {out['machine']['description']}:"
                   f" instruments on {out['on_median_s']:.1f}s, off {out['off_median_s']:.1f}s, "
                   f"overhead {100 * out['overhead']:+.1f}% (probes alone: "
                   f"{100 * out['probe_fraction_median']:.1f}% of the run)")
        if json_out:
            write_json_atomic(json_out, out)
            click.echo(f"wrote {json_out}")
        return
    if packing:
        from harness.bench import machine, packing as run_packing
        from harness.store.record import utc_now

        out = _guarded(verbose, run_packing, arch, dataset.lower(), device, packing, 2 * packing,
                       limit_train or 10_240, progress=lambda m: click.echo(m, err=True))
        out.update({"benchmark": "harness bench --packing", "date": utc_now(), "arch": arch,
                    "dataset": dataset.lower(), "jobs": packing, "runs": 2 * packing,
                    "limit_train": limit_train or 10_240, "machine": machine(dev)})
        click.echo(f"{arch} on {dataset}, {out['machine']['description']}: --jobs {packing} finishes "
                   f"the runs {out['ratio']:.2f}x as fast as --jobs 1")
        if json_out:
            write_json_atomic(json_out, out)
            click.echo(f"wrote {json_out}")
        return
    steps = steps or (200 if dev.type == "cuda" else 30)
    out = _guarded(verbose, run, arch, dataset.lower(), list(norms), dev, steps, rounds, data_root,
                   compiled, workers, progress=lambda m: click.echo(m, err=True))
    click.echo(f"{arch} on {out['dataset']} ({out['data']} data), {out['device']}: "
               f"{out['machine']['description']}")
    if "norm_costs" in out:
        for name, row in out["norm_costs"].items():
            cells = []
            for mode in ("eager", "compiled"):
                if f"{mode}_ratio" in row:
                    r = row[f"{mode}_ratio"]
                    cells.append(f"{mode} {r:.2f}x" if r is not None
                                 else f"{mode}: {row.get(f'{mode}_error', 'n/a')}")
            click.echo(f"  {name:<28} {'   '.join(cells)}")
    else:
        click.echo(f"  harness   {out['harness_median']:9.1f} img/s\n"
                   f"  reference {out['reference_median']:9.1f} img/s\n"
                   f"  bound     {out['bound_median']:9.1f} img/s\n"
                   f"  harness/reference {out['ratio_harness_over_reference']:.2f}x, "
                   f"harness/bound {out['ratio_harness_over_bound']:.2f}x; projected 200-epoch run "
                   f"{out['projected_200_epoch_s'] / 60:.0f} min\n"
                   f"  harness speed options in effect: channels_last "
                   f"{out['speed']['channels_last']}, cudnn.benchmark {out['speed']['cudnn_benchmark']}, "
                   f"compile {out['speed']['compile']}")
    if json_out:
        write_json_atomic(json_out, out)
        click.echo(f"wrote {json_out}")


@main.group("leaderboard")
def leaderboard_group() -> None:
    """Build the HTML leaderboard from a results folder."""


@leaderboard_group.command("build")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Results folder to read.")
@click.option("--out", "out_dir", default="leaderboard/site", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Folder to write the site to.")
@click.option("--reveal-hidden", is_flag=True,
              help="Show hidden settings' results (of final entries) and rank on all settings.")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
def leaderboard_build_cmd(results_dir: str, out_dir: str, reveal_hidden: bool, verbose: bool) -> None:
    """Write a static site: index.html, a page per entry, leaderboard.csv and leaderboard.json.

    It needs no network and works from file://. Without --reveal-hidden, hidden settings read
    "hidden" and the aggregates use public settings only. A file of the results folder that is
    not a valid record is left out with a warning (and listed on the site), never fatal.
    """
    from pathlib import Path

    from harness.leaderboard.site import build_site

    if not Path(results_dir, "runs").is_dir():
        _fail(f"{results_dir}: no results folder here (expected {results_dir}/runs/); run "
              "`harness submit` or `harness baselines run` first, or pass --results")
    site = _guarded(verbose, build_site, results_dir, out_dir, reveal_hidden)
    for path, why in site.skipped.items():
        click.echo(f"warning: skipped {path}: not a run record ({why})", err=True)
    click.echo(f"leaderboard: {site.index}  (open file://{site.index.resolve()})")


@main.group("study")
def study_group() -> None:
    """Studies: compare layers under one recipe (which, unlike a suite's, may differ from the
    protocol) and report how they train. The file format is in harness/studies.py; examples in
    studies/."""


def _study_or_fail(path: str):
    from harness.protocol.studies import load_study
    from harness.protocol.suites import SuiteError

    try:
        return load_study(path)
    except SuiteError as exc:
        _fail(str(exc), EXIT_USAGE)


@study_group.command("run")
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--only", default=None, help="Comma-separated entry names to run (default: all).")
@click.option("--rerun", is_flag=True, help="Run again even the runs that already have a record.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs at once per GPU (or in all on a CPU), each in its own worker process.")
@click.option("--dry-run", is_flag=True, help="List the runs and whether each is done; run nothing.")
@click.option("--allow-hidden", is_flag=True,
              help="Allow settings that a leaderboard suite keeps hidden (do not tune on them).")
@_run_options
@_isolation_options(untrusted_default=False)
@_executor_options
def study_run_cmd(study_file: str, only: str | None, rerun: bool, jobs: int, dry_run: bool,
                  allow_hidden: bool, results_dir: str, data_root: str | None, download: bool,
                  device: str, check_timeout: float, precision: str, speed, resume: bool,
                  isolation, vetting, executor, detach: bool, verbose: bool) -> None:
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
    from harness.store.results import ResultsStore
    from harness.execution.sweep import sweep_arguments
    from harness.protocol.studies import hidden_settings, select_entries
    from harness.store.status import plan_study

    study = _study_or_fail(study_file)
    hidden = hidden_settings(study)
    if hidden and not allow_hidden:
        _fail(f"{study_file}: hidden setting(s) {'; '.join(hidden)}: they are evaluated only for "
              "final submissions, so that nobody tunes on them. Pass --allow-hidden if you really "
              "mean to run them.", EXIT_USAGE)
    store = ResultsStore(results_dir)
    wanted = [n.strip() for n in only.split(",") if n.strip()] if only else None
    if dry_run:
        planned = _guarded(verbose, plan_study, study, store, precision)
        for run in planned:
            if wanted is None or run.entry in wanted:
                state = "done" if run.done and not rerun else "to run"
                click.echo(f"{run.entry:<28} {run.setting.key:<24} seed {run.seed:<6} {state}")
        todo = sum(1 for r in planned if (not r.done or rerun)
                   and (wanted is None or r.entry in wanted))
        click.echo(f"{todo} run(s) to do of {len(planned)}")
        return
    click.echo(f"study {study.name}: {len(study.entries)} entries x {len(study.settings)} settings x "
               f"{len(study.seeds)} seeds; recipe: "
               + ("; ".join(study.recipe.deviations()) or "the protocol's"))
    entries = _guarded(verbose, select_entries, study, wanted)
    results = _sweep_and_report(store, [sweep_arguments(study, entry) for entry in entries], rerun,
                                device, data_root, download, check_timeout, precision, speed, jobs,
                                resume, isolation, vetting, verbose, executor=executor,
                                detach=detach, batch_name=f"study-{study.name}")
    ran = [r for res in results for r in res.ran]
    failed = [r for r in ran if r["status"] == "failed"]
    diverged = [r for r in ran if r["status"] == "diverged"]
    click.echo(f"\nstudy {study.name}: {len(ran)} run(s), "
               f"{sum(len(res.skipped) for res in results)} already done, {len(failed)} failed, "
               f"{len(diverged)} diverged. Report: harness study report {study_file} "
               f"--results {results_dir} --out DIR")
    if failed:
        sys.exit(EXIT_FAILED)
    if diverged:
        sys.exit(EXIT_DIVERGED)


@study_group.command("report")
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder to write index.html and study.json to.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Results folder to read.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Which runs to report (never mixed).")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
def study_report_cmd(study_file: str, out_dir: str, results_dir: str, precision: str,
                     verbose: bool) -> None:
    """Render STUDY_FILE's report from the results folder: learning curves, best accuracy with
    confidence intervals, convergence, stability, cost, gradient flow, activation statistics and
    a summary of the significant differences (HTML, no JavaScript; plus study.json).

    Runs are found by their key (entry file as it is now, setting, seed, recipe); a missing or
    failed run shows as such, and the report says which cells are incomplete.
    """
    from harness.leaderboard.study_report import build_report

    study = _study_or_fail(study_file)

    def build():
        try:
            return build_report(study, results_dir, out_dir, precision)
        except FileNotFoundError as exc:
            _fail(str(exc))

    index = _guarded(verbose, build)
    click.echo(f"study report: {index}  (open file://{index.resolve()})")


_STATE_COLOURS = {"done": "green", "diverged": "yellow", "running": "cyan",
                  "interrupted": "magenta", "failed": "red", "missing": "bright_black"}


@main.command("status")
@click.option("--suite", "suite_name", default=None,
              help="A suite: every entry submitted to it (default: every suite with entries).")
@click.option("--study", "study_file", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="A study file instead of a suite.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Results folder to read.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--all", "show_all", is_flag=True, help="List every run, not only those not done.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs and their states as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
def status_cmd(suite_name: str | None, study_file: str | None, results_dir: str, precision: str,
               show_all: bool, as_json: bool, verbose: bool) -> None:
    """Which runs of a suite or a study are done, running, interrupted, failed or missing.

    Read from the results folder alone, so it works from any machine that shares it (a cluster's
    login node while the runs go on elsewhere). A run is "running" while its worker's claim in
    RESULTS/running/ has a heartbeat less than 5 minutes old; "interrupted" when the claim went
    stale or a checkpoint waits to be resumed. What is not done is left to run: the same
    `harness submit`, `baselines run` or `study run` command continues it.
    """
    import json as json_mod
    from dataclasses import asdict
    from pathlib import Path

    from harness.store.status import STATES, plan_study, plan_suite, run_states
    from harness.store.results import ResultsStore
    from harness.protocol.suites import all_suites

    if suite_name and study_file:
        _fail("give --suite or --study, not both", EXIT_USAGE)
    if not Path(results_dir, "runs").is_dir() and not Path(results_dir, "entries").is_dir():
        _fail(f"{results_dir}: no results folder here; pass --results")
    store = ResultsStore(results_dir)
    if study_file:
        study = _study_or_fail(study_file)
        groups = [(f"study {study.name}", _guarded(verbose, plan_study, study, store, precision))]
    else:
        suites = [_suite_or_fail(suite_name)] if suite_name else all_suites()
        groups = [(f"suite {s.name}", _guarded(verbose, plan_suite, store, s, precision)) for s in suites]
        groups = [g for g in groups if g[1] or suite_name]
        if not groups:
            _fail(f"{results_dir}: no entries registered to any suite; pass --suite or --study")
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
                           f"{r.entry:<24} {r.setting:<22} seed {r.seed:<6} {r.detail}")
        left = counts["missing"] + counts["failed"] + counts["interrupted"]
        if left:
            click.echo(f"  left to run: {left} ({counts['missing']} missing, {counts['failed']} "
                       f"failed, {counts['interrupted']} interrupted)")


_STATUS_COLOURS = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "bright_black"}


@main.command("check")
@click.argument("submission")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds each check may take before it counts as hung (0: no limit).")
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on internal errors.")
def check_cmd(submission: str, as_json: bool, timeout: float, verbose: bool) -> None:
    """Vet SUBMISSION's CustomNorm in seconds: one row per check, pass / warn / fail.

    SUBMISSION is a .py file or a baseline's name. Exit 0 when nothing fails, 1 otherwise.
    Warnings (e.g. batch-dependent at evaluation) do not fail; they are what a reader of a
    result needs to know.
    """
    import json as json_mod

    from harness.vetting.check import run_checks

    report = _guarded(verbose, run_checks, submission, timeout=timeout)
    if as_json:
        click.echo(json_mod.dumps(report.to_json(), indent=2))
    else:
        click.echo(f"{report.submission}" + (f"  (sha256 {report.sha256[:12]})" if report.sha256 else ""))
        width = max(len(r.name) for r in report.rows)
        for r in report.rows:
            status = click.style(f"{r.status.upper():<4}", fg=_STATUS_COLOURS[r.status], bold=True)
            click.echo(f"  {status}  {r.name:<{width}}  {r.detail}")
        counts = {s: sum(r.status == s for r in report.rows) for s in _STATUS_COLOURS}
        click.echo(f"{counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed"
                   + (f", {counts['skip']} skipped" if counts["skip"] else ""))
    sys.exit(0 if report.ok else EXIT_FAILED)


@main.command("list")
def list_cmd() -> None:
    """List architectures, datasets, baselines and suites, with one-line descriptions."""
    from harness.vetting.submission import baseline_names, baselines_dir, describe
    from harness.protocol.suites import all_suites

    click.echo("Architectures (--arch):")
    for spec in ARCHS.values():
        click.echo(f"  {spec.name:<24} {spec.description}")
    click.echo("\nDatasets (--dataset):")
    for spec in DATASETS.values():
        aliases = [a for a, t in DATASET_ALIASES.items() if t == spec.name]
        extra = f" (alias: {', '.join(aliases)})" if aliases else ""
        click.echo(f"  {spec.name:<24} {spec.description}{extra}")
    click.echo(f"\nBaselines (a name works wherever a submission path does; {baselines_dir()}):")
    for name in baseline_names():
        click.echo(f"  {name:<24} {describe(baselines_dir() / f'{name}.py')}")
    click.echo("\nSuites (--suite):")
    for suite in all_suites():
        click.echo(f"  {suite.name:<24} v{suite.version}: {suite.description}")
        for setting in suite.settings:
            click.echo(f"  {'':<24}   {setting.key:<24} {'hidden' if setting.hidden else 'public'}")


if __name__ == "__main__":
    main()
