"""The run record: one JSON file per run, written atomically. The schema is in docs/run-record.md."""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

# 2 added the training-dynamics fields (dynamics, probes, inference, norm_layers, instruments,
# stopped_early) and the study-only recipe fields; 3 the scoring's batch check (evaluation, the
# epochs' check_change and check_flips, the batch-dependent flag), isolation and reported.
# Older records are read and upgraded.
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

# Keys whose values depend on the machine's speed or the moment, not on what was computed.
# Two runs of the same config and seed on the same CPU agree on everything else.
# "resumes" (when a killed run was continued) and "seconds" (how long a speed check took) depend
# on the moment too.
TIMING_KEYS = frozenset({"run_id", "started_at", "ended_at", "wall_s", "train_s", "eval_s",
                         "epoch_s", "train_images_per_s", "peak_memory_bytes", "record_path",
                         "resumes", "seconds", "inference", "probe_s", "probe_fraction"})


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(*parts: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return "-".join([*parts, stamp, secrets.token_hex(3)])


@lru_cache(maxsize=None)
def git_commit(path: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirtiness of the git work tree holding the harness, if it is one."""
    here = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict[str, Any]:
    import numpy
    import torch
    import torchvision

    from harness import __version__

    # None: the environment of a parent process that writes a record for a run that died.
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    return {
        "device": str(device) if device is not None else None,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "harness": __version__,
        "git": git_commit(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "argv": sys.argv,
        "slurm": slurm_job(),
    }


def slurm_job() -> dict[str, str] | None:
    """The Slurm job this process runs in (None outside one), so a record names its job."""
    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID",
             "array_task_id": "SLURM_ARRAY_TASK_ID", "partition": "SLURM_JOB_PARTITION",
             "node": "SLURMD_NODENAME", "cluster": "SLURM_CLUSTER_NAME",
             "restart_count": "SLURM_RESTART_COUNT"}  # requeued (preempted) this many times
    job = {field: os.environ[var] for field, var in names.items() if var in os.environ}
    return job if "job_id" in job else None


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a diverged run's non-finite numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # once, at import: os.umask can only be read by setting it, racing threads


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON to a temporary file in the same folder, fsync it, then rename over ``path``."""
    path = Path(path)
    payload = finite(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 would hide results from other readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """A record of any readable schema version, upgraded to the current one in memory."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a run record is a JSON object, this is a {type(record).__name__}")
    version = record.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: run record schema version {version!r}, this harness reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    return upgrade_record(record)


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """Fill in what an older record lacks. Version 1: the curve metrics are derived from its
    epochs; what was never measured (probes, inference latency, the norm layers) is empty.
    Versions 1 and 2: no batch check was run (``evaluation`` null; their pre-flight check row
    still says whether the layer looked batch-dependent). The file is not rewritten;
    ``upgraded_from`` says the record was."""
    version = record.get("schema_version")
    if version == SCHEMA_VERSION:
        return record
    from harness.store.derived import curve_metrics

    record = dict(record)
    record.update({"upgraded_from": version, "schema_version": SCHEMA_VERSION})
    if version == 1:
        record.update({
            "dynamics": curve_metrics(record.get("epochs") or []),
            "probes": [], "inference": None, "norm_layers": None, "stopped_early": None,
            "instruments": {"enabled": False, "probe_s": 0.0, "probe_fraction": None},
        })
    record.setdefault("evaluation", None)
    record.setdefault("reported", [])
    return record


def strip_timings(value: Any) -> Any:
    """The record without anything that depends on wall-clock time or the machine's speed."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value
