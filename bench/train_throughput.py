"""Training throughput of the harness against the bare model step, measured side by side.

    python bench/train_throughput.py --arch resnet20 --dataset cifar10 --json bench/results/cpu.json

(a) harness: ``harness.train.train`` for one epoch, data pipeline included (epoch draw, uint8
    gather, crop, flip, normalise, forward, backward, SGD, on-device metric accumulation);
(c) bound: forward + backward + SGD on one resident, already-normalised batch of 128.
The two alternate round by round in one process so that drift of the machine hits both; the
reported figure is the median over rounds, and the ratio harness/bound is what matters.

When the dataset's files are absent it uses random uint8 images of the real dataset's shape; the
epoch is cut to ``--train-images`` images (a whole CIFAR epoch is minutes on 2 CPU cores), which
changes nothing per image.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.data import (DATASETS, BatchPipeline, Dataset, DatasetUnavailable, ImageSplit,
                          load_dataset)
from harness.models import build_model
from harness.record import cpu_model, utc_now, write_json_atomic
from harness.runner import resolve_device
from harness.submission import load
from harness.train import Recipe, evaluate, synchronize, train

REAL_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "fmnist": (60_000, 10_000)}


def dataset_or_random(name: str, data_root: str | None) -> tuple[Dataset, str]:
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


def bare_steps(model, x, y, steps: int, device) -> float:
    """Seconds per step of forward + backward + SGD on one resident batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--dataset", default="cifar10", choices=sorted(REAL_SIZES))
    p.add_argument("--norm", default=None, help="submission file (default: BatchNorm2d)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--train-images", type=int, default=3840, help="images per measured epoch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    norm = load(args.norm).norm_class if args.norm else torch.nn.BatchNorm2d
    full, source = dataset_or_random(args.dataset, args.data_root)
    data = Dataset(full.spec, full.train.head(args.train_images), full.test.head(1024),
                   full.mean, full.std, full.source)
    bs = 128
    steps = -(-len(data.train) // bs)

    torch.manual_seed(0)
    harness_model = build_model(args.arch, data.spec.num_classes, norm)
    bare_model = build_model(args.arch, data.spec.num_classes, norm).to(device)
    pipe = BatchPipeline(data.mean, data.std, data.spec.channels, device)
    x = pipe.test_batch(data.train.images[:bs].to(device))
    y = data.train.labels[:bs].to(device)

    # Warm-up: allocator, kernels, thread pools.
    train(harness_model, data, Recipe(epochs=1), device, seed=0)
    bare_steps(bare_model, x, y, 3, device)

    harness_ips, bound_ips = [], []
    for r in range(args.rounds):
        res = train(harness_model, data, Recipe(epochs=1), device, seed=r + 1)
        harness_ips.append(len(data.train) / res.train_s)
        bound_ips.append(bs / bare_steps(bare_model, x, y, steps, device))
        print(f"round {r + 1}/{args.rounds}: harness {harness_ips[-1]:8.1f} img/s   "
              f"bound {bound_ips[-1]:8.1f} img/s", flush=True)

    synchronize(device)
    t0 = time.perf_counter()
    evaluate(harness_model, data.test.images.to(device), data.test.labels.to(device), pipe, 128)
    synchronize(device)
    eval_ips = len(data.test) / (time.perf_counter() - t0)

    h, b = statistics.median(harness_ips), statistics.median(bound_ips)
    n_train, n_test = REAL_SIZES[args.dataset]
    projected_s = 200 * (n_train / h + n_test / eval_ips)
    result = {
        "benchmark": "train_throughput",
        "date": utc_now(),
        "arch": args.arch, "dataset": args.dataset, "data": source, "norm": args.norm or "BatchNorm2d",
        "device": str(device),
        "machine": {
            "description": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else f"{cpu_model()}, {torch.get_num_threads()} torch threads"),
            "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
        },
        "batch_size": bs, "images_per_epoch": len(data.train), "rounds": args.rounds,
        "harness_images_per_s": harness_ips, "bound_images_per_s": bound_ips,
        "harness_median": h, "bound_median": b, "ratio_harness_over_bound": h / b,
        "eval_images_per_s": eval_ips,
        "projected_200_epoch_s": projected_s,
    }
    print(f"\n{args.arch} on {args.dataset} ({source} data), {device}: harness {h:.1f} img/s, "
          f"bare-model bound {b:.1f} img/s, ratio {h / b:.3f}; projected 200-epoch run "
          f"{projected_s / 3600:.1f} h")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
