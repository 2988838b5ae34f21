"""One run, end to end: load the submission, seed, load data, build, train, write the record."""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from harness.engine.checkpoint import Checkpoint
from harness.engine.device import peak_memory_bytes, resolve_device, seed_everything
from harness.engine.fast import check_backend, compile_mode_name
from harness.engine.instruments import norm_summary
from harness.engine.train import EpochMetrics, TrainResult, train
from harness.errors import RunError
from harness.protocol import data as data_mod
from harness.protocol.catalog import ARCHITECTURES, compatibility_error
from harness.protocol.datafiles import BUILT_IN
from harness.protocol.entries import params_label
from harness.protocol.models import build_model, count_parameters
from harness.protocol.spec import PLAIN, RunSpec
from harness.reporting import Reporter
from harness.store.derived import finish_record
from harness.store.record import SCHEMA_VERSION, environment, new_run_id, utc_now, write_json_atomic
from harness.store.schema import validate_record
from harness.vetting import tamper
from harness.vetting.submission import Submission, error_message, load


def deviations(config: RunSpec, spec: data_mod.DatasetSpec) -> list[str]:
    """Everything that makes this run's numbers not comparable with the reference table."""
    out = config.recipe.deviations()
    if config.recipe.batch_size != config.recipe.test_batch_size:
        out.append(f"test batches stay {config.recipe.test_batch_size} (the protocol's); "
                   f"--batch-size changes training batches only")
    if config.precision != "fp32":
        out.append(f"precision={config.precision} (protocol: fp32)")
    if config.limit_train is not None:
        out.append(f"limit_train={config.limit_train} (smoke run: not comparable)")
    if config.limit_test is not None:
        out.append(f"limit_test={config.limit_test} (smoke run: not comparable)")
    if not spec.in_reference:
        out.append(f"dataset {spec.name} is not in the reference benchmark")
    if not ARCHITECTURES[config.arch].in_reference:
        out.append(f"architecture {config.arch} is not in the reference benchmark")
    return out


def config_fields(config: RunSpec, dataset: str) -> dict[str, Any]:
    """The part of a record's ``config`` known before anything is loaded."""
    return {"arch": config.arch, "dataset": dataset, "seed": config.seed, **asdict(config.recipe),
            "limit_train": config.limit_train, "limit_test": config.limit_test,
            "precision": config.precision, "params": config.layer_params}


def record_start(spec: RunSpec, dataset: data_mod.Dataset, device: str, *, run_id: str,
                 started_at: str, resumes: list[dict[str, Any]], submission: dict[str, Any],
                 checks: list[dict[str, Any]], environment: dict[str, Any],
                 isolation: dict[str, Any], reported: list[str], compile_mode: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run record knows when the run starts, for a run in this process (:func:`run_eval`)
    and for a split one (harness.execution.split) alike: the run, its data, where it runs."""
    name = dataset.spec.name
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "protocol_version": spec.protocol, "run_id": run_id,
        "status": "running", "failure": None,
        "config": {**config_fields(spec, name), "num_classes": dataset.spec.num_classes,
                   "device": device,
                   # "compile" and "speed" say what harness.engine.fast put in effect (filled in
                   # once its checks have run).
                   "compile": compile_mode, "speed": None,
                   "data_root": None if name in BUILT_IN else str(dataset.source)},
        "submission": submission,
        "checks": checks,
        "data": {"train_size": len(dataset.train), "test_size": len(dataset.test),
                 "mean": list(dataset.mean), "std": list(dataset.std),
                 "train_sha256": dataset.train.sha256(), "test_sha256": dataset.test.sha256(),
                 # the published files read, each with the md5 and sha256 of its content
                 "files": list(dataset.files), "notes": list(dataset.notes)},
        "environment": environment, "started_at": started_at, "resumes": resumes,
        "isolation": isolation, "reported": reported,
        **(extra or {}),
    }
    record["deviations"] = deviations(spec, dataset.spec)
    record["comparable"] = not record["deviations"]
    return record


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


def run_eval(config: RunSpec, out_dir: str | Path = "results", *,
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
    :class:`harness.vetting.submission.SubmissionError` or :class:`RunError` before anything is
    trained when the submission, data or device is unusable. A failure during training is
    recorded (status ``failed``) and the record is still written; the caller decides the exit code.
    With ``write=False`` the record is only returned (a worker process hands it to its parent, which
    writes it) and the checkpoint is left for the parent to remove; ``checkpoints=False`` neither
    saves nor resumes one. ``reporter`` hears of the run's start, steps, epochs and warnings.
    """
    reporter = reporter or Reporter()
    if config.arch not in ARCHITECTURES:
        raise RunError(f"unknown architecture {config.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    try:
        dataset_name = data_mod.resolve_dataset_name(config.dataset)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    mismatch = compatibility_error(config.arch, dataset_name)
    if mismatch:
        raise RunError(mismatch)
    if config.speed.compile or config.speed.cuda_graphs:
        try:
            check_backend(config.speed.compile_backend)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    if submission is None:
        submission = load(config.submission)
    device = resolve_device(config.device)
    started_at, t_start = utc_now(), time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    try:
        dataset = data_mod.load_dataset(dataset_name, config.data_root, download=config.download)
    except data_mod.DatasetUnavailable as exc:
        raise RunError(str(exc)) from None
    dataset.train = dataset.train.head(config.limit_train)
    dataset.test = dataset.test.head(config.limit_test)

    seed_everything(config.seed)
    try:
        model, init_report = build_model(config.arch, dataset.spec.num_classes,
                                         submission.norm_layer(config.layer_params),
                                         inputs=dataset.spec.inputs(), return_init_report=True)
    except Exception as exc:  # noqa: BLE001 - a constructor failure is the submission's
        given = f" ({params_label(config.layer_params)})" if config.params else ""
        raise RunError(f"{submission.path}: building {config.arch} with {submission.norm_class.__name__}"
                       f"{given} failed: {type(exc).__name__}: {exc}", "interface") from None
    if init_report.message():
        reporter.warn(init_report.message())

    config = config.with_(sha256=submission.sha256)
    checkpoint = Checkpoint.for_run(out_dir, config.digest()) if checkpoints else None
    resume_state = checkpoint.load() if checkpoint is not None and config.resume else None
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", (extra or {}).get("entry") or submission.name)[:40]
    run_id = new_run_id(label, config.arch, dataset_name, f"s{config.seed}")
    resumes: list[dict[str, Any]] = []
    if resume_state is not None:  # the same run, continued: it keeps its id and start time
        run_id, started_at = resume_state["run_id"], resume_state["started_at"]
        resumes = resume_state["resumes"] + [{"from_epoch": len(resume_state["epochs"]),
                                              "at": utc_now()}]
        reporter.warn(f"resuming from the checkpoint of epoch {len(resume_state['epochs'])} "
             f"({checkpoint.path}); --no-resume starts over")
    record = record_start(
        config, dataset, str(device), run_id=run_id, started_at=started_at, resumes=resumes,
        submission={"path": str(submission.path), "name": submission.name,
                    "sha256": submission.sha256, "class": submission.norm_class.__qualname__},
        checks=checks or [], environment=environment(device),
        isolation={"sandboxed": False, "sandbox": None,
                   "scored_by": "the harness, in the run's own process (trusted code)"},
        reported=[], compile_mode=compile_mode_name(PLAIN), extra=extra)
    record["model"] = {"parameters": count_parameters(model),
                       "init_overwritten": init_report.overwritten}
    record["norm_layers"] = norm_summary(model, submission.norm_class)
    reporter.run_started(record)

    result = TrainResult()
    try:
        train(model, dataset, config.recipe, device, config.seed,
              reporter=reporter, result=result, precision=config.precision,
              speed=config.speed, checkpoint=checkpoint, resume_state=resume_state,
              checkpoint_extra={"run_id": run_id, "started_at": started_at, "resumes": resumes},
              norm_class=submission.norm_class if config.instruments else None)
        record["status"] = result.status
        if result.status == "diverged":
            d = result.divergence
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
        result.epochs = []
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
        "probes": result.probes if not tampered else [],
        "inference": result.inference if not tampered else None,
        "instruments": {"enabled": config.instruments, "probe_s": result.probe_s,
                        "probe_fraction": result.probe_s / wall if wall > 0 else None},
        "ended_at": utc_now(),
    })
    finish_record(record, [epoch_row(e) for e in result.epochs])
    validate_record(record)  # what every record is (harness.store.schema), before anyone sees it
    if not write:
        return record, None
    path = write_json_atomic(Path(out_dir) / "runs" / f"{run_id}.json", record)
    if checkpoint is not None:
        checkpoint.remove()  # the record is the run's result now
    return record, path


__all__ = ["RunError", "RunSpec", "run_eval"]
