"""An untrusted run, split as a competition platform splits ingestion from scoring.

The trusted parent (this module) loads the dataset and keeps the test labels. It starts two
sandboxed processes (:mod:`harness.execution.sandbox`, :mod:`harness.execution.worker`):

- the **training process** gets the training split alone. It trains under the protocol and, at
  the end of every epoch, hands over the model's weights and buffers (safetensors) and its own
  account of the epoch (train loss and accuracy, lr, time, the layer probe);
- the **scoring process** gets the test images in the order of the evaluation plan
  (:class:`harness.protocol.scoring.EvalPlan`), never a label. For each epoch the parent asks for, it loads
  the handed-over weights into its model and returns the logits.

From those logits and the labels only it holds, the parent computes the test loss, accuracy, the
batch check, the best epoch and the flags (:func:`harness.protocol.scoring.score`), and keeps them in its
own journal, which alone decides a resumed run's past epochs. Nothing either process writes or
prints is taken as a score: train numbers are labelled as the submission's own account
(``reported`` in the record), and a hand-over that is not what was asked for ends the run as
``malformed``. Both processes are watched together (:mod:`harness.execution.watch`): wall-clock time,
resident memory over their PID namespaces, threads, and the state folder's disk quota.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from harness.engine.device import usable_cpus
from harness.engine.train import EpochMetrics, should_stop, test_metrics
from harness.execution import handover
from harness.execution.exchange import Journal, give, private_dir, weights_limit, write_inputs
from harness.execution.sandbox import NOBODY, Limits, Sandbox, SandboxUnavailable, as_root
from harness.execution.task import crash_record, safe_label
from harness.execution.watch import CappedLog, Process, Watch
from harness.execution.watch import Limits as WatchLimits
from harness.protocol.data import Dataset, DatasetUnavailable, load_dataset, resolve_dataset_name
from harness.protocol.scoring import EvalPlan, score
from harness.store import schema
from harness.store.record import environment, new_run_id, utc_now

Echo = Callable[[str], None]
READY_S = 600.0  # the scoring process's start: imports, the submission, the model


@lru_cache(maxsize=4)
def _dataset(name: str, root: str | None, download: bool) -> Dataset:
    return load_dataset(name, root, download=download)


class Outcome(Exception):
    """How a split run ended when it did not end well: a record's failure."""

    def __init__(self, category: str, message: str, reported: bool = False, keep_state: bool = False):
        super().__init__(message)
        self.category, self.reported, self.keep_state = category, reported, keep_state


class SplitRun:
    """One untrusted run, split: its folders, its journal, its two sandboxed processes."""

    def __init__(self, task, store, env: dict[str, str], work_dir: Path, stem: str, isolation,
                 memory: int, threads: int, echo: Echo | None, beat: Callable[[], None] | None):
        from harness.engine.device import resolve_device

        c = self.config = task.spec
        self.task, self.isolation, self.echo = task, isolation, echo
        self.t_start = time.perf_counter()
        self.dataset_name = resolve_dataset_name(c.dataset)
        self.device = resolve_device(c.device)
        self.data = _dataset(self.dataset_name, c.data_root, c.download)
        self.train_split = self.data.train.head(c.limit_train)
        self.test_split = self.data.test.head(c.limit_test)
        self.plan = EvalPlan.build(len(self.test_split), c.recipe.test_batch_size, c.seed)
        self.identity = c.digest()
        self.state = store.root / "checkpoints" / "sandboxed" / self.identity
        self.exchange = self.state / "exchange"
        self.label = safe_label(task.extra.get("entry")
                           or Path(task.extra.get("submission_source") or c.submission).stem)
        self.journal = Journal.open(store.root / "checkpoints" / "journals" / f"{self.identity}.json",
                                    self.identity, self._new_run_id())
        if not c.resume:
            self.journal = Journal(self.journal.path, self.identity, self.journal.run_id, utc_now())
            shutil.rmtree(self.state, ignore_errors=True)
        self.limits = Limits(
            memory_bytes=memory, max_threads=64 + 4 * threads, file_bytes=isolation.disk_quota_bytes,
            cpu_seconds=int(isolation.timeout_s * max(1, threads)) + 60 if isolation.timeout_s else None,
            drop_to=NOBODY if as_root() and isolation.namespaces else None,
            namespaces=isolation.namespaces)
        self.watch = Watch(WatchLimits(timeout_s=isolation.timeout_s, memory_bytes=memory,
                                       max_threads=2 * self.limits.max_threads + 32,
                                       quota_dir=self.state, quota_bytes=isolation.disk_quota_bytes),
                           beat=beat)
        self.env, self.work_dir, self.stem, self.threads = env, work_dir, stem, threads
        self.inputs = {"train": private_dir("harness-train-"), "score": private_dir("harness-score-")}
        self.trainer: Process | None = None
        self.scorer: Process | None = None
        self.requests: int | None = None  # the pipe to the scoring process
        self.answers: handover.Channel | None = None  # and back
        self.end: schema.EndReport | None = None
        self.stopped_early: int | None = None

    def _new_run_id(self) -> str:
        c = self.config
        return new_run_id(self.label, c.arch, self.dataset_name, f"s{c.seed}")

    # -- the record, before and after ---------------------------------------------------------

    def record_head(self) -> dict[str, Any]:
        """What the record knows before anything runs, all of it from the parent's side."""
        from harness.engine.runner import record_start

        c = self.config
        data = Dataset(self.data.spec, self.train_split, self.test_split, self.data.mean,
                       self.data.std, self.data.source)
        record = record_start(
            c, data, str(self.device), run_id=self.journal.run_id,
            started_at=self.journal.started_at, resumes=self.journal.resumes,
            submission={"path": c.submission, "name": Path(c.submission).stem,
                        "sha256": self.task.spec.sha256, "class": "CustomNorm"},
            checks=self.task.checks,
            environment=environment(None) | {"device": str(self.device),
                                             "torch_threads": min(self.threads, usable_cpus())},
            isolation={"sandboxed": True,
                       "sandbox": "bubblewrap" if self.isolation.namespaces else "none",
                       "scored_by": "the harness, from the logits of a sandboxed scoring "
                                    "process that holds no labels"},
            reported=["epochs.train_loss", "epochs.train_acc", "epochs.lr", "model",
                      "norm_layers", "probes", "inference", "config.speed",
                      "environment.device_name", "checks"],
            compile_mode="eager", extra=self.task.extra)
        record["status"] = "failed"  # until the run says otherwise
        return record

    def record_tail(self, record: dict[str, Any]) -> dict[str, Any]:
        """Everything the record takes from the journal and the watch once the processes ended."""
        from harness.store.derived import finish_record

        c, journal, end = self.config, self.journal, self.end
        if record["failure"]:  # the sandbox's name of the file is not the user's
            shown = Path(self.task.extra.get("submission_source") or c.submission).name
            for key in ("message", "traceback", "log_tail"):
                if isinstance(record["failure"].get(key), str):
                    record["failure"][key] = (record["failure"][key]
                                              .replace("/in/submission.py", shown)
                                              .replace("submission.py:", f"{shown}:"))
        start = journal.start or {}
        train_s = sum(e["train_s"] for e in journal.epochs)
        record.update({
            "model": start.get("model"), "norm_layers": start.get("norm_layers"),
            "wall_s": time.perf_counter() - self.t_start,
            "train_s": train_s, "eval_s": sum(e["eval_s"] for e in journal.epochs),
            "train_images_per_s": (len(self.train_split) * len(journal.epochs) / train_s
                                   if train_s else None),
            "peak_memory": ({"kind": "cuda_max_allocated", "peak_memory_bytes": end.cuda_max_allocated}
                            if end is not None and end.cuda_max_allocated is not None else
                            {"kind": "sandbox_max_rss", "peak_memory_bytes": self.watch.peak_rss}),
            "peak_threads": self.watch.peak_threads,
            "stopped_early": self.stopped_early,
            "probes": journal.probes,
            "inference": {"mode": "eval", "batch_size": c.recipe.test_batch_size,
                          "median_ms": journal.inference_ms, "device": str(self.device),
                          "timer": "the scoring process's own"} if journal.inference_ms else None,
            "instruments": {"enabled": c.instruments, "probe_s": None, "probe_fraction": None},
            "ended_at": utc_now(),
        })
        if end is not None and isinstance(end.speed, dict):
            record["config"]["speed"] = end.speed
            record["config"]["compile"] = end.speed.get("compile", "eager")
        record["environment"]["device_name"] = start.get("device_name")
        finish_record(record, [{k: v for k, v in e.items() if k not in ("train_s", "eval_s")}
                               for e in journal.epochs])
        if record["status"] == "failed":  # this attempt's record; the run's id is for its result
            record["run_id"] = self._new_run_id()
        return record

    # -- the processes ------------------------------------------------------------------------

    def start(self) -> None:
        """The inputs written, the scoring process and the training process started."""
        self.state.mkdir(parents=True, exist_ok=True)
        self.exchange.mkdir(exist_ok=True)
        # A killed attempt's end and half-written files go; its unscored hand-overs stay (the
        # resumed training continues after them), and the journal says what is scored already.
        for stale in self.exchange.glob("*"):
            if stale.name == handover.END or stale.name.startswith("."):
                stale.unlink(missing_ok=True)
        give(self.state)
        write_inputs(self.task, self.inputs["train"], self.inputs["score"], self.train_split,
                      self.test_split, self.plan)
        c, data = self.config, self.data
        common = {"config": c.to_json(), "mean": list(data.mean), "std": list(data.std)}
        requests_r, self.requests = os.pipe()
        answers_r, answers_w = os.pipe()
        self.answers = handover.Channel(answers_r)
        # The scoring process sits idle between bursts of forward passes: glibc would hand its
        # activations' memory back to the system after each burst and fault it in again on the
        # next (2x slower forwards on a CPU). Keep it: the numbers do not change, only the speed.
        box = Sandbox(inputs=str(self.inputs["score"]), weights=str(self.exchange),
                      device=self.device.type, limits=self.limits,
                      env={**self.env, "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
                           "MALLOC_TRIM_THRESHOLD_": str(1 << 30)})
        try:
            self.scorer = self.watch.add(box.start({
                **common, "mode": "score", "submission": f"{box.inside('in')}/submission.py",
                "eval": f"{box.inside('in')}/eval.safetensors", "weights": box.inside("weights"),
                "batches": list(self.plan.batches), "num_classes": data.spec.num_classes,
                "dataset": {**asdict(data.spec), "name": self.dataset_name},
                "requests_fd": requests_r,
                "answers_fd": answers_w},
                CappedLog(self.work_dir / f"{self.stem}.score.log", self.echo,
                          "[score] " if self.echo else ""),
                (requests_r, answers_w)))
        finally:
            os.close(requests_r)
            os.close(answers_w)
        box = Sandbox(inputs=str(self.inputs["train"]), state=str(self.state),
                      device=self.device.type, env=self.env, limits=self.limits)
        self.trainer = self.watch.add(box.start({
            **common, "mode": "train", "submission": f"{box.inside('in')}/submission.py",
            "train": f"{box.inside('in')}/train.safetensors", "state": box.inside("state"),
            "identity": self.identity, "dataset": {**asdict(data.spec), "name": self.dataset_name}},
            CappedLog(self.work_dir / f"{self.stem}.log", self.echo)))
        ready = self.answers.line(time.monotonic() + READY_S)
        if ready != "ready":
            error = handover.ERROR.match(ready)
            raise Outcome(error.group(2) if error else "malformed",
                          error.group(3) if error else f"the scoring process said {ready[:80]!r}",
                          reported=bool(error))

    def score_epochs(self) -> bool:
        """Score each epoch the training process hands over, in order, into the journal; return
        whether the run is done (every epoch, or early stopping)."""
        c, journal, exchange = self.config, self.journal, self.exchange
        limit = weights_limit(c.arch, self.data.spec.num_classes, self.data.spec.inputs())
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
                if self.watch.killed_for:
                    raise self.killed()
                if not self.trainer.running() and not weights.exists():
                    return False
                time.sleep(handover.POLL_S)
                continue
            self.score_epoch(epoch, weights, limit)
            if should_stop([EpochMetrics(e["epoch"], 0, 0, 0, e["test_loss"], e["test_acc"], 0, 0)
                            for e in journal.epochs], c.recipe.early_stopping_patience):
                self.stopped_early = epoch
                return True
            epoch += 1
        return True

    def score_epoch(self, epoch: int, weights: Path, limit: int) -> None:
        report = handover.read_report(self.exchange / handover.report_name(epoch), schema.EpochReport)
        if report.epoch != epoch:
            raise handover.HandoverError(f"epoch {epoch}'s report is about epoch {report.epoch}")
        handover.check_weights(weights, limit)
        t0 = time.perf_counter()
        handover.send(self.requests, f"score {epoch}")
        logits, median = handover.read_logits(self.answers, epoch, self.plan.rows,
                                              self.data.spec.num_classes)
        values = torch.stack(score(logits, self.test_split.labels, self.plan).values()).tolist()
        spent = time.perf_counter() - t0
        m = test_metrics(EpochMetrics(epoch, report.lr, report.train_loss, report.train_acc, None,
                                      None, report.train_s, spent),
                         *values, n_test=len(self.test_split))
        self.journal.epochs.append({
            "epoch": epoch, "lr": m.lr, "train_loss": m.train_loss, "train_acc": m.train_acc,
            "test_loss": m.test_loss, "test_acc": m.test_acc, "epoch_s": m.train_s + spent,
            "check_change": m.check_change, "check_flips": m.check_flips,
            "train_s": m.train_s, "eval_s": spent})
        if report.probe is not None:
            self.journal.probes.append(report.probe.model_dump(exclude_none=True))
        self.journal.inference_ms = median
        self.journal.save()  # before the weights go: their going lets the training go on
        weights.unlink(missing_ok=True)
        (self.exchange / handover.report_name(epoch)).unlink(missing_ok=True)
        if self.echo:
            self.echo(f"epoch {epoch:>3}/{self.config.recipe.epochs}  train loss "
                      f"{_fmt(m.train_loss)} acc {m.train_acc:6.2f} (its own account)  "
                      f"test loss {m.test_loss:.4f} acc {m.test_acc:6.2f}")

    def outcome(self, done: bool) -> dict[str, Any]:
        """The record's status and failure from how the training process ended."""
        if done:
            self.trainer.finish(grace_s=60)
        else:
            self.trainer.wait()
        if self.watch.killed_for:
            raise self.killed()
        end_path = self.exchange / handover.END
        self.end = end = handover.read_report(end_path, schema.EndReport) if end_path.exists() else None
        scored, epochs = len(self.journal.epochs), self.config.recipe.epochs
        if done:
            return {"status": "ok"}
        if end is None:
            raise Outcome("crashed", f"the training process ended (exit code "
                                     f"{self.trainer.proc.returncode}) after {scored} of {epochs} "
                                     f"epochs without saying why; last line of its log: "
                                     f"{self.trainer.log.last_line()}", keep_state=True)
        if end.status == "diverged" and end.divergence and end.divergence.epoch == scored + 1:
            return {"status": "diverged", "failure": {
                "category": "diverged", "epoch": end.divergence.epoch, "step": end.divergence.step,
                "message": end.divergence.message, "reported": True}}
        if end.status == "failed" and end.failure is not None:
            raise Outcome(end.failure.category, end.failure.message, reported=True)
        raise handover.HandoverError(f"the training process said {end.status!r} after handing "
                                     f"over {scored} of {epochs} epochs")

    def killed(self) -> "Outcome":
        return Outcome(self.watch.category(), f"killed: {self.watch.detail}", keep_state=True)

    def close(self) -> None:
        if self.requests is not None:
            try:
                handover.send(self.requests, "quit")
            except OSError:
                pass
            os.close(self.requests)
        if self.scorer is not None:
            self.scorer.finish(grace_s=30)
        if self.trainer is not None and self.trainer.running():
            self.trainer.kill()
            self.trainer.wait()
        if self.answers is not None:
            os.close(self.answers.fd)
        self.watch.stop()
        for folder in self.inputs.values():
            shutil.rmtree(folder, ignore_errors=True)

    def discard(self) -> None:
        """Forget the run's state and journal: its record is its result now."""
        shutil.rmtree(self.state, ignore_errors=True)
        self.journal.remove()


def run_split(task, store, env: dict[str, str], work_dir: Path, stem: str, isolation,
              memory: int, threads: int, echo: Echo | None = None,
              beat: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``task`` (a harness.execution.local.Task of an untrusted file) split in two sandboxes; return
    its record (not yet written). A failure is recorded with its category; the state of a run
    that was killed or crashed is kept, so that the next attempt resumes it."""
    from harness.protocol.spec import RunError

    try:
        run = SplitRun(task, store, env, work_dir, stem, isolation, memory, threads, echo, beat)
    except (ValueError, RunError, DatasetUnavailable) as exc:
        return crash_record(task, "setup", str(exc))
    record = run.record_head()
    failure, keep_state = None, False
    try:
        run.start()
        record.update(run.outcome(run.score_epochs()))
    except Outcome as out:
        failure = {"category": out.category, "message": str(out)[:500],
                   "log_tail": run.trainer.log.tail() if run.trainer else None}
        if out.reported:
            failure["reported"] = True
        keep_state = out.keep_state
    except handover.ScoringFailed as exc:
        failure = {"category": exc.category, "message": f"scoring: {exc}"[:500], "reported": True}
    except (SandboxUnavailable, OSError) as exc:
        failure = {"category": "crashed", "message": f"could not run the sandbox: {exc}"[:500]}
        keep_state = True
    except handover.HandoverError as exc:
        if run.watch.killed_for:  # the pipe broke because the watch killed the process
            failure, keep_state = {"category": run.watch.category(),
                                   "message": f"killed: {run.watch.detail}"}, True
        else:
            failure = {"category": "malformed", "message": f"not kept as a result: {exc}"[:500]}
    finally:
        run.close()
    if failure is not None:
        record["failure"] = {**failure, "epoch": len(run.journal.epochs) + 1}
    record = run.record_tail(record)
    if not keep_state:
        run.discard()
    return record


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "nan"
