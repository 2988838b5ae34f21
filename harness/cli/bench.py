"""``harness bench``: training throughput and the harness's overheads, measured side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import click

from harness.cli.common import CONTEXT, fail, gathered, guarded, output_options
from harness.cli.run import DATASET_CHOICES
from harness.protocol.catalog import ARCHITECTURES
from harness.reporting import ConsoleReporter, plural
from harness.store.record import finite, write_json_atomic

if TYPE_CHECKING:
    from harness.bench.throughput import Bench

Say = Callable[[str], None]  # where a benchmark's summary lines go (stderr with --json)


@dataclass(frozen=True)
class BenchRequest:
    """What ``harness bench`` measures: ARCH on DATASET on DEVICE, the pipeline comparison (or,
    with ``norms``, their step times; or the --packing, --instruments or --split overhead) and
    how long each measurement is."""

    arch: str
    dataset: str
    norms: tuple[str, ...]
    device: str
    steps: int | None
    rounds: int
    workers: int
    compiled: bool
    packing: int | None
    instruments: bool
    split: bool
    epochs: int
    limit_train: int | None
    data_root: str | None


@click.command("bench", context_settings=CONTEXT)
@click.option("--arch", default="resnet20", show_default=True, type=click.Choice(list(ARCHITECTURES)))
@click.option("--dataset", default="cifar10", show_default=True,
              type=click.Choice(DATASET_CHOICES, case_sensitive=False),
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
@click.option("--out", "json_out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the results, with a description of the machine, to this JSON file.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results, with a description of the machine, as JSON instead.")
@output_options
@gathered(BenchRequest, "request")
def bench_cmd(request: BenchRequest, json_out: str | None, as_json: bool,
              console: ConsoleReporter) -> None:
    """Measure training images/s: the harness vs the reference-style pipeline vs the bare model.

    In one process, alternating round by round: (a) the harness's epoch, data pipeline included;
    (b) the reference's DataLoader with per-image PIL transforms, 4 workers and `.item()` every
    step; (c) forward + backward + SGD on one resident batch (the upper bound). Prints the ratios
    and a projected 200-epoch wall time. With --norm, the step time of each norm relative to
    BatchNorm instead.
    """
    from harness.bench.throughput import Bench
    from harness.engine.device import resolve_device

    say = click.echo if not as_json else (lambda message: None)  # the results
    progress = (lambda m: console.info(m, err=True)) if not as_json else (lambda m: None)
    r = request
    dev = guarded(console, resolve_device, r.device)
    bench = Bench(r.arch, r.dataset.lower(), dev, r.rounds, r.data_root, progress)
    if r.split:
        # As given ("auto" included): its runs go through the executor, which spreads them.
        out = _split(replace(bench, device=r.device), console, r.epochs, r.limit_train, say)
    elif r.instruments:
        out = _instruments(bench, console, r.norms[0] if r.norms else "batch_norm", r.epochs,
                           r.limit_train, say)
    elif r.packing:
        out = _packing(replace(bench, device=r.device), console, r.packing, r.limit_train, say)
    else:
        out = _throughput(bench, console, list(r.norms),
                          r.steps or (200 if dev.type == "cuda" else 30), r.compiled, r.workers, say)
    if as_json:
        click.echo(json.dumps(finite(out), indent=2))
    if json_out:
        write_json_atomic(json_out, out)
        say(f"wrote {json_out}")


def _about(out: dict[str, Any], bench: Bench, kind: str) -> dict[str, Any]:
    """A benchmark's results with what they were measured on."""
    from harness.bench.throughput import machine
    from harness.engine.device import resolve_device
    from harness.store.record import utc_now

    return {**out, "benchmark": f"harness bench{kind}", "date": utc_now(), "arch": bench.arch,
            "dataset": bench.dataset, "machine": machine(resolve_device(str(bench.device)))}


def _split(bench: Bench, console: ConsoleReporter, epochs: int, limit_train: int | None,
           say: Say) -> dict[str, Any]:
    from harness.bench.overheads import split_overhead
    from harness.execution.sandbox import sandbox_unavailable

    if sandbox_unavailable():
        fail(f"--split needs the sandbox: {sandbox_unavailable()}")
    out = _about(guarded(console, split_overhead, bench, (epochs, 3 * epochs), limit_train or 2560,
                         1000), bench, " --split")
    say(f"{bench.arch} on {bench.dataset}, {out['machine']['description']}: scoring in its own "
        f"process costs {out['fixed_s']:.1f}s once and {out['per_epoch_s']:.3f}s per epoch "
        f"(wall-clock slope {out['per_epoch_wall_s']:+.3f}s, scoring time "
        f"{out['per_epoch_eval_s']:+.3f}s; {100 * out['overhead_at'][str(3 * epochs)]:+.1f}% "
        f"of a {3 * epochs}-epoch run here); projected onto a protocol run (200 epochs, "
        f"{out['protocol_run_s'] / 3600:.1f} h at this speed): "
        f"{100 * out['projected_protocol_overhead']:+.2f}%")
    return out


def _instruments(bench: Bench, console: ConsoleReporter, norm: str, epochs: int,
                 limit_train: int | None, say: Say) -> dict[str, Any]:
    from harness.bench.overheads import instrument_overhead

    out = _about(guarded(console, instrument_overhead, bench, norm, epochs, limit_train), bench,
                 " --instruments")
    out["rounds"] = bench.rounds
    say(f"{bench.arch} on {bench.dataset} with {out['norm']}, {plural(out['epochs'], 'epoch')} of "
        f"{out['train_size']} images ({out['steps']} steps), {out['machine']['description']}:"
        f" instruments on {out['on_median_s']:.1f}s, off {out['off_median_s']:.1f}s, "
        f"overhead {100 * out['overhead']:+.1f}% (probes alone: "
        f"{100 * out['probe_fraction_median']:.1f}% of the run)")
    return out


def _packing(bench: Bench, console: ConsoleReporter, jobs: int, limit_train: int | None,
             say: Say) -> dict[str, Any]:
    from harness.bench.overheads import packing as run_packing

    images = limit_train or 10_240
    out = _about(guarded(console, run_packing, bench.arch, bench.dataset, str(bench.device), jobs,
                         2 * jobs, images, progress=bench.progress), bench, " --packing")
    out.update({"jobs": jobs, "runs": 2 * jobs, "limit_train": images})
    say(f"{bench.arch} on {bench.dataset}, {out['machine']['description']}: --jobs {jobs} "
        f"finishes the runs {out['ratio']:.2f}x as fast as --jobs 1")
    return out


def _throughput(bench: Bench, console: ConsoleReporter, norms: list[str], steps: int, compiled: bool,
                workers: int, say: Say) -> dict[str, Any]:
    from harness.bench.throughput import run

    out = guarded(console, run, bench, norms, steps, compiled, workers)
    say(f"{bench.arch} on {out['dataset']} ({out['data']} data), {out['device']}: "
        f"{out['machine']['description']}")
    if "norm_costs" in out:
        for name, row in out["norm_costs"].items():
            cells = []
            for mode in ("eager", "compiled"):
                if f"{mode}_ratio" in row:
                    r = row[f"{mode}_ratio"]
                    cells.append(f"{mode} {r:.2f}x" if r is not None
                                 else f"{mode}: {row.get(f'{mode}_error', 'n/a')}")
            say(f"  {name:<28} {'   '.join(cells)}")
        return out
    ref = out["reference_median"]
    say(f"  harness   {out['harness_median']:9.1f} samples/s\n"
        + (f"  reference {ref:9.1f} samples/s\n" if ref else
           "  reference (none: the reference benchmark has CNNs only)\n")
        + f"  bound     {out['bound_median']:9.1f} samples/s\n"
        + (f"  harness/reference {out['ratio_harness_over_reference']:.2f}x, " if ref else "  ")
        + f"harness/bound {out['ratio_harness_over_bound']:.2f}x; projected "
          f"{out['recipe_epochs']}-epoch run (the {out['track']} recipe) "
          f"{out['projected_run_s'] / 60:.0f} min\n"
          f"  harness speed options in effect: channels_last "
          f"{out['speed']['channels_last']}, cudnn.benchmark {out['speed']['cudnn_benchmark']}, "
          f"compile {out['speed']['compile']}")
    return out
