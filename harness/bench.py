"""``harness bench``: training throughput, measured side by side in one process.

(a) harness: ``harness.engine.train.train`` for one epoch, data pipeline included (epoch draw, uint8
    gather, crop, flip, normalise, forward, backward, SGD, on-device metric accumulation);
(b) reference: the reference benchmark's pipeline: a torchvision-style dataset handing out PIL
    images, per-image transforms (Resize, RandomCrop(32, 4), RandomHorizontalFlip, ToTensor,
    Normalize), DataLoader(batch 128, shuffle, 4 workers, pin_memory on a GPU), and ``.item()`` on
    the loss and the accuracy every step; worker start-up is inside the timing, as it is in every
    epoch of the reference;
(c) bound: forward + backward + SGD on one resident, already-normalised batch.
The three alternate round by round so that drift of the machine hits all of them; figures are
medians over rounds, and the ratios are what matter. When the dataset's files are absent, random
uint8 images of the real dataset's shape and size stand in.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.protocol.data import (DATASETS, BatchPipeline, Dataset, DatasetUnavailable, ImageSplit,
                          load_dataset, resolve_dataset_name)
from harness.engine.fast import prepare
from harness.protocol.spec import SpeedOptions
from harness.protocol.models import build_model
from harness.store.record import cpu_model, utc_now
from harness.protocol.scoring import EvalPlan, forward_plan, score
from harness.engine.train import train
from harness.protocol.recipe import Recipe
from harness.engine.device import autocast, synchronize

REAL_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "fmnist": (60_000, 10_000),
              "digits": (1_437, 360), "noise": (50_000, 10_000)}
BATCH = 128


def dataset_or_random(name: str, data_root: str | None) -> tuple[Dataset, str]:
    name = resolve_dataset_name(name)
    try:
        return load_dataset(name, data_root, download=False), "real"
    except DatasetUnavailable:
        pass
    spec = DATASETS[name]
    n_train, n_test = REAL_SIZES[name]
    g = torch.Generator().manual_seed(0)

    def split(n):
        images = torch.randint(0, 256, (n, spec.channels, 32, 32), dtype=torch.uint8, generator=g)
        return ImageSplit(images, torch.randint(0, spec.num_classes, (n,), generator=g))

    return Dataset(spec, split(n_train), split(n_test), spec.mean, spec.std, "random"), "random"


class _PILImages(torch.utils.data.Dataset):
    """What torchvision's CIFAR10/FashionMNIST hand a DataLoader: a PIL image and a label."""

    def __init__(self, split: ImageSplit, transform):
        self.images = split.images.permute(0, 2, 3, 1).numpy()  # HWC, as CIFAR stores it
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = self.images[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(img), self.labels[i]


def reference_loader(data: Dataset, device: torch.device, workers: int = 4):
    import torchvision.transforms as T

    steps = [T.Resize(32), T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]
    if data.spec.channels == 1:
        steps.append(T.Lambda(lambda x: x.repeat(3, 1, 1)))
    steps.append(T.Normalize(data.mean, data.std))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        return torch.utils.data.DataLoader(_PILImages(data.train, T.Compose(steps)), batch_size=BATCH,
                                           shuffle=True, num_workers=workers,
                                           pin_memory=device.type == "cuda")


def reference_epoch(model: nn.Module, loader, device: torch.device) -> float:
    """Images per second of one reference-style epoch, with its per-step host reads."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    model.train()
    synchronize(device)
    t0 = time.perf_counter()
    seen = total_loss = correct = 0
    with warnings.catch_warnings():
        # 4 workers on fewer cores is what the reference does; torch's advice is noted, not taken.
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        iterator = iter(loader)  # starts the workers, as every reference epoch does
    for x, y in iterator:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = criterion(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total_loss += loss.item() * y.size(0)
        correct += (out.argmax(1) == y).sum().item()
        seen += y.size(0)
    synchronize(device)
    return seen / (time.perf_counter() - t0)


def bare_step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                   device: torch.device) -> float:
    """Seconds per step of forward + backward + SGD on one resident batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    model.train()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    synchronize(device)
    return (time.perf_counter() - t0) / steps


def machine(device: torch.device) -> dict[str, Any]:
    return {
        "description": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"{cpu_model()}, {os.cpu_count()} logical CPUs, "
                             f"{torch.get_num_threads()} torch threads"),
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class ThroughputResult:
    harness: list[float]
    reference: list[float]
    bound: list[float]
    eval_images_per_s: float
    speed: dict[str, Any]  # what harness.engine.fast put in effect for the harness's runs

    def medians(self) -> tuple[float, float, float]:
        return (statistics.median(self.harness), statistics.median(self.reference),
                statistics.median(self.bound))


def throughput(arch: str, data: Dataset, norm, device: torch.device, steps: int, rounds: int,
               workers: int = 4, progress=print, speed: SpeedOptions | None = None
               ) -> ThroughputResult:
    """The harness (with ``speed``, default: the device's defaults) vs the reference-style pipeline
    vs the bound (the same model, same speed options, one resident batch)."""
    speed = speed or SpeedOptions()
    small = Dataset(data.spec, data.train.head(steps * BATCH), data.test.head(2 * BATCH),
                    data.mean, data.std, data.source)
    torch.manual_seed(0)
    models = [build_model(arch, data.spec.num_classes, norm).to(device) for _ in range(3)]
    pipe = BatchPipeline(data.mean, data.std, data.spec.channels, device)
    x = pipe.test_batch(small.train.images[:BATCH].to(device))
    y = small.train.labels[:BATCH].to(device)
    loader = reference_loader(small, device, workers)
    bound = prepare(models[2], x, y, device, speed)
    x_bound = x.contiguous(memory_format=bound.memory_format)

    # Warm-up: allocator, kernels, thread pools, worker start-up paths, compilation.
    warm = train(models[0], small, Recipe(epochs=1), device, seed=0, speed=speed)
    bare_step_time(bound.model, x_bound, y, 2, device)
    result = ThroughputResult([], [], [], 0.0, warm.speed)
    for r in range(rounds):
        res = train(models[0], small, Recipe(epochs=1), device, seed=r + 1, speed=speed)
        result.harness.append(len(small.train) / res.train_s)
        result.reference.append(reference_epoch(models[1], loader, device))
        result.bound.append(BATCH / bare_step_time(bound.model, x_bound, y, steps, device))
        progress(f"round {r + 1}/{rounds}: harness {result.harness[-1]:8.1f} img/s   "
                 f"reference {result.reference[-1]:8.1f} img/s   bound {result.bound[-1]:8.1f} img/s")
    plan = EvalPlan.build(len(small.test), BATCH, seed=0)
    test_images = small.test.images[torch.as_tensor(plan.order)].to(device)
    test_labels = small.test.labels.to(device)
    synchronize(device)
    t0 = time.perf_counter()
    score(forward_plan(models[0], test_images, plan.batches, pipe.test_batch,
                       lambda: autocast(device, "fp32")), test_labels, plan)
    synchronize(device)
    result.eval_images_per_s = len(small.test) / (time.perf_counter() - t0)
    return result


def norm_costs(arch: str, norms: dict[str, Any], device: torch.device, steps: int, rounds: int,
               compiled: bool, progress=print) -> dict[str, dict[str, float | str | None]]:
    """Step time of the bare model with each norm relative to BatchNorm, eager (and compiled)."""
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    modes = ["eager"] + (["compiled"] if compiled else [])
    times: dict[tuple[str, str], list[float]] = {}
    models: dict[tuple[str, str], nn.Module] = {}
    errors: dict[tuple[str, str], str] = {}
    for name, cls in norms.items():
        for mode in modes:
            torch.manual_seed(0)
            model = build_model(arch, 10, cls).to(device)
            try:
                if mode == "compiled":
                    model = torch.compile(model)
                bare_step_time(model, x, y, 2, device)  # warm-up (and compilation)
                models[(name, mode)] = model
            except Exception as exc:  # noqa: BLE001 - a norm that does not compile is reported
                errors[(name, mode)] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    for r in range(rounds):
        for key, model in models.items():
            times.setdefault(key, []).append(bare_step_time(model, x, y, steps, device))
        progress(f"norm cost round {r + 1}/{rounds} done")
    out = {}
    for name in norms:
        row: dict[str, float | str | None] = {}
        for mode in modes:
            key, base = (name, mode), ("batch_norm", mode)
            if key in errors:
                row[f"{mode}_ratio"], row[f"{mode}_error"] = None, errors[key]
            elif base not in times:
                row[f"{mode}_ratio"] = None
            else:
                t, tb = statistics.median(times[key]), statistics.median(times[base])
                row[f"{mode}_step_ms"], row[f"{mode}_ratio"] = 1000 * t, t / tb
        out[name] = row
    return out


def run(arch: str, dataset: str, norm_specs: list[str], device: torch.device, steps: int,
        rounds: int, data_root: str | None, compiled: bool, workers: int = 4,
        progress=print) -> dict[str, Any]:
    from harness.vetting.submission import baseline_names, load

    data, source = dataset_or_random(dataset, data_root)
    n_train, n_test = REAL_SIZES[data.spec.name]
    out: dict[str, Any] = {"benchmark": "harness bench", "date": utc_now(), "arch": arch,
                           "dataset": data.spec.name, "data": source, "device": str(device),
                           "machine": machine(device), "batch_size": BATCH, "steps_per_round": steps,
                           "rounds": rounds, "reference_workers": workers}
    if not norm_specs:
        tp = throughput(arch, data, nn.BatchNorm2d, device, steps, rounds, workers, progress,
                        SpeedOptions(compile=compiled))
        h, ref, b = tp.medians()
        out.update({"speed": tp.speed, "harness_images_per_s": tp.harness, "reference_images_per_s": tp.reference,
                    "bound_images_per_s": tp.bound, "harness_median": h, "reference_median": ref,
                    "bound_median": b, "ratio_harness_over_reference": h / ref,
                    "ratio_harness_over_bound": h / b, "eval_images_per_s": tp.eval_images_per_s,
                    "projected_200_epoch_s": 200 * (n_train / h + n_test / tp.eval_images_per_s)})
        return out
    names = baseline_names() if norm_specs == ["all"] else norm_specs
    norms = {"batch_norm": nn.BatchNorm2d}
    for spec in names:
        sub = load(spec)
        norms[sub.name] = sub.norm_class
    out["norm_costs"] = norm_costs(arch, norms, device, steps, rounds, compiled, progress)
    return out


def packing(arch: str, dataset: str, device: str, jobs: int, runs: int, limit_train: int,
            progress=print) -> dict[str, Any]:
    """Suite throughput (runs per hour) of ``--jobs 1`` against ``--jobs N``, side by side.

    The same ``runs`` one-epoch runs (seeds 0..runs-1, ``limit_train`` images) go through the
    executor once sequentially in worker processes and once with ``jobs`` workers per GPU, so
    both pay the same process start-up and data loading, as a real suite does.
    """
    import os
    import tempfile
    from pathlib import Path

    from harness.execution.local import LocalExecutor, Task, visible_gpus, worker_slots
    from harness.protocol.spec import RunSpec
    from harness.store.results import ResultsStore
    from harness.vetting.submission import load

    sub = load("batch_norm")
    # --jobs 1 as the CLI runs it: one run at a time on one device (here in a worker too, so that
    # both sides pay process start-up).
    one_device = worker_slots(1, device, visible_gpus()[:1], os.cpu_count() or 1)
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


def split_overhead(arch: str, dataset: str, device: str, lengths: tuple[int, int], rounds: int,
                   limit_train: int, limit_test: int, progress=print) -> dict[str, Any]:
    """The cost of scoring in a process of its own (harness.execution.split) against scoring in the run's
    own process, in whole runs of the batch_norm baseline, side by side.

    Both go through the executor's worker processes (so both pay a worker's start-up and data
    loading), alternating order round by round, at two run lengths (``lengths``, epochs): the
    difference of their wall times is the split's cost, a fixed part (the second sandbox's
    start-up, the inputs written) plus a part per epoch (the hand-over, the parent's scoring). The
    per-epoch part is projected onto a protocol run: 200 epochs of CIFAR's 50,000 training and
    10,000 test images, at the speed the in-process runs measured here.
    """
    import tempfile
    from pathlib import Path

    from harness.execution.local import Isolation, LocalExecutor, Task, visible_gpus, worker_slots
    from harness.protocol.spec import RunSpec
    from harness.execution.split import _dataset
    from harness.store.results import ResultsStore
    from harness.vetting.submission import load

    sub = load("batch_norm")
    slots = worker_slots(1, device, visible_gpus()[:1], os.cpu_count() or 1)
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


def instrument_overhead(arch: str, dataset: str, norm: str, device: torch.device, epochs: int,
                        rounds: int, limit_train: int | None, data_root: str | None,
                        progress=print) -> dict[str, Any]:
    """The cost of harness.engine.instruments in whole runs: the same run (same seed, so the same
    computation) with the instruments on and off, alternating order round by round after one
    uncounted warm-up round; the ratio of the median wall times is their overhead."""
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
                config = RunSpec(str(sub.path), arch, dataset, seed=0, recipe=Recipe(epochs=epochs),
                                   limit_train=limit_train, device=str(device), data_root=data_root,
                                   download=False, instruments=enabled)
                record, _ = run_eval(config, tmp, submission=sub, write=False, checkpoints=False,
                                     warn=lambda msg: None)
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
