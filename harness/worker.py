"""``python -m harness.worker SPEC.json``: one run of a sweep, in its own process.

The parent (:mod:`harness.executors`) wrote SPEC: the run's configuration, the results folder,
the record's extra fields and the pre-flight check results. The worker trains the stored
submission, writes and indexes the record itself, then writes ``{"record": ...}`` to the spec's
``result_path`` so that the parent knows the run ended with a record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.worker SPEC.json", file=sys.stderr)
        return 2
    from harness.cli import metrics_line
    from harness.executors import Task, config_from_json, crash_record
    from harness.record import write_json_atomic
    from harness.runner import RunError, run_eval
    from harness.store import ResultsStore
    from harness.submission import SubmissionError

    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    config = config_from_json(spec["config"])
    store = ResultsStore(spec["results"])
    try:
        record, path = run_eval(config, spec["results"], checks=spec["checks"], extra=spec["extra"],
                                on_epoch=lambda e: print(metrics_line(e), flush=True))
        store.index(record)
    except (RunError, SubmissionError) as exc:  # could not start: recorded, not lost
        print(f"error: {exc}", flush=True)
        task = Task(config, "", spec["sha256"], spec["extra"], spec["checks"])
        record = crash_record(task, "exception", str(exc))
        path = store.add(record)
    write_json_atomic(spec["result_path"], {"record": record, "path": str(path)})
    print(f"{record['status']}: record {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
