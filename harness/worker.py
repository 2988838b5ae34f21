"""``python -m harness.worker SPEC.json``: one run, or one submission's pre-flight checks, in its
own process.

The parent (:mod:`harness.executors`) wrote SPEC and watches this process: it enforces the
wall-clock timeout and the memory limit, and it writes the record. Everything this process prints
goes to the run's log; its result is the one line that starts with :data:`RESULT_MARKER`,
followed by JSON: ``{"record": ...}`` for a run, ``{"report": ...}`` or ``{"error": ...,
"category": ...}`` for the checks. With ``sandbox`` in SPEC (``--untrusted``), the process enters
:mod:`harness.sandbox` before the submission is imported, and never writes the results store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULT_MARKER = "@@harness-result@@ "


def emit(result: dict) -> None:
    sys.stdout.flush()
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))

    # Everything the run needs is imported, and the scoring functions noted, before the
    # submission can run (and before the sandbox closes the file system).
    from harness import tamper
    from harness.check import PREFLIGHT, run_checks
    from harness.cli import _Progress
    from harness.executors import config_from_json
    from harness.record import git_commit
    from harness.runner import RunError, resolve_device, run_eval
    from harness.submission import SubmissionError, load

    tamper.baseline()
    git_commit()
    config = config_from_json(spec["config"])
    submission = Path(config.submission)
    if spec.get("sandbox"):
        from harness.sandbox import Policy, enter

        policy = Policy(**spec["sandbox"])
        source = submission.read_bytes()
        device = resolve_device(config.device)
        if device.type == "cuda":
            import torch

            torch.zeros(1, device=device)  # the CUDA context, while devices and libraries are reachable
        for note in enter(policy, device.type):
            print(f"sandbox: {note}", flush=True)
        submission = Path(policy.private_dir) / submission.name
        submission.write_bytes(source)
        config.submission = str(submission)

    if spec["mode"] == "check":
        try:
            loaded = load(submission)  # its category (refused, tampered) must reach the parent
        except SubmissionError as exc:
            emit({"error": str(exc), "category": exc.category})
            return 0
        report = run_checks(str(submission), timeout=spec["check_timeout"], only=PREFLIGHT,
                            submission=loaded)
        emit({"report": report.to_json()})
        return 0

    progress: dict = {}

    def on_start(record: dict) -> None:
        n, bs = record["data"]["train_size"], record["config"]["batch_size"]
        progress["bar"] = _Progress(record["config"]["epochs"], -(-n // bs))

    try:
        # Sandboxed, RESULTS/checkpoints is this run's own folder, bound at PRIVATE/checkpoints.
        root = spec["results"] or (spec["sandbox"]["private_dir"]
                                   if spec["sandbox"] and spec["sandbox"]["checkpoint_dir"] else None)
        record, _ = run_eval(config, root or ".", checks=spec["checks"],
                             extra=spec["extra"], on_start=on_start,
                             on_epoch=lambda e: progress["bar"].epoch(e),
                             warn=lambda m: print(f"warning: {m}", flush=True),
                             write=False, checkpoints=root is not None)
    except (RunError, SubmissionError) as exc:  # could not start: the parent records it
        print(f"error: {exc}", flush=True)
        emit({"error": str(exc), "category": exc.category})
        return 0
    emit({"record": record})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
