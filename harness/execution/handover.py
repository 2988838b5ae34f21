"""What crosses from a sandboxed run's processes to the trusted parent, and how it is bounded.

The training process's folder (``/state`` inside, ``RESULTS/checkpoints/sandboxed/ID/`` outside)::

    checkpoint.pt                     its own end-of-epoch checkpoint; only it ever loads it
    exchange/start.json               the model it built (schema.StartReport)
    exchange/epoch-000005.json        what it says of epoch 5: train loss and accuracy, lr, time,
                                      the layer probe (schema.EpochReport)
    exchange/epoch-000005.safetensors the model's weights and buffers after epoch 5
    exchange/end.json                 how it ended (schema.EndReport)

Weights travel as safetensors, a format that holds tensors and nothing else (no code, unlike a
pickle); the parent only checks their size and passes them, read-only, to the scoring process,
which loads them into its own model. Every report is read with a size cap and validated against
:mod:`harness.store.schema` before anything of it is used; a report that is not valid ends the run as
``malformed``. The training process waits until the parent has scored an epoch (and deleted its
weights) before it trains the next: training and scoring take turns, as they do in one process,
so they never compete for the same cores.

The scoring process talks over two pipes: it says ``ready`` once it has built its model, then,
for each ``score EPOCH`` request, answers ``logits EPOCH ROWS COLS MEDIAN_MS`` followed by exactly
ROWS x COLS little-endian float32 values, or ``error EPOCH CATEGORY MESSAGE``. Lines are at most
:data:`LINE_BYTES`; the parent reads exactly the bytes it expects and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
from pathlib import Path

import numpy as np
import torch

from harness.store import schema
from harness.store.record import write_json_atomic

REPORT_BYTES = 4 << 20
LINE_BYTES = 1024
POLL_S = 0.005
START, END = "start.json", "end.json"


class HandoverError(Exception):
    """What a sandboxed process handed over is not what the harness asked for."""


def report_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}.json"


def weights_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}.safetensors"


def write_json(folder: Path, name: str, payload: dict) -> None:
    """Atomically (temporary file, then rename): the parent sees the whole file or none."""
    write_json_atomic(folder / name, payload)


# -- the training process's side ---------------------------------------------------------------

def hand_over(folder: Path, metrics, model: torch.nn.Module, probe: dict | None) -> None:
    """Write one epoch's report and weights (weights last: their name is the signal), then wait
    until the parent has scored them (it deletes them)."""
    from safetensors.torch import save_file

    write_json(folder, report_name(metrics.epoch), {
        "epoch": metrics.epoch, "lr": metrics.lr, "train_loss": metrics.train_loss,
        "train_acc": metrics.train_acc, "train_s": metrics.train_s, "probe": probe})
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    tmp = folder / f".{weights_name(metrics.epoch)}.tmp"
    save_file(state, str(tmp))
    handed = folder / weights_name(metrics.epoch)
    os.replace(tmp, handed)
    while handed.exists():
        time.sleep(POLL_S)


# -- the parent's side -------------------------------------------------------------------------

def read_report(path: Path, model: type[schema.BaseModel]):
    """A report, validated against ``model``; raises HandoverError."""
    try:
        size = path.stat().st_size
        if size > REPORT_BYTES:
            raise HandoverError(f"{path.name} is {size} bytes (at most {REPORT_BYTES})")
        with open(path, "rb") as fh:
            data = json.loads(fh.read(REPORT_BYTES + 1))
        return model.model_validate(data)
    except HandoverError:
        raise
    except (OSError, ValueError, schema.ValidationError) as exc:
        raise HandoverError(f"{path.name} is not a valid {model.__name__}: "
                            f"{str(exc).splitlines()[0][:300]}") from None


def check_weights(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise HandoverError(f"{path.name} is {size / 2**20:.0f} MiB, more than the "
                            f"{limit / 2**20:.0f} MiB this model's state can take")


# -- the scoring process's pipes ---------------------------------------------------------------

class Channel:
    """Reading one pipe: bounded lines, exact payloads, nothing more."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def _fill(self, deadline: float | None) -> bool:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise HandoverError("the scoring process did not answer in time")
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self, deadline: float | None = None) -> str:
        while b"\n" not in self.buf:
            if len(self.buf) > LINE_BYTES:
                raise HandoverError("the scoring process sent a line longer than allowed")
            if not self._fill(deadline):
                raise HandoverError("the scoring process ended without an answer")
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > LINE_BYTES:
            raise HandoverError("the scoring process sent a line longer than allowed")
        return line.decode("utf-8", errors="replace")

    def exactly(self, n: int, deadline: float | None = None) -> bytes:
        chunks, have = [self.buf[:n]], len(self.buf[:n])
        self.buf = self.buf[n:]
        while have < n:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                raise HandoverError("the scoring process did not answer in time")
            chunk = os.read(self.fd, min(1 << 20, n - have))
            if not chunk:
                raise HandoverError(f"the scoring process sent {have} of {n} bytes of logits")
            chunks.append(chunk)
            have += len(chunk)
        return b"".join(chunks)


LOGITS = re.compile(r"^logits (\d{1,6}) (\d{1,9}) (\d{1,6}) ([0-9.]{1,20}|nan)$")
ERROR = re.compile(r"^error (\d{1,6}) (interface|exception|out-of-memory) (.{0,500})$")


def read_logits(channel: Channel, epoch: int, rows: int, cols: int,
                deadline: float | None = None) -> tuple[torch.Tensor, float | None]:
    """The scoring process's answer for ``epoch``: logits ``[rows, cols]`` and its median
    forward time per batch (ms); raises HandoverError (or ScoringFailed) otherwise."""
    line = channel.line(deadline)
    error = ERROR.match(line)
    if error and int(error.group(1)) == epoch:
        raise ScoringFailed(error.group(2), error.group(3))
    match = LOGITS.match(line)
    if not match or int(match.group(1)) != epoch:
        raise HandoverError(f"the scoring process answered {line[:80]!r} to epoch {epoch}")
    if (int(match.group(2)), int(match.group(3))) != (rows, cols):
        raise HandoverError(f"the scoring process sent logits of shape "
                            f"{match.group(2)}x{match.group(3)}, expected {rows}x{cols}")
    data = channel.exactly(rows * cols * 4, deadline)
    logits = torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(rows, cols).copy())
    median = float(match.group(4))
    return logits, (median if np.isfinite(median) else None)


class ScoringFailed(Exception):
    """The scoring process could not score an epoch (its own account: the layer raised)."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


def send(fd: int, line: str, payload: bytes = b"") -> None:
    data = line.encode()[:LINE_BYTES] + b"\n" + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
