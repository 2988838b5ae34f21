"""An untrusted run, split as a competition platform splits ingestion from scoring.

The trusted parent (this module) loads the dataset and keeps the test labels. It starts three
sandboxed processes (:mod:`harness.execution.sandbox`, :mod:`harness.execution.worker`): the
**training process** gets the training split alone and, at the end of every epoch, sends its
weights (safetensors), its own account of the epoch and its checkpoint through a pipe
(:mod:`harness.execution.handover`); the **scoring process** gets the protocol batches' test
images and the **check scoring process** the batch check's (:meth:`EvalPlan.feed`: apart, so
that nothing a layer remembers of one batching can make the other agree), never a label; each
turns an epoch's weights into logits.

From those logits and the labels only it holds, the parent computes the test loss, accuracy, the
batch check, the best epoch and the flags (:func:`harness.protocol.scoring.score`) into its own
journal, which alone decides a resumed run's past epochs. Train numbers are labelled as the
submission's own account (``reported``); a hand-over that is not what was asked for ends the
run as ``malformed``. What a sandbox writes dies with it (tmpfs): the parent never reads,
follows, cleans, re-owns or mounts a path a sandbox could have written. The checkpoint arrives
as bytes, is kept in ``RESULTS/checkpoints/untrusted/`` (only the parent writes there) and comes
back read-only in the next attempt's ``/in``. The processes are watched together
(:mod:`harness.execution.watch`): wall-clock time, resident memory, threads.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import traceback
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from harness.data.tensors import Dataset, DatasetUnavailable, load_dataset, resolve_dataset_name
from harness.engine.train import EpochMetrics, should_stop, test_metrics
from harness.execution import handover, scorers
from harness.execution.exchange import (
    Journal,
    checkpoint_limit,
    private_dir,
    weights_limit,
    write_inputs,
)
from harness.execution.sandbox import NOBODY, Sandbox, SandboxLimits, SandboxUnavailable, as_root
from harness.execution.task import Slot, crash_record, safe_label
from harness.execution.untrusted_record import record_head, record_tail
from harness.execution.watch import STOPPING, CappedLog, Process, Watch, WatchLimits, started
from harness.protocol.scoring import EvalPlan, score
from harness.reporting import epoch_line, metrics_line
from harness.store import schema
from harness.store.record import new_run_id, utc_now


@lru_cache(maxsize=4)
def _dataset(name: str, root: str | None, download: bool) -> Dataset:
    return load_dataset(name, root, download=download)


class Outcome(Exception):
    """How an untrusted run ended when it did not end well: a record's failure."""

    def __init__(self, category: str, message: str, reported: bool = False, keep_state: bool = False):
        super().__init__(message)
        self.category, self.reported, self.keep_state = category, reported, keep_state


class UntrustedRun:
    """One untrusted run, split: its folders, its journal, its three sandboxed processes."""

    def __init__(self, task, slot: Slot):
        from harness.engine.device import resolve_device

        store, isolation, memory, threads = slot.store, slot.isolation, slot.memory, slot.threads
        spec = self.spec = task.spec
        self.task, self.isolation, self.echo = task, isolation, slot.echo
        self.t_start = time.perf_counter()
        self.dataset_name = resolve_dataset_name(spec.dataset)
        self.device = resolve_device(spec.device)
        self.data = _dataset(self.dataset_name, spec.data_root, spec.download)
        self.train_split = self.data.train.head(spec.limit_train)
        self.test_split = self.data.held_test.head(spec.limit_test)
        self.plan = EvalPlan.build(len(self.test_split), spec.recipe.test_batch_size, spec.seed)
        self.identity = spec.digest()
        kept = store.root / "checkpoints"
        self.checkpoint = kept / "untrusted" / f"{self.identity}.pt"  # bytes the parent wrote
        self.label = safe_label(task.extra.get("entry")
                                or Path(task.extra.get("submission_source") or spec.submission).stem)
        self.journal = Journal.open(kept / "journals" / f"{self.identity}.json",
                                    self.identity, self.new_run_id())
        if not spec.resume:
            self.journal = Journal(self.journal.path, self.identity, self.journal.run_id, utc_now())
            self.checkpoint.unlink(missing_ok=True)
        drop = NOBODY if as_root() and isolation.namespaces else None
        cpu_s = int(isolation.timeout_s * max(1, threads)) + 60 if isolation.timeout_s else None
        self.limits = SandboxLimits(memory_bytes=memory, max_threads=64 + 4 * threads,
                             file_bytes=isolation.disk_quota_bytes, cpu_seconds=cpu_s, drop_to=drop,
                             namespaces=isolation.namespaces, state_bytes=isolation.disk_quota_bytes)
        self.scorer_limits = SandboxLimits(memory_bytes=memory, max_threads=64 + 4 * threads,
                                    file_bytes=scorers.SCRATCH_BYTES, cpu_seconds=cpu_s, drop_to=drop,
                                    namespaces=isolation.namespaces, scratch_bytes=scorers.SCRATCH_BYTES,
                                    scoring=True)
        self.watch = Watch(WatchLimits(timeout_s=isolation.timeout_s, memory_bytes=memory,
                                       max_threads=2 * (self.limits.max_threads * 3) + 32),
                           beat=slot.beat)
        self.env, self.work_dir, self.stem, self.threads = slot.env, slot.work_dir, slot.stem, threads
        self.folders = {kind: private_dir(f"harness-{kind}-") for kind in ("train", *scorers.KINDS)}
        # The parent's; each scorer's /weights (its own: no inode the two could both lock).
        self.weights = {kind: private_dir(f"harness-weights-{kind}-") for kind in scorers.KINDS}
        self.scoring = scorers.Scoring(self.plan, self.folders, self.weights)
        self.scorers = self.scoring.scorers
        self.trainer: Process | None = None
        self.handed: handover.Channel | None = None  # the training process's frames
        self.answers: int | None = None  # and the parent's answers to it
        self.end: schema.EndReport | None = None
        self.handed_epoch = 0  # the last epoch the training process handed over

    def new_run_id(self) -> str:
        return new_run_id(self.label, self.spec.arch, self.dataset_name, f"s{self.spec.seed}")

    # -- the processes ------------------------------------------------------------------------

    def alive(self) -> None:
        """Raises when the watch killed the run (a blocked read looks every POLL_S)."""
        if self.watch.killed_for:
            raise self.killed()

    def start(self) -> None:
        """The inputs written, the processes started, and both scoring processes ready."""
        self.start_processes()
        try:
            self.scoring.ready(self.alive)
        except handover.ScoringFailed as exc:
            raise Outcome(exc.category, str(exc), reported=True) from None
        except handover.Truncated:  # killed with the others, or it died building its model
            self.alive()
            lines = "; ".join(f"{s.kind}: {s.process.log.last_line()}" for s in self.scorers.values()
                              if s.process is not None)
            raise Outcome("crashed", f"a scoring process ended before it was ready; last lines of "
                                     f"their logs: {lines}", keep_state=True) from None

    def start_processes(self) -> None:
        """The inputs written, the two scoring processes and the training process started, and
        the parent's ends of their pipes open (``handed``, ``answers``, each scorer's)."""
        journal = self.journal
        resume = (self.checkpoint if self.spec.resume and journal.checkpoint_epoch is not None
                  and journal.checkpoint_epoch <= len(journal.epochs) and self.checkpoint.is_file()
                  else None)
        write_inputs(self.task, self.folders, self.train_split, self.test_split, self.plan, resume)
        spec, data = self.spec, self.data
        common = {"spec": spec.to_json(), "mean": list(data.mean), "std": list(data.std),
                  "dataset": {**asdict(data.spec), "name": self.dataset_name}}
        self.scoring.start({**common, "num_classes": data.spec.num_classes}, self.device.type,
                           self.scorer_limits, self.env, self.watch, self.work_dir, self.stem,
                           self.echo)
        handed_r, handed_w = os.pipe()
        answers_r, self.answers = os.pipe()
        self.handed = handover.Channel(handed_r)
        box = Sandbox(inputs=str(self.folders["train"]), device=self.device.type, env=self.env,
                      limits=self.limits)
        try:
            self.trainer = self.watch.add(box.start({
                **common, "mode": "train", "submission": f"{box.inside('in')}/submission.py",
                "train": f"{box.inside('in')}/train.safetensors",
                "resume": f"{box.inside('in')}/resume.pt", "identity": self.identity,
                "handover_fd": handed_w, "answers_fd": answers_r},
                CappedLog(self.work_dir / f"{self.stem}.log", self.echo), (handed_w, answers_r)))
        finally:
            os.close(handed_w)
            os.close(answers_r)

    def score_epochs(self) -> bool:
        """Take the training process's hand-overs in order until it ends: score each epoch into
        the journal, keep each checkpoint; return whether the run is done (every epoch scored,
        or early stopping)."""
        spec, journal = self.spec, self.journal
        limit = weights_limit(spec.arch, self.data.spec.num_classes, self.data.spec.inputs())
        caps = {"start": handover.REPORT_BYTES, "epoch": handover.REPORT_BYTES,
                "end": handover.REPORT_BYTES, "weights": limit, "checkpoint": checkpoint_limit(limit)}
        while True:
            if self.done():
                self.read_end(caps)
                return True
            frame = self._next(caps)
            if frame is None:
                return False
            if frame.kind == "start":
                report = handover.parse_report(frame.payload, schema.StartReport)
                if journal.start is None:
                    journal.start = report.model_dump(by_alias=True)
            elif frame.kind == "epoch":
                report = handover.parse_report(frame.payload, schema.EpochReport)
                weights = self._next(caps)
                if weights is None:
                    return self.done()
                if report.epoch != frame.epoch or weights.kind != "weights" or weights.epoch != frame.epoch:
                    raise handover.HandoverError(f"epoch {frame.epoch}'s hand-over is not its report "
                                                 f"and then its weights")
                scored, self.handed_epoch = len(journal.epochs), frame.epoch
                if frame.epoch <= scored:  # re-trained after a resume: scored already
                    self.answer("next")
                    continue
                if frame.epoch != scored + 1:
                    raise handover.HandoverError(f"the training process handed over epoch {frame.epoch} "
                                                 f"after {scored} of {spec.recipe.epochs} were scored")
                handover.check_weights(weights.payload, limit)
                self.score_epoch(report, weights.payload)
                if should_stop([EpochMetrics(e["epoch"], 0, 0, 0, e["test_loss"], e["test_acc"], 0, 0)
                                for e in journal.epochs], spec.recipe.early_stopping_patience):
                    journal.stopped_early = frame.epoch  # journaled: a resume never scores past it
                    journal.save()
                self.answer("stop" if journal.stopped_early else "next")
            elif frame.kind == "checkpoint":  # after the epoch it follows was scored (or skipped)
                if frame.epoch != self.handed_epoch or frame.epoch > len(journal.epochs):
                    raise handover.HandoverError(f"a checkpoint of epoch {frame.epoch} after epoch "
                                                 f"{self.handed_epoch} was handed over")
                journal.keep_checkpoint(self.checkpoint, frame.payload, frame.epoch)
            elif frame.kind == "end":
                self.end = handover.parse_report(frame.payload, schema.EndReport)
                return False
            else:
                raise handover.HandoverError(f"{frame.kind} of epoch {frame.epoch} out of turn")

    def read_end(self, caps: dict[str, int]) -> None:
        """Every epoch is scored: the end report, if one comes within a minute, for the speed
        options and memory it reports; nothing after this changes the run."""
        try:
            frame = self._next(caps, time.monotonic() + 60)
            if frame is not None and frame.kind == "end":
                self.end = handover.parse_report(frame.payload, schema.EndReport)
        except handover.HandoverError:
            pass

    def _next(self, caps: dict[str, int], deadline: float | None = None) -> handover.Frame | None:
        """The training process's next frame; None once it ended (or died mid-frame, or, past
        ``deadline``, said nothing more)."""
        try:
            return started(self.handed, "training process's channel").frame(caps, self.alive, deadline)
        except handover.Truncated:
            return None
        except handover.Silent:
            return None

    def done(self) -> bool:
        return (self.journal.stopped_early is not None
                or len(self.journal.epochs) >= self.spec.recipe.epochs)

    def answer(self, word: str) -> None:
        try:
            handover.send(started(self.answers, "training process's answers"), word)
        except OSError:  # it is gone: its end (or none) says how
            pass

    def score_epoch(self, report: schema.EpochReport, weights: handover.Payload) -> None:
        """The epoch's weights given to both scoring processes, their logits put in the plan's
        rows and scored against the labels; the epoch into the journal."""
        epoch, cols = report.epoch, self.data.spec.num_classes
        t0 = time.perf_counter()
        logits, median = self.scoring.logits(epoch, weights, cols, self.alive)
        values = torch.stack(score(logits, self.test_split.labels, self.plan).values()).tolist()
        spent = time.perf_counter() - t0
        m = test_metrics(EpochMetrics(epoch, report.lr, report.train_loss, report.train_acc, None,
                                      None, report.train_s, spent),
                         values, n_test=len(self.test_split))
        self.journal.epochs.append({
            "epoch": epoch, "lr": m.lr, "train_loss": m.train_loss, "train_acc": m.train_acc,
            "test_loss": _finite(m.test_loss), "test_acc": m.test_acc, "epoch_s": m.train_s + spent,
            "check_change": m.check_change, "check_flips": m.check_flips,
            "train_s": m.train_s, "eval_s": spent})
        if report.probe is not None:
            self.journal.probes.append(handover.check_probe(report, self.spec.recipe.epochs,
                                                            self.spec.instruments))
        self.journal.inference_ms = median
        self.journal.save()
        if self.echo:  # the same lines as a trusted run's (harness.reporting)
            best = max(e["test_acc"] for e in self.journal.epochs)
            self.echo(epoch_line(m, self.spec.recipe.epochs, best, note=" (its own account)"))
            if epoch == 1 or epoch % 10 == 0:
                self.echo(metrics_line(m))

    def outcome(self, done: bool) -> dict[str, Any]:
        """The record's status and failure from how the training process ended."""
        trainer = started(self.trainer, "training process")
        trainer.finish(grace_s=60 if done else 5)
        if done:  # every epoch is scored: what the processes do after that changes nothing
            return {"status": "ok"}
        self.alive()
        end, scored, epochs = self.end, len(self.journal.epochs), self.spec.recipe.epochs
        if end is None:
            raise Outcome("crashed", f"the training process ended (exit code "
                                     f"{trainer.proc.returncode}) after {scored} of {epochs} "
                                     f"epochs without saying why; last line of its log: "
                                     f"{trainer.log.last_line()}", keep_state=True)
        if end.status == "diverged" and end.divergence and end.divergence.epoch == scored + 1:
            return {"status": "diverged", "failure": {
                "category": "diverged", "epoch": end.divergence.epoch, "step": end.divergence.step,
                "message": end.divergence.message, "reported": True}}
        if end.status == "diverged" and end.divergence and end.divergence.epoch <= scored:
            raise Outcome("crashed", f"the training process diverged in epoch {end.divergence.epoch}, "
                                     f"re-trained after a resume, which was scored before",
                          keep_state=True)
        if end.status == "failed" and end.failure is not None:
            raise Outcome(end.failure.category, end.failure.message, reported=True)
        raise handover.HandoverError(f"the training process said {end.status!r} after handing "
                                     f"over {scored} of {epochs} epochs")

    def killed(self) -> "Outcome":
        return Outcome(self.watch.category(), f"killed: {self.watch.detail}", keep_state=True)

    def close(self) -> None:
        self.scoring.close()
        if self.trainer is not None:  # reaped on every path (its pid leaves the sessions)
            if self.trainer.running():
                self.trainer.kill()
            self.trainer.wait()
        for fd in (self.answers, self.handed.fd if self.handed else None):
            if fd is not None:
                os.close(fd)
        self.watch.stop()
        for folder in (*self.folders.values(), *self.weights.values()):  # the parent's own folders
            shutil.rmtree(folder, ignore_errors=True)

    def discard(self) -> None:
        """Forget the run's checkpoint and journal: its record is its result now."""
        self.checkpoint.unlink(missing_ok=True)
        self.journal.remove()


def run_untrusted(task, slot: Slot) -> dict[str, Any]:
    """Run ``task`` (a harness.execution.local.Task of an untrusted file) split in sandboxes;
    return its record (not yet written), valid against the run-record schema whatever the
    sandboxes did. A failure is recorded with its category; the state of a run that was killed
    or crashed is kept, so that the next attempt resumes it."""
    from harness.errors import RunError

    try:
        run = UntrustedRun(task, slot)
    except (ValueError, RunError, DatasetUnavailable) as exc:
        return crash_record(task, "setup", str(exc))
    record = record_head(run)
    failure: dict[str, Any] | None = None
    keep_state = False
    try:
        if run.done():  # every epoch scored before: the journal is the run
            record["status"] = "ok"
        else:
            run.start()
            record.update(run.outcome(run.score_epochs()))
    except Outcome as out:
        failure = {"category": out.category, "message": str(out)[:500],
                   **({"reported": True} if out.reported else {})}
        keep_state = out.keep_state
    except handover.ScoringFailed as exc:
        failure = {"category": exc.category, "message": f"scoring: {exc}"[:500], "reported": True}
    except handover.HandoverError as exc:
        if STOPPING.is_set():  # the sweep's Ctrl-C killed the processes: resume from the state
            failure, keep_state = {"category": "crashed", "message": "stopped by Ctrl-C"}, True
        elif run.watch.killed_for:  # the pipe broke because the watch killed the process
            failure, keep_state = {"category": run.watch.category(),
                                   "message": f"killed: {run.watch.detail}"}, True
        else:
            failure = {"category": "malformed", "message": f"not kept as a result: {exc}"[:500]}
    except (SandboxUnavailable, OSError) as exc:
        failure, keep_state = {"category": "crashed", "message": f"could not run the sandbox: {exc}"[:500]}, True
    except Exception as exc:  # noqa: BLE001 - the harness's own fault: this run's record, not the sweep's end
        failure = {"category": "crashed", "message": f"internal error: {type(exc).__name__}: {exc}"[:500],
                   "traceback": traceback.format_exc()[-4000:]}
        keep_state = True
    finally:
        run.close()
    if failure is not None:  # the log read once the processes are gone and it is complete
        record["failure"] = {**failure, "epoch": len(run.journal.epochs) + 1,
                             "log_tail": run.trainer.log.tail() if run.trainer else None}
    try:
        record = record_tail(run, record)
        schema.validate_record(record)
    except Exception as exc:  # noqa: BLE001 - whatever went in, a valid record comes out
        first = (str(exc).splitlines() or [""])[0][:300]
        record = crash_record(task, "malformed", f"the run's record could not be completed: "
                                                 f"{type(exc).__name__}: {first}")
    if not keep_state:
        run.discard()
    return record


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None

