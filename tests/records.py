"""Fabricated, schema-complete run records for store, statistics and leaderboard tests."""

from __future__ import annotations

import secrets

from harness.protocol.recipe import PROTOCOL_VERSION
from harness.protocol.suites import load_suite
from harness.store.derived import curve_metrics
from harness.store.record import SCHEMA_VERSION


def make_record(entry: str, sha256: str, setting: str, seed: int, best: float | None, *,
                kind: str = "submission", status: str = "ok", suite: str = "smoke",
                final: bool = False, batch_dependent: bool = False, epochs: int = 3,
                version: int = SCHEMA_VERSION) -> dict:
    """A record of schema ``version`` (1: without the training-dynamics fields)."""
    s = load_suite(suite)
    arch, dataset = setting.split("-", 1)
    hidden = s.find(arch, dataset).hidden
    curve = [] if best is None else [
        {"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": best - 5 + e, "test_loss": 1.2 / e,
         "test_acc": best - (epochs - e), "epoch_s": 1.0} for e in range(1, epochs + 1)]
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in entry[:10])
    run_id = f"{safe}-{setting}-s{seed}-{secrets.token_hex(4)}"
    record = {
        "schema_version": version, "protocol_version": PROTOCOL_VERSION, "run_id": run_id,
        "status": status,
        "failure": None if status == "ok" else {
            "category": "diverged" if status == "diverged" else "exception",
            "message": f"{status} (fabricated)"},
        "comparable": False, "deviations": ["fabricated"],
        "config": {"arch": arch, "dataset": dataset, "num_classes": 10, "seed": seed,
                   "epochs": s.recipe.epochs, "batch_size": s.recipe.batch_size, "test_batch_size": 128,
                   "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
                   "schedule": "cosine", "limit_train": s.limit_train, "limit_test": s.limit_test,
                   "device": "cpu", "data_root": None},
        "submission": {"path": f"/x/{sha256}.py", "name": sha256, "sha256": sha256, "class": "CustomNorm"},
        "model": {"parameters": 1, "init_overwritten": []},
        "checks": [{"name": "eval-batch-independent", "status": "warn" if batch_dependent else "pass",
                    "detail": "", "fatal": False}],
        "data": {"train_size": 10, "test_size": 10, "mean": [0.5] * 3, "std": [0.2] * 3,
                 "train_sha256": "a" * 64, "test_sha256": "b" * 64},
        "environment": {"device": "cpu", "device_name": "test cpu", "torch": "x", "torchvision": "y",
                        "python": "3", "harness": "0", "git": None},
        "entry": entry, "entry_kind": kind,
        "suite": {**s.describe(), "setting": setting, "hidden": hidden, "final": final},
        "epochs": curve, "epochs_completed": len(curve), "best_acc": best,
        "best_epoch": epochs if best is not None else None, "final_acc": best, "wall_s": 1.0,
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:01+00:00",
    }
    if version >= 2:
        record.update(dynamics_fields(curve, seed))
    if version >= 3:
        record["evaluation"] = {"check_images": 5, "tolerance": 1e-3,
                                "max_change": 0.5 if batch_dependent else 0.0, "flips_at_max": 0,
                                "epoch_of_max": 1, "batch_dependent": batch_dependent}
    return record


def dynamics_fields(curve: list[dict], seed: int) -> dict:
    """Version-2 fields: probes with gradient norms that shrink with depth and norm outputs that are
    near-standardised, both a little different per seed."""
    layers = ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "fc"]
    probes = [{"epoch": e, "loss": 1.0 / e, "batch_images": 32,
               "grad_norms": {n: (1 + seed) * 0.1 / (i + 1) / e for i, n in enumerate(layers)},
               "activations": {n: {"mean": 0.01 * seed, "std": 1.0 - 0.01 * e}
                               for n in layers if "bn" in n}}
              for e in sorted({1, (len(curve) + 1) // 2, len(curve)}) if curve]
    return {"dynamics": curve_metrics(curve), "probes": probes, "stopped_early": None,
            "inference": {"mode": "eval", "batch_size": 128, "batches": 3,
                          "median_ms": 10.0 + seed, "throughput_images_per_s": 1000.0,
                          "timer": "perf_counter", "device": "cpu"},
            "norm_layers": {"class": "CustomNorm", "count": 2, "parameters": 64},
            "instruments": {"enabled": True, "probe_s": 0.01, "probe_fraction": 0.01},
            "peak_memory": {"kind": "process_max_rss", "peak_memory_bytes": (100 + seed) * 2**20}}


def register(store, folder, name: str, kind: str = "submission", suite: str = "smoke",
             final: bool = False) -> str:
    """A file of its own for entry ``name``, stored and registered; returns its sha256."""
    src = folder / f"{''.join(c if c.isalnum() else '_' for c in name)}.py"
    src.write_text(f"# {name}\nfrom torch import nn\nCustomNorm = nn.BatchNorm2d\n")
    _, sha = store.store_submission(src)
    store.register_entry(name, kind, sha, suite, final, str(src))
    return sha
