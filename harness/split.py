"""An untrusted run, split as a competition platform splits ingestion from scoring.

The trusted parent (this module) loads the dataset and keeps the test labels. It starts two
sandboxed processes (:mod:`harness.sandbox`, :mod:`harness.worker`):

- the **training process** gets the training split alone. It trains under the protocol and, at
  the end of every epoch, hands over the model's weights and buffers (safetensors) and its own
  account of the epoch (train loss and accuracy, lr, time, the layer probe);
- the **scoring process** gets the test images in the order of the evaluation plan
  (:class:`harness.scoring.EvalPlan`), never a label. For each epoch the parent asks for, it loads
  the handed-over weights into its model and returns the logits.

From those logits and the labels only it holds, the parent computes the test loss, accuracy, the
batch check, the best epoch and the flags (:func:`harness.scoring.score`), and keeps them in its
own journal, which alone decides a resumed run's past epochs. Nothing either process writes or
prints is taken as a score: train numbers are labelled as the submission's own account
(``reported`` in the record), and a hand-over that is not what was asked for ends the run as
``malformed``. Both processes are watched together (:mod:`harness.watch`): wall-clock time,
resident memory over their PID namespaces, threads, and the state folder's disk quota.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from harness import handover, schema
from harness.checkpoint import run_identity
from harness.data import DATASETS, Dataset, DatasetUnavailable, load_dataset, resolve_dataset_name
from harness.record import environment, new_run_id, utc_now, write_json_atomic
from harness.sandbox import NOBODY, Limits, Sandbox, SandboxUnavailable, as_root
from harness.scoring import EvalPlan, score
from harness.train import should_stop, test_metrics, EpochMetrics
from harness.watch import CappedLog, Limits as WatchLimits, Process, Watch

Echo = Callable[[str], None]
READY_S = 600.0  # the scoring process's start: imports, the submission, the model


@lru_cache(maxsize=4)
def _dataset(name: str, root: str | None, download: bool) -> Dataset:
    return load_dataset(name, root, download=download)


def weights_limit(arch: str, num_classes: int) -> int:
    """The largest weights file a model of ``arch`` may hand over: four times its BatchNorm
    version's state (a layer may keep more state than BatchNorm, not orders of magnitude more)."""
    from torch import nn

    from harness.models import ARCHS

    with torch.device("meta"):
        model = ARCHS[arch].build(num_classes, nn.BatchNorm2d)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 4 * size + (64 << 20)


@dataclass
class Journal:
    """The parent's own record of a run's scored epochs, kept across attempts (resume)."""

    path: Path
    identity: str
    run_id: str
    started_at: str
    resumes: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    inference_ms: float | None = None
    start: dict | None = None

    @classmethod
    def open(cls, path: Path, identity: str, run_id: str) -> "Journal":
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("identity") == identity:
                journal = cls(path, identity, data["run_id"], data["started_at"], data["resumes"],
                              data["epochs"], data["probes"], data.get("inference_ms"),
                              data.get("start"))
                if journal.epochs:
                    journal.resumes.append({"from_epoch": len(journal.epochs), "at": utc_now()})
                return journal
        except (OSError, ValueError, KeyError):
            pass
        return cls(path, identity, run_id, utc_now())

    def save(self) -> None:
        write_json_atomic(self.path, {
            "identity": self.identity, "run_id": self.run_id, "started_at": self.started_at,
            "resumes": self.resumes, "epochs": self.epochs, "probes": self.probes,
            "inference_ms": self.inference_ms, "start": self.start})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # readable by the sandbox's unprivileged user
    return path


def _give(path: Path) -> None:
    """Make ``path`` (and what is in it) the sandbox user's, when the harness runs as root."""
    if not as_root():
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), NOBODY, NOBODY)
    os.chown(path, NOBODY, NOBODY)


class Outcome(Exception):
    """How a split run ended when it did not end well: a record's failure."""

    def __init__(self, category: str, message: str, reported: bool = False, keep_state: bool = False):
        super().__init__(message)
        self.category, self.reported, self.keep_state = category, reported, keep_state


def run_split(task, store, env: dict[str, str], work_dir: Path, stem: str, isolation,
              memory: int, threads: int, echo: Echo | None = None,
              beat: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``task`` (a harness.executors.Task of an untrusted file) split in two sandboxes; return
    its record (not yet written)."""
    from harness.executors import crash_record
    from harness.runner import (PROTOCOL_VERSION, config_fields, deviations, finish_record,
                                resolve_device, RunError)

    c = task.config
    t_start = time.perf_counter()
    try:
        dataset_name = resolve_dataset_name(c.dataset)
        device = resolve_device(c.device)
        full = _dataset(dataset_name, c.data_root, c.download)
    except (ValueError, RunError, DatasetUnavailable) as exc:
        return crash_record(task, "setup", str(exc))
    train_split, test_split = full.train.head(c.limit_train), full.test.head(c.limit_test)
    identity = run_identity(task.sha256, c, dataset_name, PROTOCOL_VERSION)
    state = store.root / "checkpoints" / "sandboxed" / identity
    exchange = state / "exchange"
    label = task.extra.get("entry") or Path(task.extra.get("submission_source") or c.submission).stem
    journal = Journal.open(store.root / "checkpoints" / "journals" / f"{identity}.json", identity,
                           new_run_id(_safe(label), c.arch, dataset_name, f"s{c.seed}"))
    if not c.resume:
        journal = Journal(journal.path, identity, journal.run_id, utc_now())
        shutil.rmtree(state, ignore_errors=True)
    plan = EvalPlan.build(len(test_split), c.recipe.test_batch_size, c.seed)
    num_classes = full.spec.num_classes
    wall_timeout = isolation.timeout_s

    record: dict[str, Any] = {
        "schema_version": 3, "protocol_version": PROTOCOL_VERSION, "run_id": journal.run_id,
        "status": "failed", "failure": None, "comparable": True, "deviations": [],
        "config": {**config_fields(c, dataset_name), "num_classes": num_classes,
                   "device": str(device), "compile": "eager", "speed": None,
                   "data_root": None if dataset_name in ("digits", "noise") else str(full.source)},
        "submission": {"path": c.submission, "name": Path(c.submission).stem, "sha256": task.sha256,
                       "class": "CustomNorm"},
        "checks": task.checks,
        "data": {"train_size": len(train_split), "test_size": len(test_split),
                 "mean": list(full.mean), "std": list(full.std),
                 "train_sha256": train_split.sha256(), "test_sha256": test_split.sha256()},
        "environment": environment(None) | {"device": str(device)},
        "started_at": journal.started_at, "resumes": journal.resumes,
        "isolation": {"sandboxed": True, "sandbox": "bubblewrap" if isolation.namespaces else "none",
                      "scored_by": "the harness, from the logits of a sandboxed scoring process "
                                   "that holds no labels"},
        "reported": ["epochs.train_loss", "epochs.train_acc", "epochs.lr", "model", "norm_layers",
                     "probes", "inference", "config.speed", "environment.device_name"],
        **task.extra,
    }
    record["deviations"] = deviations(c, DATASETS[dataset_name])
    record["comparable"] = not record["deviations"]

    stopped_early = None
    end: schema.EndReport | None = None
    state.mkdir(parents=True, exist_ok=True)
    exchange.mkdir(exist_ok=True)
    # A killed attempt's end and half-written files go; its unscored hand-overs stay (the resumed
    # training continues after them), and the journal decides which epochs are scored already.
    for stale in exchange.glob("*"):
        if stale.name == handover.END or stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    _give(state)
    train_in, score_in = _private_dir("harness-train-"), _private_dir("harness-score-")
    watch = Watch(WatchLimits(timeout_s=wall_timeout, memory_bytes=memory,
                              max_threads=2 * (64 + 4 * threads) + 32,
                              quota_dir=state, quota_bytes=isolation.disk_quota_bytes), beat=beat)
    trainer = scorer = None
    requests_w = answers = None
    try:
        _write_inputs(task, train_in, score_in, train_split, test_split, plan)
        limits = Limits(memory_bytes=memory,
                        cpu_seconds=int(wall_timeout * max(1, threads)) + 60 if wall_timeout else None,
                        max_threads=64 + 4 * threads, file_bytes=isolation.disk_quota_bytes,
                        drop_to=NOBODY if as_root() and isolation.namespaces else None,
                        namespaces=isolation.namespaces)
        common = {"config": _config_json(c), "mean": list(full.mean), "std": list(full.std)}
        requests_r, requests_w = os.pipe()
        answers_r, answers_w = os.pipe()
        # The scoring process sits idle between bursts of forward passes: glibc would hand its
        # activations' memory back to the system after each burst and fault it in again on the
        # next (2x slower forwards on a CPU). Keep it: the numbers do not change, only the speed.
        box = Sandbox(inputs=str(score_in), weights=str(exchange), device=device.type,
                      env={**env, "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
                           "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}, limits=limits)
        scorer = watch.add(box.start({
            **common, "mode": "score", "submission": f"{box.inside('in')}/submission.py",
            "eval": f"{box.inside('in')}/eval.safetensors", "weights": box.inside("weights"),
            "batches": list(plan.batches), "num_classes": num_classes,
            "channels": full.spec.channels, "requests_fd": requests_r, "answers_fd": answers_w},
            CappedLog(work_dir / f"{stem}.score.log", echo, "[score] " if echo else ""),
            (requests_r, answers_w)))
        os.close(requests_r)
        os.close(answers_w)
        box = Sandbox(inputs=str(train_in), state=str(state), device=device.type, env=env,
                      limits=limits)
        trainer = watch.add(box.start({
            **common, "mode": "train", "submission": f"{box.inside('in')}/submission.py",
            "train": f"{box.inside('in')}/train.safetensors", "state": box.inside("state"),
            "identity": identity, "dataset": _spec_json(full, dataset_name)},
            CappedLog(work_dir / f"{stem}.log", echo)))
        answers = handover.Channel(answers_r)
        ready = answers.line(time.monotonic() + READY_S)
        if ready != "ready":
            error = handover.ERROR.match(ready)
            raise Outcome(error.group(2) if error else "malformed",
                          error.group(3) if error else f"the scoring process said {ready[:80]!r}",
                          reported=bool(error))
        limit = weights_limit(c.arch, num_classes)
        test_labels = test_split.labels
        epoch = len(journal.epochs) + 1
        while epoch <= c.recipe.epochs:
            weights = exchange / handover.weights_name(epoch)
            for stale in exchange.glob("epoch-*.safetensors"):  # re-trained after a resume
                if stale.name < weights.name:
                    stale.unlink(missing_ok=True)
                    (exchange / stale.name.replace(".safetensors", ".json")).unlink(missing_ok=True)
            if journal.start is None and (exchange / handover.START).exists():
                journal.start = handover.read_report(exchange / handover.START,
                                                     schema.StartReport).model_dump(by_alias=True)
            if not weights.exists():
                if watch.killed_for:
                    raise Outcome(_category(watch.killed_for), _killed(watch), keep_state=True)
                if not trainer.running() and not weights.exists():
                    break
                time.sleep(handover.POLL_S)
                continue
            report = handover.read_report(exchange / handover.report_name(epoch), schema.EpochReport)
            if report.epoch != epoch:
                raise handover.HandoverError(f"epoch {epoch}'s report is about epoch {report.epoch}")
            handover.check_weights(weights, limit)
            t0 = time.perf_counter()
            handover.send(requests_w, f"score {epoch}")
            logits, median = handover.read_logits(answers, epoch, plan.rows, num_classes)
            values = torch.stack(score(logits, test_labels, plan).values()).tolist()
            spent = time.perf_counter() - t0
            metrics = test_metrics(EpochMetrics(epoch, report.lr, report.train_loss, report.train_acc,
                                                None, None, report.train_s, spent),
                                   *values, n_test=len(test_split))
            journal.epochs.append({
                "epoch": epoch, "lr": report.lr, "train_loss": report.train_loss,
                "train_acc": report.train_acc, "test_loss": metrics.test_loss,
                "test_acc": metrics.test_acc, "epoch_s": report.train_s + spent,
                "check_change": metrics.check_change, "check_flips": metrics.check_flips,
                "train_s": report.train_s, "eval_s": spent})
            if report.probe is not None:
                journal.probes.append(report.probe.model_dump(exclude_none=True))
            journal.inference_ms = median
            journal.save()
            weights.unlink(missing_ok=True)
            (exchange / handover.report_name(epoch)).unlink(missing_ok=True)
            if echo:
                echo(f"epoch {epoch:>3}/{c.recipe.epochs}  train loss "
                     f"{_fmt(report.train_loss)} acc {report.train_acc:6.2f} (its own account)  "
                     f"test loss {metrics.test_loss:.4f} acc {metrics.test_acc:6.2f}")
            if should_stop([EpochMetrics(e["epoch"], 0, 0, 0, e["test_loss"], e["test_acc"], 0, 0)
                            for e in journal.epochs], c.recipe.early_stopping_patience):
                stopped_early = epoch
                break
            epoch += 1
        done = len(journal.epochs) == c.recipe.epochs or stopped_early is not None
        if done:
            _finish(trainer, grace_s=60)
        else:
            trainer.wait()
        if watch.killed_for:
            raise Outcome(_category(watch.killed_for), _killed(watch), keep_state=True)
        end_path = exchange / handover.END
        end = handover.read_report(end_path, schema.EndReport) if end_path.exists() else None
        if done:
            record["status"] = "ok"
        elif end is None:
            raise Outcome("crashed", f"the training process ended (exit code "
                                     f"{trainer.proc.returncode}) after {len(journal.epochs)} of "
                                     f"{c.recipe.epochs} epochs without saying why; last line of "
                                     f"its log: {_last_line(trainer.log)}", keep_state=True)
        elif end.status == "diverged" and end.divergence and end.divergence.epoch == epoch:
            record["status"] = "diverged"
            record["failure"] = {"category": "diverged", "epoch": end.divergence.epoch,
                                 "step": end.divergence.step, "message": end.divergence.message,
                                 "reported": True}
        elif end.status == "failed" and end.failure is not None:
            raise Outcome(end.failure.category, end.failure.message, reported=True)
        else:
            raise handover.HandoverError(
                f"the training process said {end.status!r} after handing over "
                f"{len(journal.epochs)} of {c.recipe.epochs} epochs")
    except Outcome as out:
        record["failure"] = {"category": out.category, "message": str(out)[:500],
                             "epoch": len(journal.epochs) + 1,
                             "log_tail": trainer.log.tail() if trainer else None}
        if out.reported:
            record["failure"]["reported"] = True
        if not out.keep_state:
            _discard(state, journal)
    except handover.ScoringFailed as exc:
        record["failure"] = {"category": exc.category, "message": f"scoring: {exc}"[:500],
                             "epoch": len(journal.epochs) + 1, "reported": True}
        _discard(state, journal)
    except (SandboxUnavailable, OSError) as exc:
        record["failure"] = {"category": "crashed", "epoch": len(journal.epochs) + 1,
                             "message": f"could not run the sandbox: {exc}"[:500]}
    except handover.HandoverError as exc:
        if watch.killed_for:  # the pipe broke because the watch killed it
            record["failure"] = {"category": _category(watch.killed_for), "message": _killed(watch),
                                 "epoch": len(journal.epochs) + 1}
        else:
            record["failure"] = {"category": "malformed", "epoch": len(journal.epochs) + 1,
                                 "message": f"not kept as a result: {exc}"[:500]}
            _discard(state, journal)
    finally:
        for fd in (requests_w,):
            if fd is not None:
                try:
                    handover.send(fd, "quit")
                except OSError:
                    pass
                os.close(fd)
        if scorer is not None:
            _finish(scorer, grace_s=30)
        if trainer is not None and trainer.running():
            trainer.kill()
            trainer.wait()
        if answers is not None:
            os.close(answers.fd)
        watch.stop()
        shutil.rmtree(train_in, ignore_errors=True)
        shutil.rmtree(score_in, ignore_errors=True)

    if record["failure"]:  # the sandbox's name of the file is not the user's
        shown = Path(task.extra.get("submission_source") or c.submission).name
        for key in ("message", "traceback", "log_tail"):
            if isinstance(record["failure"].get(key), str):
                record["failure"][key] = record["failure"][key].replace("/in/submission.py", shown) \
                    .replace("submission.py:", f"{shown}:")
    start = journal.start or {}
    record.update({
        "model": start.get("model"), "norm_layers": start.get("norm_layers"),
        "wall_s": time.perf_counter() - t_start,
        "train_s": sum(e.get("train_s") or 0.0 for e in journal.epochs),
        "eval_s": sum(e.get("eval_s") or 0.0 for e in journal.epochs),
        "peak_memory": ({"kind": "cuda_max_allocated", "peak_memory_bytes": end.cuda_max_allocated}
                        if end is not None and end.cuda_max_allocated is not None else
                        {"kind": "sandbox_max_rss", "peak_memory_bytes": watch.peak_rss}),
        "peak_threads": watch.peak_threads,
        "stopped_early": stopped_early,
        "probes": journal.probes,
        "inference": {"mode": "eval", "batch_size": c.recipe.test_batch_size,
                      "median_ms": journal.inference_ms, "device": str(device),
                      "timer": "the scoring process's own"} if journal.inference_ms else None,
        "instruments": {"enabled": c.instruments, "probe_s": None, "probe_fraction": None},
        "ended_at": utc_now(),
    })
    train_s = record["train_s"]
    record["train_images_per_s"] = len(train_split) * len(journal.epochs) / train_s if train_s else None
    if end is not None and end.speed:
        record["config"]["speed"] = end.speed
        record["config"]["compile"] = (end.speed or {}).get("compile", "eager") \
            if isinstance(end.speed, dict) else "eager"
    record["environment"]["device_name"] = start.get("device_name")
    rows = [{k: v for k, v in e.items() if k not in ("train_s", "eval_s")} for e in journal.epochs]
    finish_record(record, rows)
    if record["status"] == "failed":  # this attempt's record; the run's own id is kept for its result
        record["run_id"] = new_run_id(_safe(label), c.arch, dataset_name, f"s{c.seed}")
    if record["status"] != "failed":
        _discard(state, journal)
    return record


def _safe(label: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40] or "run"


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "nan"


def _category(killed_for: str) -> str:
    return {"timeout": "timeout", "out-of-memory": "out-of-memory"}.get(killed_for, "resource-limit")


def _killed(watch: Watch) -> str:
    return f"killed: {watch.detail}"


def _last_line(log: CappedLog) -> str:
    return next((ln for ln in reversed(log.tail().splitlines()) if ln.strip()), "no output")


def _discard(state: Path, journal: Journal) -> None:
    shutil.rmtree(state, ignore_errors=True)
    journal.remove()


def _finish(process: Process, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while process.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.running():
        process.kill()
    process.wait()


def _config_json(config) -> dict:
    from harness.runner import config_to_json

    return config_to_json(config)


def _spec_json(data: Dataset, name: str) -> dict:
    from dataclasses import asdict

    return {**asdict(data.spec), "name": name}


def _write_inputs(task, train_in: Path, score_in: Path, train_split, test_split, plan) -> None:
    """The training process's inputs (the submission and the training split) and the scoring
    process's (the submission and the plan's test images; no labels), each in its own folder."""
    from safetensors.torch import save_file

    source = Path(task.config.submission).read_bytes()
    for folder in (train_in, score_in):
        (folder / "submission.py").write_bytes(source)
    save_file({"images": train_split.images.contiguous(), "labels": train_split.labels.contiguous()},
              str(train_in / "train.safetensors"))
    save_file({"images": test_split.images[torch.as_tensor(plan.order)].contiguous()},
              str(score_in / "eval.safetensors"))
    for folder in (train_in, score_in):
        for path in folder.iterdir():
            path.chmod(0o644)  # safetensors writes 0600; the sandbox's user must read them
