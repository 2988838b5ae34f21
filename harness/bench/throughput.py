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
data of the real dataset's shape and size stand in.

The other tracks (MLPs, RNNs, Transformers) have no reference pipeline: the reference benchmark
has CNNs only. For them (a) and (c) are measured, each with the track's recipe (its optimiser,
label smoothing and clipping: harness.protocol.recipe.TRACK_RECIPES).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from harness.data.tensors import (
    Dataset,
    DatasetUnavailable,
    Split,
    load_dataset,
    make_pipeline,
    random_dataset,
    random_inputs,
    resolve_dataset_name,
)
from harness.engine.device import autocast, synchronize
from harness.engine.fast import prepare
from harness.engine.train import TrainOptions, make_optimizer, train
from harness.models import batch_norm_for, build_model
from harness.protocol.catalog import (
    ARCHITECTURES,
    DATASETS,
    compatibility_error,
    example_inputs,
    track_of,
)
from harness.protocol.recipe import PROTOCOL_RECIPE, TRACK_RECIPES, Recipe
from harness.protocol.scoring import EvalPlan, forward_plan, score
from harness.protocol.spec import SpeedOptions
from harness.store.record import cpu_model, utc_now

BATCH = 128


@dataclass(frozen=True)
class Bench:
    """What a benchmark measures and how: ``arch`` on ``dataset`` (found under ``data_root``) on
    ``device``, each comparison repeated ``rounds`` times (alternating the order of what is
    compared), each step of it told to ``progress``."""

    arch: str
    dataset: str
    device: Any = "cpu"  # a torch.device, or its name
    rounds: int = 3
    data_root: str | None = None
    progress: Callable[[str], None] = print


def dataset_or_random(name: str, data_root: str | None) -> tuple[Dataset, str]:
    name = resolve_dataset_name(name)
    try:
        return load_dataset(name, data_root, download=False), "real"
    except DatasetUnavailable:
        pass
    return random_dataset(DATASETS[name], *DATASETS[name].sizes, source="random"), "random"


class _PILImages(torch.utils.data.Dataset):
    """What torchvision's CIFAR10/FashionMNIST hand a DataLoader: a PIL image and a label."""

    def __init__(self, split: Split, transform):
        self.images = split.inputs.permute(0, 2, 3, 1).numpy()  # HWC, as CIFAR stores it
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
                   device: torch.device, recipe: Recipe = PROTOCOL_RECIPE) -> float:
    """Seconds per step of forward + backward + the recipe's optimiser step (the protocol's SGD by
    default; its clipping and label smoothing too) on one resident batch."""
    opt = make_optimizer(model, recipe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    model.train()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
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

    def medians(self) -> tuple[float, float | None, float]:
        return (statistics.median(self.harness),
                statistics.median(self.reference) if self.reference else None,
                statistics.median(self.bound))


def throughput(bench: Bench, data: Dataset, norm, steps: int, workers: int = 4,
               speed: SpeedOptions | None = None) -> ThroughputResult:
    """The harness (with ``speed``, default: the device's defaults) vs the reference-style pipeline
    vs the bound (the same model, same speed options, one resident batch)."""
    arch, device, rounds, progress = bench.arch, bench.device, bench.rounds, bench.progress
    speed = speed or SpeedOptions()
    small = Dataset(data.spec, data.train.head(steps * BATCH), data.held_test.head(2 * BATCH),
                    data.mean, data.std, data.source)
    cnn = track_of(arch) == "cnn"
    # One epoch of the track's recipe (the protocol's SGD for CNNs), without its warm-up.
    recipe = replace(TRACK_RECIPES[track_of(arch)], epochs=1, batch_size=BATCH, warmup_epochs=0)
    torch.manual_seed(0)
    models = [build_model(arch, data.spec.num_classes, norm, inputs=data.spec.inputs()).to(device)
              for _ in range(3)]
    pipe = make_pipeline(data.spec, data.mean, data.std, device)
    x = pipe.test_batch(small.train.inputs[:BATCH].to(device))
    y = small.train.labels[:BATCH].to(device)
    loader = reference_loader(small, device, workers) if cnn else None
    bound = prepare(models[2], x, y, device, speed)
    x_bound = x.contiguous(memory_format=bound.memory_format) if x.dim() == 4 else x

    # Warm-up: allocator, kernels, thread pools, worker start-up paths, compilation.
    warm = train(models[0], small, recipe, device, 0, TrainOptions(speed=speed))
    bare_step_time(bound.model, x_bound, y, 2, device, recipe)
    result = ThroughputResult([], [], [], 0.0, warm.speed)
    for r in range(rounds):
        res = train(models[0], small, recipe, device, r + 1, TrainOptions(speed=speed))
        result.harness.append(len(small.train) / res.train_s)
        if loader is not None:
            result.reference.append(reference_epoch(models[1], loader, device))
        result.bound.append(BATCH / bare_step_time(bound.model, x_bound, y, steps, device, recipe))
        progress(f"round {r + 1}/{rounds}: harness {result.harness[-1]:8.1f} samples/s   "
                 + (f"reference {result.reference[-1]:8.1f} samples/s   " if loader else "")
                 + f"bound {result.bound[-1]:8.1f} samples/s")
    plan = EvalPlan.build(len(small.held_test), BATCH, seed=0)
    test_images = small.held_test.inputs[torch.as_tensor(plan.order)].to(device)
    test_labels = small.held_test.labels.to(device)
    synchronize(device)
    t0 = time.perf_counter()
    score(forward_plan(models[0], test_images, plan.batches, pipe.test_batch,
                       lambda: autocast(device, "fp32")), test_labels, plan)
    synchronize(device)
    result.eval_images_per_s = len(small.held_test) / (time.perf_counter() - t0)
    return result


def norm_costs(bench: Bench, norms: dict[str, Any], steps: int,
               compiled: bool) -> dict[str, dict[str, float | str | None]]:
    """Step time of the bare model with each norm relative to BatchNorm, eager (and compiled)."""
    arch, device, rounds, progress = bench.arch, bench.device, bench.rounds, bench.progress
    inputs = example_inputs(ARCHITECTURES[arch].takes[0])
    g = torch.Generator().manual_seed(0)
    x = (torch.randn((BATCH, *inputs.shape), generator=g) if inputs.kind == "image"  # normalised
         else random_inputs(inputs, BATCH, g)).to(device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    modes = ["eager"] + (["compiled"] if compiled else [])
    times: dict[tuple[str, str], list[float]] = {}
    models: dict[tuple[str, str], nn.Module] = {}
    errors: dict[tuple[str, str], str] = {}
    for name, cls in norms.items():
        for mode in modes:
            torch.manual_seed(0)
            model = build_model(arch, 10, cls, inputs=inputs).to(device)
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


def run(bench: Bench, norm_specs: list[str], steps: int, compiled: bool,
        workers: int = 4) -> dict[str, Any]:
    """``harness bench``: the throughput comparison, or with ``norm_specs`` each norm's step cost."""
    arch, dataset, device, rounds = bench.arch, bench.dataset, bench.device, bench.rounds
    from harness.protocol.entries import baseline_names
    from harness.vetting.submission import load

    data, source = dataset_or_random(dataset, bench.data_root)
    mismatch = compatibility_error(arch, data.spec.name)
    if mismatch:
        raise ValueError(mismatch)
    n_train, n_test = DATASETS[data.spec.name].sizes
    track = track_of(arch)
    out: dict[str, Any] = {"benchmark": "harness bench", "date": utc_now(), "arch": arch,
                           "dataset": data.spec.name, "data": source, "device": str(device),
                           "machine": machine(device), "batch_size": BATCH, "steps_per_round": steps,
                           "rounds": rounds, "reference_workers": workers}
    if not norm_specs:
        tp = throughput(bench, data, batch_norm_for(track), steps, workers,
                        SpeedOptions(compile=compiled))
        h, ref, b = tp.medians()
        epoch_s = n_train / h + n_test / tp.eval_images_per_s
        epochs = TRACK_RECIPES[track].epochs
        out.update({"track": track, "speed": tp.speed, "harness_images_per_s": tp.harness,
                    "reference_images_per_s": tp.reference,
                    "bound_images_per_s": tp.bound, "harness_median": h, "reference_median": ref,
                    "bound_median": b, "ratio_harness_over_reference": h / ref if ref else None,
                    "ratio_harness_over_bound": h / b, "eval_images_per_s": tp.eval_images_per_s,
                    "projected_200_epoch_s": 200 * epoch_s,
                    # A whole run of the track's recipe (200 epochs for CNNs), at these speeds.
                    "recipe_epochs": epochs, "projected_run_s": epochs * epoch_s})
        return out
    names = baseline_names() if norm_specs == ["all"] else norm_specs
    norms = {"batch_norm": batch_norm_for(track)}
    for spec in names:
        sub = load(spec)
        norms[sub.name] = sub.norm_class
    out["norm_costs"] = norm_costs(bench, norms, steps, compiled)
    return out
