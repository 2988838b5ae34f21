"""What the parent of a split run keeps and hands out (harness.execution.split): its journal of
scored epochs, the sandboxes' input folders (the submission, the training split, the test
images in plan order; never a label) and the size a weights hand-over may have."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.execution.sandbox import NOBODY, as_root
from harness.store.record import utc_now, write_json_atomic


def weights_limit(arch: str, num_classes: int, inputs) -> int:
    """The largest weights file a model of ``arch`` (fed ``inputs``) may hand over: four times its
    BatchNorm version's state (a layer may keep more state than BatchNorm, not orders of
    magnitude more)."""
    from torch import nn

    from harness.protocol.models import construct

    with torch.device("meta"):  # built, not initialised: no memory, no values
        model = construct(arch, num_classes, nn.BatchNorm2d, inputs)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 4 * size + (64 << 20)


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

    @classmethod
    def open(cls, path: Path, identity: str, run_id: str) -> "Journal":
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("identity") == identity:
                journal = cls(path, identity, data["run_id"], data["started_at"], data["resumes"],
                              data["epochs"], data["probes"], data.get("inference_ms"),
                              data.get("start"))
                if journal.epochs:
                    journal.resumes.append({"from_epoch": len(journal.epochs), "at": utc_now()})
                return journal
        except (OSError, ValueError, KeyError):
            pass
        return cls(path, identity, run_id, utc_now())

    def save(self) -> None:
        write_json_atomic(self.path, {
            "identity": self.identity, "run_id": self.run_id, "started_at": self.started_at,
            "resumes": self.resumes, "epochs": self.epochs, "probes": self.probes,
            "inference_ms": self.inference_ms, "start": self.start})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # readable by the sandbox's unprivileged user
    return path


def give(path: Path) -> None:
    """Make ``path`` (and what is in it) the sandbox user's, when the harness runs as root."""
    if not as_root():
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), NOBODY, NOBODY)
    os.chown(path, NOBODY, NOBODY)


def write_inputs(task, train_in: Path, score_in: Path, train_split, test_split, plan) -> None:
    """The training process's inputs (the submission and the training split) and the scoring
    process's (the submission and the plan's test images; no labels), each in its own folder."""
    from safetensors.torch import save_file

    source = Path(task.spec.submission).read_bytes()
    for folder in (train_in, score_in):
        (folder / "submission.py").write_bytes(source)
    save_file({"inputs": train_split.inputs.contiguous(), "labels": train_split.labels.contiguous()},
              str(train_in / "train.safetensors"))
    save_file({"inputs": test_split.inputs[torch.as_tensor(plan.order)].contiguous()},
              str(score_in / "eval.safetensors"))
    for folder in (train_in, score_in):
        for path in folder.iterdir():
            path.chmod(0o644)  # safetensors writes 0600; the sandbox's user must read them
