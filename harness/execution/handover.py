"""What crosses from a sandboxed run's processes to the trusted parent, and how it is bounded.

Nothing crosses as a file. A sandbox's writable space is tmpfs that dies with it (see
:mod:`harness.execution.sandbox`); the parent never opens, follows, cleans or mounts anything a
sandbox could have written. Everything it takes from a sandbox comes through a pipe as bytes,
read with a size cap and parsed by a reader that is total: whatever the bytes, it returns the
parsed value or raises :class:`HandoverError` (never anything else), and the run ends as
``malformed``.

**The training process** writes frames to its hand-over pipe, each a header line
``KIND EPOCH LENGTH`` and exactly LENGTH bytes::

    start 0 N        the model it built (JSON, schema.StartReport)
    epoch E N        what it says of epoch E: train loss and accuracy, lr, time, the layer probe
                     (JSON, schema.EpochReport)
    weights E N      the model's weights and buffers after epoch E (safetensors)
    checkpoint E N   its own checkpoint after epoch E (opaque bytes: only a training process
                     ever loads it, inside its sandbox)
    end 0 N          how it ended (JSON, schema.EndReport)

After each epoch's weights it waits for the parent's answer on a second pipe: ``next`` once the
epoch is scored and journaled, or ``stop`` (early stopping). Training and scoring take turns, as
they do in one process, so they never compete for the same cores. The parent keeps each
checkpoint in a folder only it writes and, on a resumed attempt, gives it back read-only in the
new training process's ``/in``.

Weights travel as safetensors, a format that holds tensors and nothing else (no code, unlike a
pickle). The parent checks their header (dtypes, shapes, offsets that tile the payload) and
writes them into its own folder, which the scoring processes see read-only at ``/weights``.

**A scoring process** talks over two pipes: it says ``ready`` once it has built its model, then,
for each ``score EPOCH`` request, answers ``logits EPOCH ROWS COLS MEDIAN_MS`` followed by exactly
ROWS x COLS little-endian float32 values, or ``error EPOCH CATEGORY MESSAGE``. Lines are at most
:data:`LINE_BYTES`; the parent reads exactly the bytes it expects and nothing else.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from harness.execution.stops import start_thread
from harness.execution.watch import printable, printable_json
from harness.store import schema

REPORT_BYTES = 4 << 20
LINE_BYTES = 1024
POLL_S = 0.2  # how often a blocked read looks at the watch
KINDS = ("start", "epoch", "weights", "checkpoint", "end")


class HandoverError(Exception):
    """What a sandboxed process handed over is not what the harness asked for."""


class Truncated(HandoverError):
    """The process ended in the middle of a hand-over (it died, or was killed)."""


class Silent(HandoverError):
    """The process said nothing before the deadline."""


def weights_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}.safetensors"


# -- the training process's side ---------------------------------------------------------------

class Sender:
    """The training process's end of its two pipes: frames out, the parent's answers in."""

    def __init__(self, out_fd: int, in_fd: int):
        self.out_fd, self.answers = out_fd, os.fdopen(in_fd, "r", encoding="ascii", errors="replace")

    def send(self, kind: str, epoch: int, payload: bytes) -> None:
        send(self.out_fd, f"{kind} {epoch} {len(payload)}", payload)

    def json(self, kind: str, epoch: int, value: dict) -> None:
        from harness.store.record import finite  # NaN and infinities as null, as in a record

        self.send(kind, epoch, json.dumps(finite(value), allow_nan=False).encode())

    def wait(self) -> str:
        """The parent's answer: ``next`` or ``stop`` (``stop`` too when the parent is gone)."""
        return self.answers.readline().strip() or "stop"


def hand_over(sender: Sender, metrics, model: torch.nn.Module, probe: dict | None) -> bool:
    """Send one epoch's report and weights; wait until the parent has scored them. Returns
    whether the run stops here (the parent's early stopping)."""
    from safetensors.torch import save

    sender.json("epoch", metrics.epoch, {
        "epoch": metrics.epoch, "lr": metrics.lr, "train_loss": metrics.train_loss,
        "train_acc": metrics.train_acc, "train_s": metrics.train_s, "probe": probe})
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    sender.send("weights", metrics.epoch, save(state))
    return sender.wait() == "stop"


class HandedCheckpoint:
    """The training process's checkpoint (harness.engine.checkpoint's interface): saved by sending
    its bytes to the parent, loaded from what the parent gave back in ``/in``."""

    def __init__(self, sender: Sender, identity: str, resume: Path):
        self.sender, self.identity, self.resume = sender, identity, resume

    def save(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save({**state, "identity": self.identity}, buf)
        self.sender.send("checkpoint", len(state["epochs"]), buf.getvalue())

    def load(self) -> dict | None:
        from harness.engine.checkpoint import Checkpoint

        return Checkpoint(self.resume, self.identity).load()

    def remove(self) -> None:
        pass


# -- the parent's side: reading pipes ----------------------------------------------------------

Alive = Callable[[], None]  # raises when the run was killed meanwhile
Payload = bytes | bytearray  # what came through a pipe: a large one stays the buffer it was read into


@dataclass(frozen=True)
class Frame:
    kind: str
    epoch: int
    payload: Payload


FRAME = re.compile(r"^(start|epoch|weights|checkpoint|end) (\d{1,6}) (\d{1,12})$")


class Channel:
    """Reading one pipe: bounded lines, exact payloads, nothing more."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def _wait(self, deadline: float | None, alive: Alive | None) -> None:
        while True:
            timeout = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if ready:
                return
            if alive is not None:
                alive()
            if deadline is not None and time.monotonic() >= deadline:
                raise Silent("the sandboxed process did not answer in time")

    def _fill(self, deadline: float | None, alive: Alive | None, limit: int) -> bool:
        self._wait(deadline, alive)
        chunk = os.read(self.fd, limit)
        self.buf += chunk
        return bool(chunk)

    def line(self, deadline: float | None = None, alive: Alive | None = None) -> str:
        """The next line (at most LINE_BYTES); raises Truncated at the end of the pipe."""
        line = self.line_or_end(deadline, alive)
        if line is None:
            raise Truncated("the sandboxed process ended without an answer")
        return line

    def line_or_end(self, deadline: float | None = None, alive: Alive | None = None) -> str | None:
        """The next line (at most LINE_BYTES), or None at the end of the pipe between lines."""
        while b"\n" not in self.buf:
            if len(self.buf) > LINE_BYTES:
                raise HandoverError("the sandboxed process sent a line longer than allowed")
            if not self._fill(deadline, alive, LINE_BYTES + 1):
                if not self.buf:
                    return None
                raise Truncated("the sandboxed process ended without an answer")
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > LINE_BYTES:
            raise HandoverError("the sandboxed process sent a line longer than allowed")
        return line.decode("utf-8", errors="replace")

    def exactly(self, n: int, deadline: float | None = None,
                alive: Alive | None = None) -> Payload:
        """``n`` bytes, read into one buffer (the parent holds a hand-over once, not twice)."""
        out = bytearray(n)
        have = len(self.buf[:n])
        out[:have], self.buf = self.buf[:n], self.buf[n:]
        view = memoryview(out)
        while have < n:
            self._wait(deadline, alive)
            got = os.readv(self.fd, [view[have:have + (1 << 20)]])
            if not got:
                raise Truncated(f"the sandboxed process sent {have} of {n} bytes and ended")
            have += got
        view.release()
        return bytes(out) if n < 1 << 16 else out  # small: immutable; large: no second copy

    def frame(self, caps: dict[str, int], alive: Alive | None = None,
              deadline: float | None = None) -> Frame | None:
        """The training process's next frame (its kind's payload at most ``caps[kind]`` bytes),
        or None when its pipe ended between frames."""
        line = self.line_or_end(deadline, alive)
        if line is None:
            return None
        match = FRAME.match(line)
        if not match:
            raise HandoverError(f"the training process sent {line[:80]!r}, not a hand-over")
        kind, epoch, length = match.group(1), int(match.group(2)), int(match.group(3))
        if length > caps[kind]:
            raise HandoverError(f"its {kind} hand-over is {length} bytes (at most {caps[kind]})")
        return Frame(kind, epoch, self.exactly(length, deadline, alive))


# -- the parent's side: total readers of what came through -------------------------------------

def parse_report(payload: Payload, model: type[schema.BaseModel]):
    """A JSON report, validated against ``model``; raises HandoverError, whatever the bytes."""
    try:
        if len(payload) > REPORT_BYTES:
            raise HandoverError(f"{len(payload)} bytes (at most {REPORT_BYTES})")
        value = json.loads(payload.decode("utf-8"))
        if schema.json_depth(value) > schema.MAX_DEPTH:
            raise HandoverError(f"nested more than {schema.MAX_DEPTH} deep")
        return model.model_validate(printable_json(value))
    except HandoverError as exc:
        raise HandoverError(f"not a valid {model.__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - deep nesting (RecursionError), huge numbers, ...
        first = (str(exc).splitlines() or [""])[0][:300]
        raise HandoverError(f"not a valid {model.__name__}: {type(exc).__name__}: {first}") from None


PROBE_BYTES = 256 << 10  # one epoch's layer probe, as JSON (a record holds three in 1 MiB)


def check_probe(report: schema.EpochReport, epochs: int, instruments: bool) -> dict:
    """An epoch report's layer probe, if it is one a training process takes (after the first,
    middle and last epochs, with the instruments on) and of a size a record can hold; raises
    HandoverError otherwise."""
    from harness.engine.instruments import probe_epochs

    probe = report.probe.model_dump(exclude_none=True) if report.probe is not None else {}
    if (not instruments or probe.get("epoch") != report.epoch or report.epoch not in probe_epochs(epochs)
            or len(json.dumps(probe)) > PROBE_BYTES):
        raise HandoverError(f"a layer probe with epoch {report.epoch}'s report that no training "
                            f"process takes")
    return probe


# safetensors' dtypes and their sizes in bytes (the format's own list).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
HEADER_BYTES = 16 << 20
MAX_TENSORS = 100_000


def check_weights(data: Payload, limit: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors (name -> dtype, shape) of a safetensors payload, after checking that it is one:
    at most ``limit`` bytes, a JSON header of known dtypes and shapes whose data offsets tile the
    rest exactly, string metadata. Raises HandoverError, whatever the bytes."""
    try:
        return _check_weights(data, limit)
    except HandoverError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise HandoverError(f"the weights are not safetensors: {type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0][:200]}") from None


def _check_weights(data: Payload, limit: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    def bad(why: str) -> HandoverError:
        return HandoverError(f"the weights are not safetensors: {why}")

    if len(data) > limit:
        raise HandoverError(f"the weights are {len(data) / 2**20:.0f} MiB, more than the "
                            f"{limit / 2**20:.0f} MiB this model's state can take")
    if len(data) < 8:
        raise bad("shorter than a header")
    size = int.from_bytes(data[:8], "little")
    if size > min(HEADER_BYTES, len(data) - 8):
        raise bad(f"a header of {size} bytes")
    header = json.loads(data[8:8 + size].decode("utf-8"))
    if not isinstance(header, dict) or len(header) > MAX_TENSORS:
        raise bad("the header is not a map of tensors")
    body = len(data) - 8 - size
    spans, tensors = [], {}
    for name, info in header.items():
        if name == "__metadata__":
            if not (isinstance(info, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in info.items())):
                raise bad("metadata that is not text")
            continue
        if len(name) > 1000 or not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name[:80]!r} is not described by dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise bad(f"tensor {name[:80]!r} has dtype {str(dtype)[:20]!r}")
        if not (isinstance(shape, list) and len(shape) <= 16
                and all(type(d) is int and 0 <= d <= 1 << 40 for d in shape)):
            raise bad(f"tensor {name[:80]!r} has shape {str(shape)[:60]}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1] <= body):
            raise bad(f"tensor {name[:80]!r} has offsets {str(offsets)[:60]}")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise bad(f"tensor {name[:80]!r}'s offsets do not hold its shape")
        spans.append(tuple(offsets))
        tensors[name] = (dtype, tuple(shape))
    at = 0
    for begin, end in sorted(spans):
        if begin != at:
            raise bad("its tensors' data overlap or leave gaps")
        at = end
    if at != body:
        raise bad("data beyond its tensors")
    return tensors


NUMBER = r"\d{1,9}(?:\.\d{1,9})?(?:e[-+]?\d{1,3})?"
LOGITS = re.compile(rf"^logits (\d{{1,6}}) (\d{{1,9}}) (\d{{1,6}}) ({NUMBER}|nan)$")
ERROR = re.compile(r"^error (\d{1,6}) (interface|exception|out-of-memory) (.{0,500})$")


def read_logits(channel: Channel, epoch: int, rows: int, cols: int, deadline: float | None = None,
                alive: Alive | None = None) -> tuple[torch.Tensor, float | None]:
    """A scoring process's answer for ``epoch``: logits ``[rows, cols]`` and its median forward
    time per batch (ms); raises HandoverError (or ScoringFailed) otherwise."""
    line = channel.line(deadline, alive)
    error = ERROR.match(line)
    if error and int(error.group(1)) == epoch:
        raise ScoringFailed(error.group(2), printable(error.group(3)))
    match = LOGITS.match(line)
    if not match or int(match.group(1)) != epoch:
        raise HandoverError(f"the scoring process answered {line[:80]!r} to epoch {epoch}")
    if (int(match.group(2)), int(match.group(3))) != (rows, cols):
        raise HandoverError(f"the scoring process sent logits of shape "
                            f"{match.group(2)}x{match.group(3)}, expected {rows}x{cols}")
    data = channel.exactly(rows * cols * 4, deadline, alive)
    logits = torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(rows, cols).copy())
    median = float(match.group(4))
    return logits, (median if math.isfinite(median) and median < 1e12 else None)


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


def drain(fd: int, cap: int) -> Callable[[], bytes | None]:
    """Read ``fd`` to its end in a thread of its own, keeping at most ``cap`` bytes; returns a
    function that waits for the end and gives the bytes, or None when there were more than
    ``cap`` (a result pipe, read while its writer runs, so that the writer never blocks on it)."""

    kept: list[bytes] = []
    state = {"size": 0}

    def pump() -> None:
        try:
            while chunk := os.read(fd, 1 << 16):
                state["size"] += len(chunk)
                if state["size"] <= cap:
                    kept.append(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)

    thread = start_thread(pump)

    def result(timeout: float = 30.0) -> bytes | None:
        thread.join(timeout)
        if thread.is_alive() or state["size"] > cap:
            return None
        return b"".join(kept)

    return result
