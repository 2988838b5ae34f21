"""The Slurm executor: a command's runs as one job array, through submitit.

Each array element runs one task on its node exactly as the local executor would
(:func:`harness.execution.local.run_in_worker`: a worker process under the same timeout, memory limit
and, for untrusted code, the same sandbox) and writes its record into the shared results folder
itself (atomic rename, index appended under a file lock), so nothing depends on the submitting
process staying alive. The submitting process waits for the array, unless detached, and writes a
``crashed`` record for any element that Slurm ended before it could write one (a node failure, the
job's own time limit, ``scancel``); the run's checkpoint survives for the next sweep to resume.

Options (CLI ``--slurm-*`` or a TOML file given to ``--slurm-config``; the CLI wins)::

    partition = "gpu"          # slurm partition
    time_min = 720             # the job's time limit (minutes)
    gpus = 1                   # GPUs per run
    cpus = 8                   # CPUs per run
    mem_gb = 32                # memory per run
    array_parallelism = 16     # at most this many runs of the array at once
    account = "my-account"     # optional
    qos = "normal"             # optional
    constraint = "a100"        # optional
"""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from harness.reporting import Reporter
from harness.store.record import utc_now

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BACKENDS = ("slurm", "submitit-local")  # submitit-local: submitit's local executor (tests, trials)
VANISHED_POLLS = 3  # a job squeue no longer lists, still without a result, this many polls in a row: ended


class ClusterError(ValueError):
    """A cluster configuration that cannot work; one line for the user."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60
    gpus: int = 1
    cpus: int = 8
    mem_gb: float = 32.0
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None

    def __post_init__(self):
        for name in ("time_min", "cpus", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ClusterError(f"slurm {name} must be at least 1")
        if self.gpus < 0 or self.mem_gb <= 0:
            raise ClusterError("slurm gpus must be >= 0 and mem_gb > 0")

    @classmethod
    def from_sources(cls, config_file: str | None, overrides: dict[str, Any]) -> "SlurmOptions":
        """The options of ``config_file`` (TOML, keys as the fields), then non-None overrides."""
        values: dict[str, Any] = {}
        if config_file:
            try:
                with open(config_file, "rb") as fh:
                    values = tomllib.load(fh)
            except OSError as exc:
                raise ClusterError(f"{config_file}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ClusterError(f"{config_file}: not valid TOML: {exc}") from None
            unknown = set(values) - {f.name for f in fields(cls)}
            if unknown:
                raise ClusterError(f"{config_file}: unknown key(s) {sorted(unknown)}; known: "
                                   f"{', '.join(f.name for f in fields(cls))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ClusterError(f"slurm options: {exc}") from None

    def submitit_parameters(self, name: str) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name, "timeout_min": int(self.time_min),
                                  "gpus_per_node": int(self.gpus), "cpus_per_task": int(self.cpus),
                                  "mem_gb": float(self.mem_gb), "nodes": 1, "tasks_per_node": 1,
                                  "slurm_array_parallelism": int(self.array_parallelism)}
        if self.partition:
            params["slurm_partition"] = self.partition
        extra = {k: v for k, v in (("account", self.account), ("qos", self.qos),
                                   ("constraint", self.constraint)) if v}
        if extra:
            params["slurm_additional_parameters"] = extra
        return params


def run_on_node(task, results: str, index: int, isolation, cpus: int = 1) -> dict[str, Any] | None:
    """One array element: run ``task`` in a worker on this node and write its record. The worker
    uses the ``cpus`` threads the job asked for: torch would otherwise start one per core of the
    node and fight the other jobs there."""
    from harness.execution.local import run_in_worker
    from harness.execution.sandbox import sandbox_unavailable
    from harness.execution.task import crash_record
    from harness.store.results import ResultsStore

    def stop(signum, _frame):  # scancel, the time limit, submitit's cancel: end the worker too
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    store = ResultsStore(results)
    reason = sandbox_unavailable() if isolation.untrusted and isolation.namespaces else None
    if reason:  # the submitting host could sandbox; this node cannot
        record = crash_record(task, "crashed", f"node {socket.gethostname()} cannot sandbox an "
                                               f"untrusted run: {reason}")
        store.add(record)
        return record
    threads = str(cpus)
    return run_in_worker(task, store, {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                         store.root / "logs", index, isolation,
                         echo=lambda line: print(line, flush=True))


@dataclass
class Submitted:
    """What a detached sweep leaves behind: the array's job ids, for ``squeue``/``sacct``."""

    job_ids: list[str]
    folder: Path


class SlurmExecutor:
    """Runs tasks as one submitit job array; ``backend`` "submitit-local" uses submitit's local
    executor (the same code path, processes on this machine) for tests and trials."""

    def __init__(self, options: SlurmOptions, isolation=None, backend: str = "slurm",
                 poll_s: float = 5.0):
        from harness.execution.options import Isolation

        if backend not in BACKENDS:
            raise ClusterError(f"unknown cluster backend {backend!r}; choose from {BACKENDS}")
        if importlib.util.find_spec("submitit") is None:
            raise ClusterError("a cluster executor needs submitit, which is not installed: "
                               "pip install 'harness[slurm]'")
        self.options, self.backend, self.poll_s = options, backend, poll_s
        isolation = isolation or Isolation()
        # The job's own limit is Slurm's; the worker's stays just inside it so that the harness,
        # not Slurm, records a timeout (and the checkpoint is kept for a resume).
        limit = 60.0 * options.time_min - 120.0
        timeout = min(isolation.timeout_s or limit, limit) if limit > 0 else isolation.timeout_s
        memory = isolation.memory_bytes or int(0.9 * options.mem_gb * 2**30)
        self.isolation = replace(isolation, timeout_s=timeout, memory_bytes=memory)

    def _executor(self, folder: Path, name: str):
        import submitit

        if self.backend == "slurm":
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            executor.update_parameters(**self.options.submitit_parameters(name))
        else:
            executor = submitit.AutoExecutor(folder=folder, cluster="local")
            executor.update_parameters(name=name, timeout_min=int(self.options.time_min),
                                       gpus_per_node=0, cpus_per_task=int(self.options.cpus))
        return executor

    def submit(self, tasks: list, store, name: str = "harness"):
        """Submit the array; return (jobs, folder). One submitit folder per sweep, holding one
        stdout/stderr log per array element (``%A_%a``)."""
        stamp = utc_now().replace(":", "").replace("+0000", "Z")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:40] or "harness"
        folder = (store.root / "slurm" / f"{stamp}-{name}").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        executor = self._executor(folder, name)
        n = len(tasks)
        jobs = executor.map_array(run_on_node, tasks, [str(store.root.resolve())] * n, list(range(n)),
                                  [self.isolation] * n, [self.options.cpus] * n)
        return jobs, folder

    def run(self, tasks: list, store, *, reporter: Reporter | None = None, detach: bool = False,
            name: str = "harness") -> list[dict[str, Any]] | Submitted:
        """Run every task as one array element; return their records in task order (or, with
        ``detach``, what was submitted)."""
        if not tasks:
            return []
        jobs, folder = self.submit(tasks, store, name)
        if reporter is not None:
            what = f"job array {jobs[0].job_id.split('_')[0]}" if len(jobs) > 1 else f"job {jobs[0].job_id}"
            reporter.worker_line(f"submitted {len(jobs)} run(s) as {what} ({self.backend}); logs in {folder}")
        if detach:
            return Submitted([j.job_id for j in jobs], folder)
        for task in tasks:
            task.report_started(reporter, "queued")
        records: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = set(range(len(tasks)))
        unseen = dict.fromkeys(range(len(tasks)), 0)  # polls for which Slurm no longer knew a job
        while pending:
            queued = self._queued(jobs[i] for i in pending)
            for i in sorted(pending):
                if not jobs[i].done():
                    unseen[i] = unseen[i] + 1 if queued is not None and jobs[i].job_id not in queued else 0
                    if unseen[i] < VANISHED_POLLS:
                        continue
                pending.discard(i)
                records[i] = self._collect(tasks[i], jobs[i], store, vanished=unseen[i] >= VANISHED_POLLS)
                tasks[i].report_finished(reporter, records[i])
            if pending:
                time.sleep(self.poll_s)
        return records  # type: ignore[return-value]

    def _queued(self, jobs) -> set[str] | None:
        """The ids of these jobs that Slurm still holds (pending, running, completing), by squeue;
        None when that cannot be told (submitit's local backend, or squeue failing).

        submitit learns that a job ended without a result from ``sacct``, which needs Slurm's
        accounting database; on clusters without one, a job that was cancelled or killed would
        be waited for forever."""
        if self.backend != "slurm":
            return None
        arrays = sorted({job.job_id.split("_")[0] for job in jobs})
        try:
            out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i",
                                  "--jobs=" + ",".join(arrays)], capture_output=True, text=True,
                                 timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        # squeue exits non-zero once none of the jobs is known any more ("Invalid job id").
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            return None
        return set(out.stdout.split())

    def _collect(self, task, job, store, vanished: bool = False) -> dict[str, Any]:
        """The element's record; a record saying why when the job ended without one."""
        from harness.execution.task import crash_record

        if vanished and not job.paths.result_pickle.exists():
            reason = "it left the queue (cancelled, or killed with its node) and sacct cannot say why"
        else:
            try:
                return job.result()
            except Exception as exc:  # noqa: BLE001 - submitit's Failed/UncompletedJobError and kin
                message = str(exc).strip().splitlines()
                reason = f"{getattr(job, 'state', '?')}: {message[0] if message else exc}"
        record = crash_record(task, "crashed", f"cluster job {job.job_id} ended without a record "
                                               f"({reason}); its checkpoint, if any, is resumed "
                                               "by the next sweep")
        store.add(record)
        return record

