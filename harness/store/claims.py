"""Claims: a run's "I am running this" marker in the shared results folder (``RESULTS/running/``).

Claims are written by whoever runs the worker, on any machine sharing the results folder, and
carry the host, the pid and the Slurm job id; the heartbeat is the claim file's modification time.
A planned run whose claim is live is left to its worker (:mod:`harness.store.plan`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from harness.store.record import slurm_job, utc_now, write_json_atomic

STALE_S = 300.0  # a claim not refreshed for this long belongs to a worker that is gone
HEARTBEAT_S = 30.0


def claim_path(root: Path, key: str) -> Path:
    return Path(root) / "running" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


class Claim:
    """A run's "I am running this" marker in the shared results folder."""

    def __init__(self, root: Path, key: str, label: str):
        self.path = claim_path(root, key)
        self.payload = {"key": key, "label": label, "host": socket.gethostname(), "pid": os.getpid(),
                        "slurm": slurm_job(), "started_at": utc_now()}
        self._last = 0.0

    def __enter__(self) -> "Claim":
        write_json_atomic(self.path, self.payload)
        self._last = time.monotonic()
        return self

    def beat(self) -> None:
        """Refresh the heartbeat, at most every HEARTBEAT_S."""
        if time.monotonic() - self._last >= HEARTBEAT_S:
            try:
                os.utime(self.path)
            except OSError:
                pass
            self._last = time.monotonic()

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def live_claims(root: Path) -> set[str]:
    """The run keys that a worker, here or on another machine, is running now."""
    now, out = time.time(), set()
    folder = Path(root) / "running"
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            if now - path.stat().st_mtime <= STALE_S:
                out.add(json.loads(path.read_text())["key"])
        except (OSError, ValueError, KeyError):
            continue  # released meanwhile, or torn
    return out
