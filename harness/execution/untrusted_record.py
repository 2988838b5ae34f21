"""The record of an untrusted run (:mod:`harness.execution.untrusted`): what the parent knows before
anything runs, and what it takes from its own journal and watch once the processes ended. Every
score in it is the parent's; what the sandboxed processes said of themselves is listed in the
record's ``reported``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.data.tensors import Dataset
from harness.engine.device import usable_cpus
from harness.store.record import environment, utc_now


def record_head(run) -> dict[str, Any]:
    """What the record knows before anything runs, all of it from the parent's side."""
    from harness.engine.runner import RunIdentity, record_start

    spec = run.spec
    data = Dataset(run.data.spec, run.train_split, run.test_split, run.data.mean,
                   run.data.std, run.data.source)
    journal = run.journal
    identity = RunIdentity(journal.run_id, journal.started_at, tuple(journal.resumes))
    record = record_start(spec, data, str(run.device), identity, {
        "submission": {"path": spec.submission, "name": Path(spec.submission).stem,
                       "sha256": run.task.spec.sha256, "class": "CustomNorm"},
        "checks": run.task.checks,
        "environment": environment(None) | {"device": str(run.device),
                                            "torch_threads": min(run.threads, usable_cpus())},
        "isolation": {"sandboxed": True,
                      "sandbox": "bubblewrap" if run.isolation.namespaces else "none",
                      "scored_by": "the harness, from the logits of sandboxed scoring processes "
                                   "that hold no labels (the batch check's in a process of its "
                                   "own)"},
        "reported": ["epochs.train_loss", "epochs.train_acc", "epochs.lr", "model",
                     "norm_layers", "probes", "inference", "config.speed",
                     "environment.device_name", "checks"]}, "eager", run.task.extra)
    record["status"] = "failed"  # until the run says otherwise
    return record

def record_tail(run, record: dict[str, Any]) -> dict[str, Any]:
    """Everything the record takes from the journal and the watch once the processes ended."""
    from harness.store.derived import finish_record

    spec, journal, end = run.spec, run.journal, run.end
    if record["failure"]:  # the sandbox's name of the file is not the user's
        shown = Path(run.task.extra.get("submission_source") or spec.submission).name
        for key in ("message", "traceback", "log_tail"):
            if isinstance(record["failure"].get(key), str):
                record["failure"][key] = (record["failure"][key]
                                          .replace("/in/submission.py", shown)
                                          .replace("submission.py:", f"{shown}:"))
    start = journal.start or {}
    train_s = sum(e["train_s"] for e in journal.epochs)
    record.update({
        "model": start.get("model"), "norm_layers": start.get("norm_layers"),
        "wall_s": time.perf_counter() - run.t_start,
        "train_s": train_s, "eval_s": sum(e["eval_s"] for e in journal.epochs),
        "train_images_per_s": (len(run.train_split) * len(journal.epochs) / train_s
                               if train_s else None),
        "peak_memory": ({"kind": "cuda_max_allocated", "peak_memory_bytes": end.cuda_max_allocated}
                        if end is not None and end.cuda_max_allocated is not None else
                        {"kind": "sandbox_max_rss", "peak_memory_bytes": run.watch.peak_rss}),
        "peak_threads": run.watch.peak_threads,
        "stopped_early": run.journal.stopped_early,
        "probes": journal.probes,
        "inference": {"mode": "eval", "batch_size": spec.recipe.test_batch_size,
                      "median_ms": journal.inference_ms, "device": str(run.device),
                      "timer": "the scoring process's own"} if journal.inference_ms else None,
        "instruments": {"enabled": spec.instruments, "probe_s": None, "probe_fraction": None},
        "ended_at": utc_now(),
    })
    if end is not None and isinstance(end.speed, dict):
        record["config"]["speed"] = end.speed
        record["config"]["compile"] = str(end.speed.get("compile", "eager"))[:200]
    record["environment"]["device_name"] = start.get("device_name")
    finish_record(record, [{k: v for k, v in e.items() if k not in ("train_s", "eval_s")}
                           for e in journal.epochs])
    if record["status"] == "failed":  # this attempt's record; the run's id is for its result
        record["run_id"] = run.new_run_id()
    return record
