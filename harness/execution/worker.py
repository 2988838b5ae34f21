"""``python -m harness.execution.worker SPEC.json``: one piece of a run, in a process of its own.

The parent (:mod:`harness.execution.local`, :mod:`harness.execution.untrusted`) wrote SPEC, watches this process
(time, memory, threads, disk) and writes every record itself. What this process prints goes to a
capped log and is never parsed. Modes:

- ``run`` (trusted code): one whole run in this process, scored here; the record goes to the
  job's ``result`` file, which the parent validates and writes into the store.
- ``check``: a submission's pre-flight checks; the report goes to the ``result`` file, or, for an
  untrusted file, down a pipe from inside its sandbox (the parent treats it as the file's own
  account).
- ``train`` (untrusted, sandboxed): trains on the training split only and hands each epoch's
  weights over through a pipe (:mod:`harness.execution.handover`); it never sees a test image
  or label, and nothing it writes outlives it.
- ``score`` (untrusted, sandboxed): holds test images (the protocol batches' or, in a process of
  its own, the batch check's), never a label; turns each epoch's weights into logits for the
  parent, over the pipes named in the job.

Sandboxed modes call :func:`harness.execution.confine.enter` after their own imports and before the
submission's.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.execution.worker SPEC.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    for fd in job.get("close_fds", []):  # what bubblewrap passed on but the worker must not keep
        try:
            os.close(fd)
        except OSError:
            pass
    # Everything a mode needs is imported, and the tamper baseline taken, before the submission
    # can run (and, sandboxed, before the limits and the filter close in).
    import torch  # noqa: F401

    from harness.store.record import git_commit
    from harness.vetting import tamper

    if job["mode"] in ("run", "check"):  # where this process computes what it reports
        tamper.baseline()
        git_commit()
    return {"run": run_mode, "check": check_mode, "train": train_mode, "score": score_mode}[
        job["mode"]](job)


def _enter(job: dict, device) -> None:
    import torch

    from harness.execution.confine import enter
    from harness.execution.sandbox import SandboxLimits

    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, while devices and libraries are reachable
    for note in enter(SandboxLimits(**job["limits"]), device.type):
        print(f"sandbox: {note}", flush=True)


def _print(message: str, err: bool = False) -> None:
    """A line for this worker's log (its stdout, which the parent captures), at once."""
    print(message, flush=True)


def _write_result(path: str, payload: dict) -> None:
    from harness.store.record import write_json_atomic

    write_json_atomic(path, payload)


def run_mode(job: dict) -> int:
    """Trusted: one run, scored in this process; the record goes to ``job["result"]``."""
    from harness.engine.runner import run_eval
    from harness.errors import RunError, SubmissionError
    from harness.protocol.spec import RunSpec
    from harness.reporting import ConsoleReporter

    spec = RunSpec.from_json(job["spec"])
    try:  # its lines go to this worker's log (stdout), which the parent captures
        record, _ = run_eval(spec, job["results"], checks=job["checks"], extra=job["extra"],
                             reporter=ConsoleReporter(echo=_print), write=False)
    except (RunError, SubmissionError) as exc:  # could not start: the parent records it
        print(f"error: {exc}", flush=True)
        _write_result(job["result"], {"error": str(exc), "category": exc.category})
        return 0
    _write_result(job["result"], {"record": record})
    return 0


def check_mode(job: dict) -> int:
    """A submission's pre-flight checks; the report (or why there is none) to ``job["result"]``
    (a file of the parent's, trusted), or down the pipe ``job["result_fd"]`` (sandboxed)."""
    from harness.engine.device import resolve_device
    from harness.errors import SubmissionError
    from harness.vetting.check import PREFLIGHT, run_checks
    from harness.vetting.submission import load

    if job.get("limits"):
        _enter(job, resolve_device("cpu"))

    def result(payload: dict) -> None:
        if "result_fd" in job:
            from harness.store.record import finite

            with os.fdopen(job["result_fd"], "wb") as out:
                out.write(json.dumps(finite(payload), allow_nan=False).encode())
        else:
            _write_result(job["result"], payload)

    try:
        loaded = load(job["submission"])
    except SubmissionError as exc:
        result({"error": str(exc), "category": exc.category})
        return 0
    report = run_checks(job["submission"], timeout=job["check_timeout"], only=PREFLIGHT,
                        submission=loaded, tracks=tuple(job.get("tracks", ("cnn",))),
                        params=job.get("params") or {})
    result({"report": report.to_json()})
    return 0


def train_mode(job: dict) -> int:
    """Sandboxed training on the training split alone; each epoch, its checkpoint and how it
    ended sent to the parent (harness.execution.handover); nothing of it kept here."""
    from functools import partial

    from safetensors.torch import load_file

    from harness.data.tensors import Dataset, DatasetSpec, Split
    from harness.engine.device import peak_memory_bytes, resolve_device
    from harness.engine.instruments import norm_summary
    from harness.engine.runner import build_for, failure_category, train_options
    from harness.engine.train import TrainResult, train
    from harness.errors import RunError, SubmissionError
    from harness.execution import handover
    from harness.models import count_parameters
    from harness.protocol.spec import RunSpec
    from harness.reporting import ConsoleReporter
    from harness.vetting.submission import error_message, load

    spec = RunSpec.from_json(job["spec"])
    device = resolve_device(spec.device)
    sender = handover.Sender(job["handover_fd"], job["answers_fd"])
    split = load_file(job["train"])
    _enter(job, device)
    end: dict = {"status": "failed"}
    result = TrainResult()
    try:
        try:
            submission = load(job["submission"], tamper_check=False)
        except SubmissionError as exc:
            end["failure"] = {"category": "interface", "message": str(exc)[:500]}
            return 0
        data = Dataset(DatasetSpec.from_json(job["dataset"]), Split(split["inputs"], split["labels"]),
                       None, tuple(job["mean"]), tuple(job["std"]), source="handed over")
        try:
            model, init = build_for(spec, submission, data.spec)
        except RunError as exc:
            end["failure"] = {"category": exc.category, "message": str(exc)[:500]}
            return 0
        if init.message():
            print(f"warning: {init.message()}", flush=True)
        sender.json("start", 0, {
            "model": {"parameters": count_parameters(model), "init_overwritten": init.overwritten},
            "norm_layers": norm_summary(model, submission.norm_class),
            "device_name": torch_device_name(device)})
        checkpoint = handover.HandedCheckpoint(sender, job["identity"], Path(job["resume"]))
        resume_state = checkpoint.load() if spec.resume else None
        if resume_state is not None:
            print(f"resuming from the checkpoint of epoch {len(resume_state['epochs'])}", flush=True)
        try:
            options = train_options(spec, submission, checkpoint, resume_state,
                                    hand_over=partial(handover.hand_over, sender))
            train(model, data, spec.recipe, device, spec.seed, options,
                  ConsoleReporter(echo=_print), result)
            end = {"status": result.status, "divergence": result.divergence}
        except Exception as exc:  # noqa: BLE001 - the layer's failure, told to the parent
            traceback.print_exc()
            end["failure"] = {"category": failure_category(exc),
                              "message": error_message(exc, job["submission"]),
                              "traceback": traceback.format_exc()[-4000:]}
    except BaseException as exc:  # noqa: BLE001 - SystemExit from the layer, or the harness's own
        traceback.print_exc()
        end = {"status": "failed", "failure": {
            "category": "exception",
            "message": error_message(exc, job["submission"])}}
    finally:
        if result.speed:
            end["speed"] = result.speed
        kind, peak = peak_memory_bytes(device)
        if kind == "cuda_max_allocated":
            end["cuda_max_allocated"] = peak
        sender.json("end", 0, end)
    return 0


def torch_device_name(device) -> str:
    import torch

    from harness.store.record import cpu_model

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def score_mode(job: dict) -> int:
    """Sandboxed scoring: test images (no labels) and each epoch's weights in, logits out."""
    import torch
    from safetensors.torch import load_file

    from harness.data.tensors import make_pipeline
    from harness.engine.device import autocast, resolve_device
    from harness.engine.instruments import BatchTimer
    from harness.engine.runner import build_for, failure_category
    from harness.errors import RunError, SubmissionError
    from harness.execution import handover
    from harness.protocol.catalog import DatasetSpec
    from harness.protocol.scoring import forward_plan
    from harness.protocol.spec import RunSpec, SpeedOptions
    from harness.vetting.submission import error_message, load

    spec = RunSpec.from_json(job["spec"])
    device = resolve_device(spec.device)
    requests, answers = job["requests_fd"], job["answers_fd"]
    images = load_file(job["eval"])["inputs"]
    _enter(job, device)

    def fail(epoch: int, category: str, message: str) -> None:
        handover.send(answers, f"error {epoch} {category} {' '.join(message.split())[:480]}")

    try:
        submission = load(job["submission"], tamper_check=False)
        dataset = DatasetSpec.from_json(job["dataset"])
        model = build_for(spec, submission, dataset)[0].to(device)
    except (SubmissionError, RunError) as exc:
        fail(0, "interface", str(exc))
        return 0
    except Exception as exc:  # noqa: BLE001 - the layer's own .to() may raise: still its failure
        fail(0, "interface", f"building {spec.arch} with CustomNorm failed: {type(exc).__name__}: {exc}")
        return 0
    speed, _ = SpeedOptions().resolve(device)
    memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    pipeline = make_pipeline(dataset, job["mean"], job["std"], device, memory_format)
    images = images.to(device)
    batches = tuple(job["batches"])
    handover.send(answers, "ready")
    with os.fdopen(requests, "r", encoding="ascii", errors="replace") as incoming:
        for line in incoming:
            parts = line.split()
            if parts[:1] != ["score"] or len(parts) != 2 or not parts[1].isdigit():
                return 0  # "quit", or anything else: done
            epoch = int(parts[1])
            try:
                state = load_file(str(Path(job["weights"]) / handover.weights_name(epoch)))
                model.load_state_dict(state)
                timer = BatchTimer(device)
                logits = forward_plan(model, images, batches, pipeline.test_batch,
                                      lambda: autocast(device, spec.precision), timer=timer)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                data = logits.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4")
                summary = timer.summary(device) or {}
            except Exception as exc:  # noqa: BLE001 - the layer's failure, told to the parent
                traceback.print_exc()
                fail(epoch, failure_category(exc), error_message(exc, job["submission"]))
                continue
            median = summary.get("median_ms")
            handover.send(answers, f"logits {epoch} {data.shape[0]} {data.shape[1]} "
                                   f"{median if median is not None else 'nan':.6g}"
                          if median is not None else
                          f"logits {epoch} {data.shape[0]} {data.shape[1]} nan", data.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
