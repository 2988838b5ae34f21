"""What the parent of an untrusted run keeps and hands out (harness.execution.untrusted): its journal of
scored epochs, the sandboxes' input folders (the submission, the training split, the test
images of each scoring process; never a label), the files it writes into them, and the size a
hand-over may have.

Every folder a sandbox sees is one the parent created and alone writes; a sandbox sees it
read-only. Nothing here reads, follows or changes the owner of anything a sandbox wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.store.record import utc_now, write_json_atomic


def weights_limit(arch: str, num_classes: int, inputs) -> int:
    """The largest weights hand-over a model of ``arch`` (fed ``inputs``) may send: four times
    its BatchNorm version's state (a layer may keep more state than BatchNorm, not orders of
    magnitude more)."""
    from torch import nn

    from harness.models import construct

    with torch.device("meta"):  # built, not initialised: no memory, no values
        model = construct(arch, num_classes, nn.BatchNorm2d, inputs)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 4 * size + (64 << 20)


def checkpoint_limit(weights: int) -> int:
    """The largest checkpoint hand-over: the weights, the optimiser's state (Adam's two moments)
    and the random states and epoch lists beside them."""
    return 3 * weights + (64 << 20)


@dataclass
class Journal:
    """The parent's own record of a run's scored epochs, kept across attempts (resume)."""

    path: Path
    identity: str
    run_id: str
    started_at: str
    resumes: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    inference_ms: float | None = None
    start: dict | None = None
    checkpoint_epoch: int | None = None  # the epoch of the training checkpoint the parent keeps
    stopped_early: int | None = None  # the epoch after which early stopping ended the run

    @classmethod
    def open(cls, path: Path, identity: str, run_id: str) -> "Journal":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("identity") == identity:
                journal = cls(path, identity, data["run_id"], data["started_at"], data["resumes"],
                              data["epochs"], data["probes"], data.get("inference_ms"),
                              data.get("start"), data.get("checkpoint_epoch"),
                              data.get("stopped_early"))
                if journal.epochs:
                    journal.resumes.append({"from_epoch": len(journal.epochs), "at": utc_now()})
                return journal
        except Exception:  # noqa: BLE001 - a journal that cannot be read is a run not started
            pass
        return cls(path, identity, run_id, utc_now())

    def save(self) -> None:
        write_json_atomic(self.path, {
            "identity": self.identity, "run_id": self.run_id, "started_at": self.started_at,
            "resumes": self.resumes, "epochs": self.epochs, "probes": self.probes,
            "inference_ms": self.inference_ms, "start": self.start,
            "checkpoint_epoch": self.checkpoint_epoch, "stopped_early": self.stopped_early})

    def keep_checkpoint(self, path: Path, payload: bytes | bytearray, epoch: int) -> None:
        """The training checkpoint after ``epoch`` into ``path`` (the parent's folder), unless
        the one kept is as recent."""
        if epoch > (self.checkpoint_epoch or 0):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, payload, 0o600)
            self.checkpoint_epoch = epoch
            self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def private_dir(prefix: str) -> Path:
    """A fresh folder of the parent's (mkdtemp: a new name, created with O_EXCL semantics),
    readable by the sandbox's unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def write_bytes_atomic(path: Path, data: bytes | bytearray, mode: int = 0o644) -> None:
    """``data`` into ``path``, a name in a folder only the parent writes: a new temporary file
    (O_EXCL), then a rename, so that a reader sees the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_inputs(task, folders: dict[str, Path], train_split, test_split, plan,
                 resume: Path | None = None) -> None:
    """Each sandbox's inputs, each in its own folder: the training process's (the submission, the
    training split, and the checkpoint to resume from), the protocol scoring process's (the
    submission and the test images of the protocol batches) and the check scoring process's
    (the submission and the check batches' images). No labels but the training split's."""
    from safetensors.torch import save_file

    source = Path(task.spec.submission).read_bytes()
    for folder in folders.values():
        (folder / "submission.py").write_bytes(source)
    save_file({"inputs": train_split.inputs.contiguous(), "labels": train_split.labels.contiguous()},
              str(folders["train"] / "train.safetensors"))
    for kind in ("protocol", "check"):
        order, _, _ = plan.feed(kind)
        save_file({"inputs": test_split.inputs[torch.as_tensor(order)].contiguous()},
                  str(folders[kind] / "eval.safetensors"))
    if resume is not None:  # the parent's own file, copied without holding it in memory
        shutil.copyfile(resume, folders["train"] / "resume.pt")
    for folder in folders.values():
        for path in folder.iterdir():
            path.chmod(0o644)  # safetensors writes 0600; the sandbox's user must read them
