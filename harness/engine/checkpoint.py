"""End-of-epoch checkpoints, so a killed run resumes where it stopped and ends as if never killed.

A checkpoint holds everything the rest of the run depends on: the model's parameters and
buffers, the optimiser's momentum, the scheduler, the data stream's generator, the global random
states (python, numpy, torch, CUDA: a dropout-like layer draws from torch's), the epochs done so
far, and the record's identity (run id, start time). It is written atomically at the end of every
epoch (the last one kept) under ``RESULTS/checkpoints/``, named by a hash of what makes the run
this run (submission sha256, setting, seed, recipe, data limits, precision, protocol), and removed
once the run's record is written. On CPU a resumed run's record equals an uninterrupted one's,
timings aside (tested with a real SIGKILL).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def run_identity(sha256: str, config, dataset: str, protocol_version: str) -> str:
    """A stable hash of what makes a run this run (speed options and device excluded)."""
    ident = {"sha256": sha256, "arch": config.arch, "dataset": dataset, "seed": config.seed,
             "recipe": config.recipe.identity(), "limit_train": config.limit_train,
             "limit_test": config.limit_test, "precision": config.precision,
             "protocol": protocol_version}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def global_rng_state(device: torch.device) -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_global_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class Checkpoint:
    """The one checkpoint file of one run."""

    def __init__(self, path: str | Path, identity: str):
        self.path, self.identity = Path(path), identity

    @classmethod
    def for_run(cls, results: str | Path, identity: str) -> "Checkpoint":
        return cls(Path(results) / "checkpoints" / f"{identity}.pt", identity)

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically: a reader (or a resumed run) sees the old checkpoint or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({**state, "identity": self.identity}, buf)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none (or it belongs to another run)."""
        if not self.path.is_file():
            return None
        # weights_only=False: the state holds python/numpy RNG states. The file was written by
        # this run's own process; a sandboxed run's checkpoint is loaded only inside its sandbox
        # (its own folder, bound in), never by the parent.
        # Everything to the CPU: RNG states must be CPU tensors; load_state_dict moves the rest.
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        return state if state.get("identity") == self.identity else None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
