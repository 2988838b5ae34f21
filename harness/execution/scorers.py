"""The scoring side of an untrusted run (:mod:`harness.execution.untrusted`): two sandboxed scoring
processes, one for the evaluation plan's protocol batches and one for the batch check's
(:meth:`harness.protocol.scoring.EvalPlan.feed`), each holding its own test images and never a
label. Each epoch's weights (checked by the parent) go to each through a folder of its own that
only the parent writes, seen read-only at ``/weights``; their logits come back through pipes and
are put back in the plan's rows, for the parent to score against the labels.

The two never share a process, a file they could lock or watch (their seccomp filter refuses
locks, leases and inotify: ``SandboxLimits.scoring``), or an inode they could both hold open but the
read-only system files, so nothing a layer remembers of one batching (a memo of the images it
has answered for, statistics adapted over the test set) reaches the other by those means.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch

from harness.execution import handover
from harness.execution.exchange import write_bytes_atomic
from harness.execution.sandbox import Sandbox
from harness.execution.watch import CappedLog, Process, Watch, printable, started

KINDS = ("protocol", "check")
SCRATCH_BYTES = 256 << 20  # a scoring process writes nothing of the harness's
READY_S = 600.0  # a scoring process's start: imports, the submission, the model
ANSWER_S = 3600.0  # one epoch's forward passes (a deadline even where runs have no timeout)
LOGS = {"protocol": (".score.log", "[score] "), "check": (".check.score.log", "[check] ")}


class Scorer:
    """One scoring process: its pipes, and the plan's rows (and batch sizes) its logits fill."""

    def __init__(self, kind: str, rows, batches: tuple[int, ...]):
        self.kind, self.rows, self.batches = kind, rows, batches
        self.process: Process | None = None
        self.requests: int | None = None
        self.answers: handover.Channel | None = None

    def start(self, box: Sandbox, spec: dict, log: CappedLog, watch: Watch) -> None:
        requests_r, self.requests = os.pipe()
        answers_r, answers_w = os.pipe()
        self.answers = handover.Channel(answers_r)
        try:
            self.process = watch.add(box.start({
                **spec, "mode": "score", "batches": list(self.batches),
                "submission": f"{box.inside('in')}/submission.py",
                "eval": f"{box.inside('in')}/eval.safetensors", "weights": box.inside("weights"),
                "requests_fd": requests_r, "answers_fd": answers_w}, log, (requests_r, answers_w)))
        finally:
            os.close(requests_r)
            os.close(answers_w)

    def pipes(self) -> tuple[int, handover.Channel]:
        """Its requests' descriptor and its answers' channel (once it was started)."""
        what = f"{self.kind} scoring process's pipes"
        return started(self.requests, what), started(self.answers, what)

    def close(self) -> None:
        if self.requests is not None:
            os.close(self.requests)
        if self.process is not None:
            self.process.finish(grace_s=30)
        if self.answers is not None:
            os.close(self.answers.fd)


class Scoring:
    """Both scoring processes of a run, and the parent's folders of weights they read."""

    def __init__(self, plan, folders: dict[str, Path], weights: dict[str, Path]):
        self.folders, self.weights = folders, weights
        self.scorers = {}
        for kind in KINDS:
            _, batches, rows = plan.feed(kind)
            self.scorers[kind] = Scorer(kind, rows, batches)
        self.rows = plan.rows

    def start(self, spec: dict, device: str, limits, env: dict[str, str], watch: Watch,
              work_dir: Path, stem: str, echo) -> None:
        # A scoring process sits idle between bursts of forward passes: glibc would hand its
        # activations' memory back to the system after each burst and fault it in again on the
        # next (2x slower forwards on a CPU). Keep it: the numbers do not change, only the speed.
        env = {**env, "MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
        for kind, scorer in self.scorers.items():
            box = Sandbox(inputs=str(self.folders[kind]), weights=str(self.weights[kind]),
                          device=device, limits=limits, env=env)
            suffix, prefix = LOGS[kind]
            scorer.start(box, spec, CappedLog(work_dir / f"{stem}{suffix}", echo,
                                              prefix if echo else ""), watch)

    def ready(self, alive: Callable[[], None]) -> None:
        """Wait until both have built their model; raises ScoringFailed (the layer's own
        account) or HandoverError."""
        deadline = time.monotonic() + READY_S
        for scorer in self.scorers.values():
            line = scorer.pipes()[1].line(deadline, alive)
            if line != "ready":
                error = handover.ERROR.match(line)
                if error:
                    raise handover.ScoringFailed(error.group(2), printable(error.group(3)))
                raise handover.HandoverError(f"the scoring process said {line[:80]!r}")

    def logits(self, epoch: int, weights: handover.Payload, cols: int,
               alive: Callable[[], None]) -> tuple[torch.Tensor, float | None]:
        """The plan's logits ``[rows, cols]`` for ``weights`` (checked safetensors), and the
        protocol scoring process's median forward time per batch (ms)."""
        paths = [self.weights[kind] / handover.weights_name(epoch) for kind in self.scorers]
        logits, median = torch.empty(self.rows, cols), None
        try:
            for path in paths:
                write_bytes_atomic(path, weights)
            for scorer in self.scorers.values():  # one after the other: they share the cores
                requests, answers = scorer.pipes()
                try:
                    handover.send(requests, f"score {epoch}")
                except OSError:
                    raise handover.Truncated("the scoring process is gone") from None
                part, ms = handover.read_logits(answers, epoch, len(scorer.rows), cols,
                                                time.monotonic() + ANSWER_S, alive)
                logits[torch.as_tensor(scorer.rows)] = part
                if scorer.kind == "protocol":
                    median = ms
        finally:
            for path in paths:
                path.unlink(missing_ok=True)
        return logits, median

    def close(self) -> None:
        for scorer in self.scorers.values():  # "quit" to both before waiting on either
            if scorer.requests is not None:
                try:
                    handover.send(scorer.requests, "quit")
                except OSError:
                    pass
        for scorer in self.scorers.values():
            scorer.close()
