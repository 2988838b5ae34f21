"""What every command shares: exit codes, the console, one-line errors, and the option groups.

Conventions, on every command: ``--results DIR`` is the results folder (default ``./results``);
``--out`` names a generated artefact (a site, a report, a benchmark's JSON); ``--json`` prints
JSON to standard output; ``-q/--quiet`` keeps results, warnings and errors; ``-v/--verbose`` adds
detail and full tracebacks. Exit codes: 0 success; 1 failure (unusable submission, missing data, a
run that failed); 2 usage error; 3 a run diverged (its record is written); 130 interrupted.

Nothing here imports torch: ``harness --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

import click

from harness.reporting import NORMAL, QUIET, VERBOSE, ConsoleReporter

if TYPE_CHECKING:
    from harness.execution.options import Isolation
    from harness.execution.sweep import Executor
    from harness.protocol.spec import SpeedOptions
    from harness.protocol.studies import Study
    from harness.protocol.suites import Suite
    from harness.vetting.vet import Vetting

EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130
# A click command's function, as the option decorators take and give it.
Command = TypeVar("Command", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def guarded(console: ConsoleReporter, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn``; turn every error into one line (a traceback with --verbose) and an exit code."""
    from harness.errors import RunError, SubmissionError, SuiteError
    from harness.store.results import EntryTaken

    verbose = console.level >= VERBOSE
    try:
        return fn(*args, **kwargs)
    except (SuiteError, EntryTaken) as exc:
        fail(str(exc), EXIT_USAGE)
    except (SubmissionError, RunError) as exc:
        if verbose:
            traceback.print_exc()
        fail(str(exc))
    except KeyboardInterrupt as exc:
        from harness.execution.local import Interrupted
        from harness.execution.watch import kill_workers

        kill_workers()  # in sessions of their own, they did not get the Ctrl-C
        if isinstance(exc, Interrupted):
            click.echo(f"interrupted: {exc.finished} run(s) finished (their records are kept), "
                       f"{exc.stopped} stopped in flight (each resumes from its last epoch's "
                       f"checkpoint), {exc.not_started} not started", err=True)
            click.echo(f"resume with: {shlex.join(['harness', *sys.argv[1:]])}", err=True)
        fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug in the harness still ends in one line
        if verbose:
            traceback.print_exc()
        fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)")


def gathered(group: type[Any], into: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The command's options named as the fields of ``group`` (a dataclass) passed on as one
    ``group`` instance, the keyword ``into``: a command's signature names its groups of options,
    not each of them (as lm-evaluation-harness passes one config object). Put it below the option
    decorators, right above the function."""
    names = [f.name for f in dataclasses.fields(group)]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def with_group(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **{into: group(**{name: kwargs.pop(name) for name in names})}, **kwargs)
        return with_group
    return decorate


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-q/--quiet`` and ``-v/--verbose``, passed on as ``console`` (a ConsoleReporter)."""
    @functools.wraps(fn)
    def with_console(*args: Any, quiet: bool, verbose: bool, **kwargs: Any) -> Any:
        if quiet and verbose:
            fail("give --quiet or --verbose, not both", EXIT_USAGE)
        level = QUIET if quiet else VERBOSE if verbose else NORMAL
        return fn(*args, console=ConsoleReporter(level), **kwargs)

    with_console = click.option("-v", "--verbose", is_flag=True,
                                help="More detail, and full tracebacks on errors.")(with_console)
    return click.option("-q", "--quiet", is_flag=True,
                        help="Only results, warnings and errors.")(with_console)


def json_option(help: str) -> Callable[[Command], Command]:
    """``--json``: print JSON to standard output; everything else goes to standard error, quietly."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def param_option(func: Command) -> Command:
    """``--param NAME=VALUE`` (repeatable): keyword parameters of the layer, as a dict ``params``."""

    def parse(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
        from harness.protocol.entries import parse_param

        try:
            return dict(parse_param(v) for v in values)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return click.option("--param", "params", multiple=True, metavar="NAME=VALUE", callback=parse,
                        help="A keyword parameter of the layer: CustomNorm(num_features, "
                             "NAME=VALUE) (repeatable; VALUE is read as JSON, e.g. p=0.2). Part of "
                             "a run's identity: its key and record carry it.")(func)


def for_json(console: ConsoleReporter, as_json: bool) -> ConsoleReporter:
    """With --json, standard output carries the JSON alone: the console goes quiet, to stderr."""
    if not as_json:
        return console
    return ConsoleReporter(QUIET, lambda message, err=False: click.echo(message, err=True))


def results_option(help: str = "Results folder (records in RESULTS/runs/; see docs/run-record.md).",
                   ) -> Callable[[Command], Command]:
    return click.option("--results", "results_dir", default="results", show_default=True,
                        type=click.Path(file_okay=False, path_type=str), help=help)


def results_folder_or_fail(results_dir: str) -> None:
    """A command that reads results needs a results folder there."""
    from pathlib import Path

    if not Path(results_dir, "runs").is_dir() and not Path(results_dir, "entries").is_dir():
        fail(f"{results_dir}: no results folder here (expected {results_dir}/runs/); run "
             "'harness submit' or 'harness baselines run' first, or pass --results", EXIT_USAGE)


# Each track's leaderboard suite: what --track T runs when no --suite is given.
TRACK_SUITES = {"cnn": "default", "mlp": "mlp", "rnn": "rnn", "transformer": "transformer"}


def suite_option(f: Command) -> Command:
    """``--suite`` and ``--track`` (a track's suite: cnn's is default)."""
    f = click.option("--track", type=click.Choice(list(TRACK_SUITES)), default=None,
                     help="Run the track's suite (cnn: default, mlp: mlp, rnn: rnn, transformer: "
                          "transformer) unless --suite names another suite of that track. "
                          "Default: cnn.")(f)
    return click.option("--suite", "suite_name", default=None,
                        help="Suite to run (see 'harness list'). Default: the track's suite, "
                             "default for cnn.")(f)


def suite_or_fail(name: str | None, track: str | None = None) -> Suite:
    """The suite named, else the track's (cnn's when no track is given); exit 2 when it does not
    exist or belongs to another track than ``track``."""
    from harness.errors import SuiteError
    from harness.protocol.suites import load_suite

    try:
        suite = load_suite(name or TRACK_SUITES[track or "cnn"])
    except SuiteError as exc:
        fail(str(exc), EXIT_USAGE)
    if track is not None and suite.track != track:
        fail(f"suite {suite.name} belongs to the {suite.track} track, not {track}", EXIT_USAGE)
    return suite


def study_or_fail(path: str) -> Study:
    from harness.errors import SuiteError
    from harness.protocol.studies import load_study

    try:
        return load_study(path)
    except SuiteError as exc:
        fail(str(exc), EXIT_USAGE)


# The options of every command that trains (execution_options adds --untrusted/--trusted, whose
# default is the command's).
EXECUTION_OPTIONS = [
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
                      "checked against the plain model on one batch first (see harness/engine/fast.py)."),
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
    click.option("--run-timeout", default=24 * 3600.0, show_default=True,
                 type=click.FloatRange(min=0),
                 help="Wall-clock seconds a run may take before it is killed and recorded as "
                      "a timeout (0: no limit)."),
    click.option("--memory-limit", default=None, type=click.FloatRange(min=0.1),
                 metavar="GIB",
                 help="Resident memory (GiB) a run's processes may use before they are killed "
                      "and recorded as out-of-memory. Default: 80% of this machine's memory "
                      "shared out over the parallel runs."),
    click.option("--disk-quota", default=1.0, show_default=True,
                 type=click.FloatRange(min=0.01), metavar="GIB",
                 help="Size (GiB) of an untrusted training process's writable /state, a "
                      "tmpfs the kernel holds to this size and to 16384 inodes (a write "
                      "past it fails inside the sandbox). tmpfs lives in memory, beside "
                      "--memory-limit."),
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


def _untrusted_option(default: bool) -> Callable[[Command], Command]:
    return click.option(
        "--untrusted/--trusted", default=default, show_default=True,
        help="Untrusted: this process never imports the file. Its checks run in a sandbox "
             "(bubblewrap: no network, no results folder, no data, a read-only minimal file "
             "system, limits, a syscall filter); its training runs in one without the test set, "
             "and its test logits come from another without labels; the harness alone computes "
             "the score. See docs/security.md.")


UNTRUSTED_AT = 14  # --untrusted is listed after --disk-quota, with the sandbox's other options


def execution_options(untrusted_default: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of every command that trains, passed on as one ``execution``
    (harness.execution.options.Execution): data, device, checks, precision, speed, resume, the
    limits of each run's worker and the sandbox. Untrusted by default for ``submit``."""
    options = [*EXECUTION_OPTIONS[:UNTRUSTED_AT], _untrusted_option(untrusted_default),
               *EXECUTION_OPTIONS[UNTRUSTED_AT:]]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def with_execution(*args: Any, data_root: str | None, download: bool, device: str,
                           check_timeout: float, precision: str, resume: bool, **kwargs: Any) -> Any:
            from harness.execution.options import Execution

            execution = Execution(device=device, data_root=data_root, download=download,
                                  precision=precision, speed=_speed(kwargs), resume=resume,
                                  isolation=_isolation(kwargs),
                                  vetting=_vetting(kwargs, check_timeout))
            return fn(*args, execution=execution, **kwargs)

        for option in reversed(options):
            with_execution = option(with_execution)
        return with_execution
    return decorate


def _speed(given: dict[str, Any]) -> SpeedOptions:
    """--channels-last, --cudnn-benchmark, --compile, --compile-backend, --cuda-graphs (taken out of
    ``given``) as SpeedOptions."""
    from harness.protocol.spec import SpeedOptions

    return SpeedOptions(channels_last=given.pop("channels_last"),
                        cudnn_benchmark=given.pop("cudnn_benchmark"), compile=given.pop("compile_"),
                        compile_backend=given.pop("compile_backend"),
                        cuda_graphs=given.pop("cuda_graphs"))


def _isolation(given: dict[str, Any]) -> Isolation:
    """--run-timeout, --memory-limit, --disk-quota, --untrusted, --unsafe-no-namespaces (taken out
    of ``given``) as an Isolation."""
    from harness.execution.options import Isolation

    memory, quota = given.pop("memory_limit"), given.pop("disk_quota")
    return Isolation(timeout_s=given.pop("run_timeout") or None,
                     memory_bytes=int(memory * 2**30) if memory else None,
                     untrusted=given.pop("untrusted"),
                     namespaces=not given.pop("unsafe_no_namespaces"),
                     disk_quota_bytes=int(quota * 2**30))


def _vetting(given: dict[str, Any], check_timeout: float) -> Vetting:
    """--scan-policy and --trust-code (taken out of ``given``) and --check-timeout as a Vetting."""
    from harness.vetting.vet import Vetting

    return Vetting(given.pop("scan_policy"), given.pop("trust_code"), check_timeout)


# The --slurm-* options that override a --slurm-config file, by their SlurmOptions field.
SLURM_OPTIONS = ("partition", "time_min", "gpus", "cpus", "mem_gb", "array_parallelism")


# Where the runs of a sweep execute (executor_options).
EXECUTOR_OPTIONS = [
    click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
                 help="Runs at once per GPU (or in all on a CPU), each in its own worker "
                      "process, spread over every visible GPU; logs go to RESULTS/logs/."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="CPU threads per run (default: the usable CPUs shared out among the "
                      "--jobs workers). Lower it when other work shares the machine: an "
                      "oversubscribed run can slow down many times over."),
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
                      "with 'harness status'; rerun the same command to finish what failed."),
]


def executor_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the runs of a sweep execute: here (default; ``executor`` is a LocalExecutor of --jobs
    workers) or as a Slurm job array (submitit)."""

    @functools.wraps(fn)
    def with_executor(*args: Any, executor: str, detach: bool, **kwargs: Any) -> Any:
        jobs, threads = kwargs.pop("jobs"), kwargs.pop("threads")
        slurm = {k: kwargs.pop(f"slurm_{k}") for k in SLURM_OPTIONS}
        config = kwargs.pop("slurm_config")
        if detach and executor == "local":
            fail("--detach needs a cluster executor (--executor slurm)", EXIT_USAGE)
        if threads is not None and executor != "local":
            fail("--threads is for local workers; a cluster run's threads follow --slurm-cpus",
                 EXIT_USAGE)
        execution = kwargs["execution"]
        chosen: Executor
        if executor == "local":
            from harness.execution.local import LocalExecutor

            chosen = LocalExecutor(jobs, execution.device, execution.isolation, threads=threads)
        else:
            from harness.execution.slurm import ClusterError, SlurmExecutor, SlurmOptions

            try:
                chosen = SlurmExecutor(SlurmOptions.from_sources(config, slurm), execution.isolation,
                                       backend=executor)
            except ClusterError as exc:
                fail(str(exc), EXIT_USAGE)
        return fn(*args, executor=chosen, detach=detach, **kwargs)

    for option in reversed(EXECUTOR_OPTIONS):
        with_executor = option(with_executor)
    return with_executor
