"""What the harness's own machinery costs, measured as whole runs side by side: packing several
runs per device (``--packing``), scoring in a sandboxed process of its own (``--split``) and the
run's instruments (``--instruments``)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from harness.bench.throughput import BATCH, Bench
from harness.protocol.recipe import Recipe
from harness.reporting import Reporter


class Silent(Reporter):
    """Measured runs say nothing (their warnings are the benchmark's noise)."""

    def warn(self, message: str) -> None:
        pass


def packing(arch: str, dataset: str, device: str, jobs: int, runs: int, limit_train: int,
            progress=print) -> dict[str, Any]:
    """Suite throughput (runs per hour) of ``--jobs 1`` against ``--jobs N``, side by side.

    The same ``runs`` one-epoch runs (seeds 0..runs-1, ``limit_train`` images) go through the
    executor once sequentially in worker processes and once with ``jobs`` workers per GPU, so
    both pay the same process start-up and data loading, as a real suite does.
    """
    import tempfile
    from pathlib import Path

    from harness.engine.device import usable_cpus
    from harness.execution.local import LocalExecutor, visible_gpus, worker_slots
    from harness.execution.task import Task
    from harness.protocol.spec import RunSpec
    from harness.store.results import ResultsStore
    from harness.vetting.submission import load

    sub = load("batch_norm")
    # --jobs 1 as the CLI runs it: one run at a time on one device (here in a worker too, so that
    # both sides pay process start-up).
    one_device = worker_slots(1, device, visible_gpus()[:1], usable_cpus())
    out: dict[str, Any] = {}
    for n in (1, jobs):
        with tempfile.TemporaryDirectory() as tmp:
            store = ResultsStore(Path(tmp))
            tasks = [Task(RunSpec(str(sub.path), arch, dataset, seed=s, recipe=Recipe(epochs=1),
                                  limit_train=limit_train, device=device, sha256=sub.sha256),
                          f"pack{n}-seed{s}") for s in range(runs)]
            t0 = time.perf_counter()
            records = LocalExecutor(n, device).run(
                tasks, store, slots=one_device if n == 1 else None)
            elapsed = time.perf_counter() - t0
        failed = [r for r in records if r["status"] != "ok"]
        if failed:
            raise RuntimeError(f"packing benchmark: {len(failed)} run(s) failed: "
                               f"{failed[0]['failure']['message']}")
        out[f"jobs_{n}_s"] = elapsed
        progress(f"--jobs {n}: {runs} runs in {elapsed:.1f}s")
    out["ratio"] = out["jobs_1_s"] / out[f"jobs_{jobs}_s"]
    return out



PROTOCOL_EPOCHS, PROTOCOL_TRAIN, PROTOCOL_TEST = 200, 50_000, 10_000


def split_overhead(bench: Bench, lengths: tuple[int, int], limit_train: int,
                   limit_test: int) -> dict[str, Any]:
    """The cost of scoring in a process of its own (harness.execution.untrusted) against scoring in the run's
    own process, in whole runs of the batch_norm baseline, side by side.

    Both go through the executor's worker processes (so both pay a worker's start-up and data
    loading), alternating order round by round, at two run lengths (``lengths``, epochs): the
    difference of their wall times is the split's cost, a fixed part (the second sandbox's
    start-up, the inputs written) plus a part per epoch (the hand-over, the parent's scoring). The
    per-epoch part is projected onto a protocol run: 200 epochs of CIFAR's 50,000 training and
    10,000 test images, at the speed the in-process runs measured here.
    """
    arch, dataset, device, rounds, progress = (bench.arch, bench.dataset, str(bench.device),
                                               bench.rounds, bench.progress)
    import tempfile
    from pathlib import Path

    from harness.engine.device import usable_cpus
    from harness.execution.local import LocalExecutor, visible_gpus, worker_slots
    from harness.execution.options import Isolation
    from harness.execution.task import Task
    from harness.execution.untrusted import _dataset  # the cache the split's parent loads data through
    from harness.protocol.spec import RunSpec
    from harness.store.results import ResultsStore
    from harness.vetting.submission import load

    sub = load("batch_norm")
    slots = worker_slots(1, device, visible_gpus()[:1], usable_cpus())
    walls: dict[tuple[str, int], list[float]] = {}
    per_epoch_s: list[float] = []
    eval_s: dict[str, list[float]] = {"in-process": [], "split": []}  # per epoch, as recorded
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode in (("in-process", "split") if r % 2 == 0 else ("split", "in-process")):
                for epochs in lengths:
                    store = ResultsStore(Path(tmp) / f"{mode}-{r}-{epochs}")
                    copy, digest = store.store_submission(sub.path)
                    task = Task(RunSpec(str(copy), arch, dataset, seed=0,
                                          recipe=Recipe(epochs=epochs), limit_train=limit_train,
                                        limit_test=limit_test, device=device, resume=False,
                                        sha256=digest),
                                f"{mode}-{epochs}", {"submission_source": "batch_norm"})
                    isolation = Isolation(untrusted=mode == "split")
                    _dataset.cache_clear()  # the split's parent loads the data as a worker does
                    t0 = time.perf_counter()
                    (record,) = LocalExecutor(1, device, isolation).run([task], store, slots=slots)
                    wall = time.perf_counter() - t0
                    if record["status"] != "ok":
                        raise RuntimeError(f"split benchmark: the {mode} run {record['status']}: "
                                           f"{(record['failure'] or {}).get('message')}")
                    walls.setdefault((mode, epochs), []).append(wall)
                    eval_s[mode].append(record["eval_s"] / epochs)
                    if mode == "in-process":
                        per_epoch_s.append(sum(e["epoch_s"] for e in record["epochs"]) / epochs)
                    progress(f"round {r + 1}/{rounds}: {mode}, {epochs} epochs: {wall:.1f}s")
    med = {k: statistics.median(v) for k, v in walls.items()}
    short, long = lengths
    cost = {e: med[("split", e)] - med[("in-process", e)] for e in lengths}
    per_epoch_wall = (cost[long] - cost[short]) / (long - short)
    fixed = cost[short] - short * per_epoch_wall
    # The per-epoch cost seen directly: the scoring's time per epoch (hand-over, forward passes,
    # logits, the parent's sums) against the in-process evaluation's. The wall-clock slope above
    # is noisier; the projection takes the larger of the two (and never less than nothing).
    per_epoch_eval = statistics.median(eval_s["split"]) - statistics.median(eval_s["in-process"])
    per_epoch = max(per_epoch_wall, per_epoch_eval, 0.0)
    # A protocol epoch at the in-process speed measured here (training and scoring scale with
    # the images they see).
    epoch_here = statistics.median(per_epoch_s)
    protocol_epoch = epoch_here * (PROTOCOL_TRAIN + PROTOCOL_TEST) / (limit_train + limit_test)
    protocol_wall = PROTOCOL_EPOCHS * protocol_epoch
    projected = (max(fixed, 0.0) + PROTOCOL_EPOCHS * per_epoch) / protocol_wall
    return {"walls_s": {f"{m}-{e}": v for (m, e), v in walls.items()},
            "median_s": {f"{m}-{e}": v for (m, e), v in med.items()},
            "overhead_at": {str(e): cost[e] / med[("in-process", e)] for e in lengths},
            "eval_per_epoch_s": {m: statistics.median(v) for m, v in eval_s.items()},
            "fixed_s": fixed, "per_epoch_wall_s": per_epoch_wall,
            "per_epoch_eval_s": per_epoch_eval, "per_epoch_s": per_epoch, "epoch_s_here": epoch_here,
            "protocol_epoch_s": protocol_epoch, "protocol_run_s": protocol_wall,
            "projected_protocol_overhead": projected, "limit_train": limit_train,
            "limit_test": limit_test, "lengths": list(lengths), "rounds": rounds}


def instrument_overhead(bench: Bench, norm: str, epochs: int,
                        limit_train: int | None) -> dict[str, Any]:
    """The cost of harness.engine.instruments in whole runs: the same run (same seed, so the same
    computation) with the instruments on and off, alternating order round by round after one
    uncounted warm-up round; the ratio of the median wall times is their overhead."""
    arch, dataset, device, rounds, progress = (bench.arch, bench.dataset, bench.device,
                                               bench.rounds, bench.progress)
    data_root = bench.data_root
    import tempfile

    from harness.engine.runner import run_eval
    from harness.protocol.spec import RunSpec
    from harness.vetting.submission import load

    sub = load(norm)
    walls: dict[bool, list[float]] = {True: [], False: []}
    fractions: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):
            for enabled in ((True, False) if r % 2 == 0 else (False, True)):
                spec = RunSpec(str(sub.path), arch, dataset, seed=0, recipe=Recipe(epochs=epochs),
                                 limit_train=limit_train, device=str(device), data_root=data_root,
                                 download=False, instruments=enabled)
                record, _ = run_eval(spec, tmp, submission=sub, write=False, checkpoints=False,
                                     reporter=Silent())
                if record["status"] != "ok":
                    raise RuntimeError(f"instrument benchmark: the run {record['status']}: "
                                       f"{(record['failure'] or {}).get('message')}")
                if r:
                    walls[enabled].append(record["wall_s"])
                    if enabled:
                        fractions.append(record["instruments"]["probe_fraction"])
            if r:
                progress(f"round {r}/{rounds}: instruments on {walls[True][-1]:.1f}s, "
                         f"off {walls[False][-1]:.1f}s")
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    return {"on_wall_s": walls[True], "off_wall_s": walls[False], "on_median_s": on,
            "off_median_s": off, "overhead": on / off - 1.0,
            "probe_fraction_median": statistics.median(fractions), "epochs": epochs,
            "train_size": record["data"]["train_size"], "steps": epochs * -(-record["data"]["train_size"] // BATCH),
            "norm": sub.name}
