"""What planned runs will cost here: measured, then multiplied out (``harness study run --dry-run``).

A run's time is modelled as

    start + epochs * (train_steps * step_s + test_batches * test_batch_s) + 3 * step_s

- ``step_s``: forward + backward + the recipe's optimiser step of the architecture with BatchNorm on
  one resident batch of the run's training batch size and input shape, timed on this machine
  (with the threads each worker will have) after a warm-up; ``test_batch_s`` likewise for one
  forward of a test batch in eval mode. One measurement per distinct (architecture, dataset,
  batch sizes, optimiser), shared by every run of that shape.
- ``train_steps`` and ``test_batches``: the split sizes (harness.protocol.catalog.DatasetSpec.sizes, cut
  to the run's data limits) over the batch sizes.
- ``start``: what a run costs besides its epochs, measured once per shape by one real run of
  BatchNorm through a worker process (one training batch, one test batch, one epoch: the worker's
  start, loading the data, building the model, the speed checks, the record) less its one step and
  test batch; where the dataset is not on disk, that run fails at loading it, and its time (the
  worker's start and the failure's record) stands in. Twice for an untrusted run (it trains in one
  sandbox, is scored from another).
- the three layer probes of harness.engine.instruments cost about a training step each.
- before the runs, each distinct (file, parameters) is vetted once: BatchNorm's pre-flight checks,
  timed here, stand in for each.

What it leaves out: the data pipeline's augmentation, the per-epoch checkpoint and a layer slower
than BatchNorm (``harness check`` measures that ratio). Runs on several workers
are assumed to share the work evenly: wall time = the sum over runs / jobs, and never less than the
longest run. The dry run prints the figures per shape, so a wrong guess is visible.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from harness.bench.throughput import bare_step_time
from harness.data.tensors import random_inputs, resolve_dataset_name
from harness.engine.device import synchronize
from harness.models import batch_norm_for, build_model
from harness.protocol.catalog import DATASETS, track_of
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec

PROBES = 3  # harness.engine.instruments: first, middle and last epoch, one batch each


@dataclass(frozen=True)
class Shape:
    """What a run's step time depends on."""

    arch: str
    dataset: str
    batch_size: int
    test_batch_size: int
    optimizer: str

    @classmethod
    def of(cls, spec: RunSpec) -> "Shape":
        r = spec.recipe
        return cls(spec.arch, resolve_dataset_name(spec.dataset), r.batch_size, r.test_batch_size,
                   r.optimizer)


@dataclass
class Timing:
    step_s: float
    test_batch_s: float
    start_s: float = 0.0
    start_measured: str = "a run"  # or "a worker start" (the dataset is not on disk)


@dataclass
class Estimate:
    runs: int
    per_run_s: list[float]
    timings: dict[Shape, Timing]
    jobs: int
    vetting_s: float = 0.0  # every distinct (file, parameters) vetted before the runs start

    @property
    def total_s(self) -> float:
        """The runs' time added up (one worker after another)."""
        return sum(self.per_run_s)

    @property
    def wall_s(self) -> float:
        return self.vetting_s + max(self.total_s / max(self.jobs, 1), max(self.per_run_s, default=0.0))


def start_seconds(shape: Shape, device: str, threads: int, timing: Timing) -> tuple[float, str]:
    """What a run of ``shape`` costs besides its epochs: one real run of BatchNorm (one batch of
    each split, one epoch) through a worker process, less its step and test batch; when the
    dataset is not on disk, the time of that run failing at loading it (a worker's start)."""
    from harness.execution.local import LocalExecutor
    from harness.execution.task import Task
    from harness.store.results import ResultsStore
    from harness.vetting.submission import load

    sub = load("batch_norm")
    spec = RunSpec(str(sub.path), shape.arch, shape.dataset, sha256=sub.sha256, device=device,
                   download=False,  # a dataset that is not on disk fails the run at once
                   recipe=Recipe(epochs=1, batch_size=shape.batch_size,
                                 test_batch_size=shape.test_batch_size, optimizer=shape.optimizer),
                   limit_train=shape.batch_size, limit_test=shape.test_batch_size)
    with tempfile.TemporaryDirectory(prefix="harness-estimate-") as tmp:
        t0 = time.perf_counter()
        [record] = LocalExecutor(1, device, threads=threads).run([Task(spec, "estimate")],
                                                                  ResultsStore(Path(tmp)))
        elapsed = time.perf_counter() - t0
    if record["status"] != "ok":
        return elapsed, "a worker start"
    return max(elapsed - timing.step_s - timing.test_batch_s, 0.0), "a run"


def vetting_seconds() -> float:
    """BatchNorm's pre-flight checks (what vetting one file with one set of parameters costs)."""
    from harness.vetting.check import preflight
    from harness.vetting.submission import load

    t0 = time.perf_counter()
    preflight(load("batch_norm"), 10.0, "batch_norm")
    return time.perf_counter() - t0


def time_shape(shape: Shape, device: torch.device, steps: int = 3) -> Timing:
    """A step and a test batch of ``shape`` with BatchNorm, measured (after one warm-up each)."""
    spec = DATASETS[shape.dataset]
    inputs = spec.inputs()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(shape.arch, spec.num_classes, batch_norm_for(track_of(shape.arch)),
                        inputs=inputs).to(device)

    def batch(n: int) -> torch.Tensor:
        x = random_inputs(inputs, n, g)
        return (x.float() / 255 if inputs.kind == "image" else x).to(device)

    x, y = batch(shape.batch_size), torch.randint(0, spec.num_classes, (shape.batch_size,)).to(device)
    recipe = Recipe(optimizer=shape.optimizer)
    bare_step_time(model, x, y, 1, device, recipe)  # warm-up: allocations, kernels chosen
    step = bare_step_time(model, x, y, steps, device, recipe)
    test = batch(shape.test_batch_size)
    model.eval()
    with torch.no_grad():
        model(test)
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(test)
        synchronize(device)
    return Timing(step, (time.perf_counter() - t0) / steps)


def run_seconds(spec: RunSpec, timing: Timing, untrusted: bool = False) -> float:
    n_train, n_test = DATASETS[resolve_dataset_name(spec.dataset)].sizes
    n_train = min(n_train, spec.limit_train or n_train)
    n_test = min(n_test, spec.limit_test or n_test)
    r = spec.recipe
    epoch = (math.ceil(n_train / r.batch_size) * timing.step_s
             + math.ceil(n_test / r.test_batch_size) * timing.test_batch_s)
    return timing.start_s * (2 if untrusted else 1) + r.epochs * epoch + PROBES * timing.step_s


def estimate(specs: Iterable[RunSpec], *, device: torch.device, threads: int, jobs: int,
             untrusted: bool = False, vetted: int = 0) -> Estimate:
    """Measure each distinct shape of ``specs`` on ``device`` with ``threads`` CPU threads (as a
    worker will have them), then project every run, after ``vetted`` files (with their
    parameters) are vetted."""
    specs = list(specs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            timings = {shape: time_shape(shape, device)
                       for shape in dict.fromkeys(Shape.of(s) for s in specs)}
            vetting = vetting_seconds() * vetted if vetted and specs else 0.0
    finally:
        torch.set_num_threads(before)
    for shape, timing in timings.items():
        timing.start_s, timing.start_measured = start_seconds(shape, str(device), threads, timing)
    per_run = [run_seconds(s, timings[Shape.of(s)], untrusted) for s in specs]
    return Estimate(len(specs), per_run, timings, jobs, vetting)


def hours(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

