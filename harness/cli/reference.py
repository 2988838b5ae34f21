"""The reference script's command line (``python custom_norm.py --arch A --dataset D --seed S``).

It accepts the reference's flags and hands over to ``harness eval`` on the calling file, so the
output (TRAIN_METRICS / TEST_METRICS lines), the run record and the exit codes are the same.
"""

from __future__ import annotations

import argparse

from harness.protocol.catalog import ARCHITECTURES, DATASET_ALIASES, DATASETS
from harness.protocol.recipe import PROTOCOL_RECIPE


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train this file's CustomNorm under the reference protocol "
                                            "(same flags as the reference benchmark's script).")
    p.add_argument("--arch", required=True,
                   choices=[a for a, info in ARCHITECTURES.items() if info.track == "cnn"])
    p.add_argument("--dataset", required=True,
                   choices=[d for d, s in DATASETS.items() if s.kind == "image"] + list(DATASET_ALIASES))
    p.add_argument("--data-root", default=None,
                   help="dataset folder (default: $HARNESS_DATA, else ~/.cache/harness/data)")
    p.add_argument("--epochs", type=int, default=PROTOCOL_RECIPE.epochs)
    p.add_argument("--batch-size", type=int, default=PROTOCOL_RECIPE.batch_size)
    p.add_argument("--lr", type=float, default=PROTOCOL_RECIPE.lr)
    p.add_argument("--momentum", type=float, default=PROTOCOL_RECIPE.momentum)
    p.add_argument("--weight-decay", type=float, default=PROTOCOL_RECIPE.weight_decay)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", default="results", help="results folder (run records)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (harness addition)")
    p.add_argument("--allow-hidden", action="store_true",
                   help="allow a setting that a suite keeps hidden, as `harness eval` does "
                        "(harness addition; do not tune on it)")
    return p


def eval_argv(submission_path: str, argv: list[str] | None = None) -> list[str]:
    """The ``harness eval`` command line the reference's flags stand for."""
    args = parser().parse_args(argv)
    out = ["eval", submission_path, "--arch", args.arch, "--dataset", args.dataset,
           "--seed", str(args.seed), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--lr", repr(args.lr),
           "--momentum", repr(args.momentum), "--weight-decay", repr(args.weight_decay),
           "--results", args.output_dir, "--device", args.device]
    if args.data_root:
        out += ["--data-root", args.data_root]
    if args.allow_hidden:
        out.append("--allow-hidden")
    return out


def main(submission_path: str, argv: list[str] | None = None) -> None:
    from harness.cli import main as harness_main

    harness_main(eval_argv(submission_path, argv), prog_name="custom_norm.py")
