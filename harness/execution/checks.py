"""The pre-flight checks of a submission in a worker process of their own, sandboxed when it is
untrusted: the parent never imports the file, and the report comes down a pipe (nothing the
sandbox wrote is opened). :func:`checks_in_worker` is what vetting (harness.vetting.vet) runs for
an untrusted file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import RunError, SubmissionError
from harness.execution.local import RESULT_BYTES, failure_of, log_stem, parse_result, run_plain
from harness.execution.options import Isolation
from harness.execution.sandbox import NOBODY, Sandbox, SandboxLimits, as_root, sandbox_unavailable
from harness.execution.watch import CappedLog, Watch, WatchLimits
from harness.store import schema
from harness.vetting.check import refuse_on_fatal
from harness.vetting.vet import CheckRunner, Vetting

CHECK_SCRATCH_BYTES = 256 << 20  # a check worker's writable space


def checks_in_worker(store, isolation: Isolation, vetting: Vetting, source: str) -> CheckRunner:
    """The pre-flight checks run in a worker (sandboxed when ``isolation`` is untrusted), as
    :func:`harness.vetting.vet.vet` takes them: this process never imports the file. The rows
    are the file's own account (they ran where its code ran); a fatal failure refuses it. Raises
    RunError where no sandbox can start (unless namespaces are explicitly given up)."""
    def run(staged: Path, tracks: tuple[str, ...], params: dict[str, Any]) -> list[dict[str, Any]]:
        # Asked here, after the file was found and scanned: those errors come first, as before.
        reason = sandbox_unavailable() if isolation.untrusted and isolation.namespaces else None
        if reason:
            raise RunError(f"cannot isolate an untrusted run here: {reason}. Pass "
                           "--unsafe-no-namespaces to run it without the sandbox's file-system "
                           "and network isolation (resource limits and the filter still apply)")
        outcome = check_in_worker(staged, store, isolation, vetting.check_timeout, source, tracks,
                                  params)
        if "error" in outcome:
            raise SubmissionError(outcome["error"], outcome.get("category", "interface"))
        refuse_on_fatal(outcome["report"]["checks"], source, params)
        return outcome["report"]["checks"]

    return run


def check_in_worker(path: Path, store, isolation: Isolation, check_timeout: float,
                    shown: str | None = None, tracks: tuple[str, ...] = ("cnn",),
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pre-flight checks of a submission, run in a worker (sandboxed, when untrusted) so that
    this process never imports it, each check within ``check_timeout`` seconds. Returns
    ``{"report": ...}`` or ``{"error", "category"}``, with the file named as ``shown`` (as the
    user named it)."""
    memory = isolation.memory_for(1)
    # Each check has its own limit inside; this one stops a worker that hangs outside them.
    limit = 300 + 30 * check_timeout if check_timeout else isolation.timeout_s
    job = {"mode": "check", "check_timeout": check_timeout, "tracks": list(tracks),
           "params": params or {}}
    stem = log_stem(f"check-{path.stem}", 0)
    work_dir = store.root / "logs"
    work_dir.mkdir(parents=True, exist_ok=True)
    if not isolation.untrusted:
        result, watch, code, log = run_plain({**job, "submission": str(path)}, stem, work_dir,
                                             {"OMP_NUM_THREADS": "1"},
                                             WatchLimits(timeout_s=limit, memory_bytes=memory))
    else:  # the report comes down a pipe: nothing the sandbox wrote is opened
        from harness.execution.handover import drain

        inputs = Path(tempfile.mkdtemp(prefix="harness-check-"))
        try:
            inputs.chmod(0o755)
            shutil.copyfile(path, inputs / "submission.py")
            (inputs / "submission.py").chmod(0o644)
            drop = NOBODY if as_root() and isolation.namespaces else None
            box = Sandbox(inputs=str(inputs), env={"OMP_NUM_THREADS": "1"},
                          limits=SandboxLimits(memory_bytes=memory,
                                           cpu_seconds=None if limit is None else int(limit) + 60,
                                           max_threads=68, file_bytes=RESULT_BYTES, drop_to=drop,
                                           namespaces=isolation.namespaces,
                                           scratch_bytes=CHECK_SCRATCH_BYTES))
            log = CappedLog(work_dir / f"{stem}.log")
            watch = Watch(WatchLimits(timeout_s=limit, memory_bytes=memory, max_threads=200))
            result_r, result_w = os.pipe()
            received = drain(result_r, RESULT_BYTES)
            try:
                process = watch.add(box.start({
                    **job, "submission": f"{box.inside('in')}/submission.py",
                    "result_fd": result_w}, log, (result_w,)))
            finally:
                os.close(result_w)
            try:
                code = process.wait()
            finally:
                watch.stop()
            result = parse_result(received())
        finally:
            shutil.rmtree(inputs, ignore_errors=True)
    checked = _checked_result(result)
    shown = shown or str(path)
    if checked is not None:
        return _renamed(checked, [str(path), "/in/submission.py"], shown)
    category, message = failure_of(watch, code, log)
    return {"error": f"{shown}: the checks did not complete: {message}", "category": category}


def _renamed(value: Any, paths: list[str], shown: str) -> Any:
    """``value`` with every mention of the submission's working copies replaced by its name."""
    if isinstance(value, str):
        for p in paths:
            value = value.replace(p, shown)
        return value
    if isinstance(value, dict):
        return {k: _renamed(v, paths, shown) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, paths, shown) for v in value]
    return value


def _checked_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A check worker's result if it has the expected shape (schema.CheckResult), else None."""
    if result is None:
        return None
    try:
        return schema.CheckResult.model_validate(result).model_dump(exclude_none=True)
    except Exception:  # noqa: BLE001 - whatever the worker wrote, it is not a result
        return None
