"""One run, end to end: load the submission, seed, load data, build, train, write the record."""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.data import tensors as data_mod
from harness.engine.checkpoint import Checkpoint
from harness.engine.device import peak_memory_bytes, resolve_device, seed_everything
from harness.engine.fast import check_backend, compile_mode_name
from harness.engine.instruments import norm_summary
from harness.engine.train import EpochMetrics, TrainOptions, TrainResult, train
from harness.errors import RunError
from harness.models import build_model, count_parameters
from harness.protocol.catalog import ARCHITECTURES, compatibility_error
from harness.protocol.entries import params_label
from harness.protocol.spec import PLAIN, RunSpec
from harness.reporting import Reporter
from harness.store.derived import finish_record
from harness.store.record import SCHEMA_VERSION, environment, new_run_id, utc_now, write_json_atomic
from harness.store.schema import validate_record
from harness.vetting import tamper
from harness.vetting.submission import Submission, error_message, load


def deviations(spec: RunSpec, dataset: data_mod.DatasetSpec) -> list[str]:
    """Everything that makes this run's numbers not comparable with the reference table."""
    out = spec.recipe.deviations()
    if spec.recipe.batch_size != spec.recipe.test_batch_size:
        out.append(f"test batches stay {spec.recipe.test_batch_size} (the protocol's); "
                   f"--batch-size changes training batches only")
    if spec.precision != "fp32":
        out.append(f"precision={spec.precision} (protocol: fp32)")
    if spec.limit_train is not None:
        out.append(f"limit_train={spec.limit_train} (smoke run: not comparable)")
    if spec.limit_test is not None:
        out.append(f"limit_test={spec.limit_test} (smoke run: not comparable)")
    if not dataset.in_reference:
        out.append(f"dataset {dataset.name} is not in the reference benchmark")
    if not ARCHITECTURES[spec.arch].in_reference:
        out.append(f"architecture {spec.arch} is not in the reference benchmark")
    return out


def config_fields(spec: RunSpec, dataset: str) -> dict[str, Any]:
    """The part of a record's ``config`` known before anything is loaded."""
    return {"arch": spec.arch, "dataset": dataset, "seed": spec.seed, **asdict(spec.recipe),
            "limit_train": spec.limit_train, "limit_test": spec.limit_test,
            "precision": spec.precision, "params": spec.layer_params}


@dataclass(frozen=True)
class RunIdentity:
    """Who a run is in its record: its id, when it started, and when it was resumed. A resumed
    run keeps them (its checkpoint carries them)."""

    run_id: str
    started_at: str
    resumes: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started_at": self.started_at, "resumes": list(self.resumes)}


def record_start(spec: RunSpec, dataset: data_mod.Dataset, device: str, identity: RunIdentity,
                 given: dict[str, Any], compile_mode: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run record knows when the run starts, for a run in this process (:func:`run_eval`)
    and for an untrusted one (harness.execution.untrusted) alike: the run, its data, where it runs.
    ``given`` holds the fields the two paths fill in their own way: ``submission``, ``checks``,
    ``environment``, ``isolation`` and ``reported``."""
    name = dataset.spec.name
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "protocol_version": spec.protocol,
        "run_id": identity.run_id, "status": "running", "failure": None,
        "config": {**config_fields(spec, name), "num_classes": dataset.spec.num_classes,
                   "device": device,
                   # "compile" and "speed" say what harness.engine.fast put in effect (filled in
                   # once its checks have run).
                   "compile": compile_mode, "speed": None,
                   "data_root": None if dataset.spec.built_in else str(dataset.source)},
        "submission": given["submission"],
        "checks": given["checks"],
        "data": {"train_size": len(dataset.train), "test_size": len(dataset.held_test),
                 "mean": list(dataset.mean), "std": list(dataset.std),
                 "train_sha256": dataset.train.sha256(), "test_sha256": dataset.held_test.sha256(),
                 # the published files read, each with the md5 and sha256 of its content
                 "files": list(dataset.files), "notes": list(dataset.notes)},
        "environment": given["environment"], "started_at": identity.started_at,
        "resumes": list(identity.resumes), "isolation": given["isolation"],
        "reported": given["reported"],
        **(extra or {}),
    }
    record["deviations"] = deviations(spec, dataset.spec)
    record["comparable"] = not record["deviations"]
    return record


def build_for(spec: RunSpec, submission: Submission, data: data_mod.DatasetSpec):
    """The run's model with the submitted layer, seeded first: the one way every path (this
    process, a sandboxed trainer or scorer) builds it, so that all build the same weights.
    Returns (model, init report); raises RunError (``interface``) when the layer cannot be built."""
    seed_everything(spec.seed)
    try:
        return build_model(spec.arch, data.num_classes, submission.norm_layer(spec.layer_params),
                           inputs=data.inputs(), return_init_report=True)
    except Exception as exc:  # noqa: BLE001 - a constructor failure is the submission's
        given = f" ({params_label(spec.layer_params)})" if spec.params else ""
        raise RunError(f"building {spec.arch} with {submission.norm_class.__name__}{given} failed: "
                       f"{type(exc).__name__}: {exc}", "interface") from None


def train_options(spec: RunSpec, submission: Submission, checkpoint, resume_state: dict | None,
                  checkpoint_extra: dict | None = None, hand_over=None) -> TrainOptions:
    """How a run trains, from its spec, the same in this process and in a sandbox: precision and
    speed options, the instruments (unless the spec turns them off), its checkpoint and the state
    it resumes from."""
    return TrainOptions(precision=spec.precision, speed=spec.speed,
                        norm_class=submission.norm_class if spec.instruments else None,
                        checkpoint=checkpoint, checkpoint_extra=checkpoint_extra,
                        resume_state=resume_state, hand_over=hand_over)


def failure_category(exc: BaseException) -> str:
    """``out-of-memory`` for every way an allocation fails (host or GPU), else ``exception``."""
    text = str(exc).lower()
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or (
            isinstance(exc, RuntimeError) and ("out of memory" in text
                                               or "can't allocate memory" in text)):
        return "out-of-memory"
    return "exception"


def epoch_row(e: EpochMetrics) -> dict[str, Any]:
    return {"epoch": e.epoch, "lr": e.lr, "train_loss": e.train_loss, "train_acc": e.train_acc,
            "test_loss": e.test_loss, "test_acc": e.test_acc, "epoch_s": e.train_s + e.eval_s,
            "check_change": e.check_change, "check_flips": e.check_flips}


def run_eval(spec: RunSpec, out_dir: str | Path = "results", *,
             submission: Submission | None = None,
             checks: list[dict[str, Any]] | None = None,
             extra: dict[str, Any] | None = None,
             reporter: Reporter | None = None,
             write: bool = True, checkpoints: bool = True,
             ) -> tuple[dict[str, Any], Path | None]:
    """Run one (submission, arch, dataset, seed) and write its record; return (record, path).

    ``submission``, when given, is the already loaded (and checked) file, so exactly that class is
    trained; ``checks`` are the pre-flight check rows to keep in the record; ``extra`` is merged
    into the record (a sweep adds ``entry`` and ``suite``). Raises
    :class:`harness.errors.SubmissionError` or :class:`RunError` before anything is
    trained when the submission, data or device is unusable. A failure during training is
    recorded (status ``failed``) and the record is still written; the caller decides the exit code.
    With ``write=False`` the record is only returned (a worker process hands it to its parent, which
    writes it) and the checkpoint is left for the parent to remove; ``checkpoints=False`` neither
    saves nor resumes one. ``reporter`` hears of the run's start, steps, epochs and warnings.
    """
    reporter = reporter or Reporter()
    dataset_name = runnable_dataset(spec)
    if submission is None:
        submission = load(spec.submission)
    device = resolve_device(spec.device)
    started_at, t_start = utc_now(), time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dataset = load_data(spec, dataset_name)
    try:
        model, init_report = build_for(spec, submission, dataset.spec)
    except RunError as exc:
        raise RunError(f"{submission.path}: {exc}", exc.category) from None
    if init_report.message():
        reporter.warn(init_report.message())

    spec = spec.with_(sha256=submission.sha256)
    checkpoint = Checkpoint.for_run(out_dir, spec.digest()) if checkpoints else None
    resume_state = checkpoint.load() if checkpoint is not None and spec.resume else None
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", (extra or {}).get("entry") or submission.name)[:40]
    identity = RunIdentity(new_run_id(label, spec.arch, dataset_name, f"s{spec.seed}"), started_at)
    # A resumed run is the same run, continued: it keeps its id and start time.
    if resume_state is not None and checkpoint is not None:
        identity = RunIdentity(resume_state["run_id"], resume_state["started_at"],
                               (*resume_state["resumes"],
                                {"from_epoch": len(resume_state["epochs"]), "at": utc_now()}))
        reporter.warn(f"resuming from the checkpoint of epoch {len(resume_state['epochs'])} "
                      f"({checkpoint.path}); --no-resume starts over")
    record = record_start(spec, dataset, str(device), identity,
                          trusted_fields(submission, checks, device), compile_mode_name(PLAIN),
                          extra)
    record["model"] = {"parameters": count_parameters(model),
                       "init_overwritten": init_report.overwritten}
    record["norm_layers"] = norm_summary(model, submission.norm_class)
    reporter.run_started(record)

    result = TrainResult()
    options = train_options(spec, submission, checkpoint, resume_state, identity.to_json())
    train_recorded(record, lambda: train(model, dataset, spec.recipe, device, spec.seed, options,
                                         reporter, result), result, submission, extra, reporter)
    finish(record, result, spec, device, t_start)
    if not write:
        return record, None
    path = write_json_atomic(Path(out_dir) / "runs" / f"{identity.run_id}.json", record)
    if checkpoint is not None:
        checkpoint.remove()  # the record is the run's result now
    return record, path


def trusted_fields(submission: Submission, checks: list[dict[str, Any]] | None,
                   device: torch.device) -> dict[str, Any]:
    """The record fields a run in this process fills its own way (:func:`record_start`)."""
    return {"submission": {"path": str(submission.path), "name": submission.name,
                           "sha256": submission.sha256, "class": submission.norm_class.__qualname__},
            "checks": checks or [], "environment": environment(device),
            "isolation": {"sandboxed": False, "sandbox": None,
                          "scored_by": "the harness, in the run's own process (trusted code)"},
            "reported": []}


def runnable_dataset(spec: RunSpec) -> str:
    """The dataset's catalogue name, once the architecture, the dataset, the pair and the compile
    backend are known to be usable; RunError otherwise."""
    if spec.arch not in ARCHITECTURES:
        raise RunError(f"unknown architecture {spec.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    try:
        dataset_name = data_mod.resolve_dataset_name(spec.dataset)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    mismatch = compatibility_error(spec.arch, dataset_name)
    if mismatch:
        raise RunError(mismatch)
    if spec.speed.compile or spec.speed.cuda_graphs:
        try:
            check_backend(spec.speed.compile_backend)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    return dataset_name


def load_data(spec: RunSpec, dataset_name: str) -> data_mod.Dataset:
    """The run's dataset, cut to its limits; RunError when it is not there."""
    try:
        dataset = data_mod.load_dataset(dataset_name, spec.data_root, download=spec.download)
    except data_mod.DatasetUnavailable as exc:
        raise RunError(str(exc)) from None
    dataset.train = dataset.train.head(spec.limit_train)
    dataset.test = dataset.held_test.head(spec.limit_test)
    return dataset


def train_recorded(record: dict[str, Any], run, result: TrainResult, submission: Submission,
                   extra: dict[str, Any] | None, reporter: Reporter) -> None:
    """Run the training (``run()``) and say in ``record`` how it ended: ok, diverged (where), failed
    (with the layer's error, its file named as the user named it), or tampered (the layer changed
    the harness or torch: its epochs are dropped)."""
    try:
        run()
        record["status"] = result.status
        d = result.divergence  # set when, and only when, the run diverged
        if d is not None:
            record["failure"] = {"category": "diverged", "epoch": d["epoch"], "step": d["step"],
                                 "message": d["message"]}
    except Exception as exc:  # noqa: BLE001 - any failure of the layer is recorded, not lost
        record["status"] = "failed"
        record["failure"] = {"category": failure_category(exc), "epoch": len(result.epochs) + 1,
                             "message": error_message(exc, submission.path,
                                                      (extra or {}).get("submission_source")),
                             "traceback": traceback.format_exc()[-4000:]}
    finally:
        reporter.run_ended()
    tampered = tamper.changes()
    if tampered:  # whatever it reported was produced by code that is not the harness's
        record["status"] = "failed"
        record["failure"] = {"category": "tampered", "epoch": len(result.epochs),
                             "message": "the layer changed the harness or torch during the run: "
                                        + "; ".join(tampered[:3])}
        result.epochs, result.probes, result.inference = [], [], None


def finish(record: dict[str, Any], result: TrainResult, spec: RunSpec, device: torch.device,
           t_start: float) -> None:
    """The record's end: speed options in effect, times, memory, instruments, and what derives from
    its epochs (harness.store.derived); validated (harness.store.schema) before anyone sees it."""
    if result.speed:
        record["config"]["compile"] = result.speed["compile"]
        record["config"]["speed"] = result.speed
    wall = time.perf_counter() - t_start
    kind, peak = peak_memory_bytes(device)
    record.update({
        "wall_s": wall,
        "train_s": result.train_s,
        "eval_s": result.eval_s,
        "train_images_per_s": result.train_images / result.train_s if result.train_s > 0 else None,
        "peak_memory": {"kind": kind, "peak_memory_bytes": peak},
        "stopped_early": result.stopped_early,
        "probes": result.probes,
        "inference": result.inference,
        "instruments": {"enabled": spec.instruments, "probe_s": result.probe_s,
                        "probe_fraction": result.probe_s / wall if wall > 0 else None},
        "ended_at": utc_now(),
    })
    finish_record(record, [epoch_row(e) for e in result.epochs])
    validate_record(record)
