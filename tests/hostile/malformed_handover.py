"""Writes its own hand-overs into the harness's pipes, malformed in the way @VARIANT@ names,
and leaves: the training process's frames (a report of the wrong types, a header that is not a
frame, a length past every cap, weights that are not safetensors, a checkpoint out of turn, an
end report with keys of its own) or the scoring process's answer (a median that is not a number,
logits cut short)."""
import json
import os

import torch
from torch import nn

VARIANT = "@VARIANT@"
try:
    SPEC = json.load(open("/in/spec.json"))  # the worker's spec: the harness's own pipes
except OSError:
    SPEC = {"mode": None}


def frame(kind, epoch, payload):
    os.write(SPEC["handover_fd"], f"{kind} {epoch} {len(payload)}\n".encode() + payload)


def report(**values):
    return json.dumps({"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 50.0, "train_s": 1.0,
                       **values}).encode()


def train_side():
    if VARIANT == "report":
        frame("epoch", 1, json.dumps({"epoch": "one", "lr": [], "train_acc": "lots",
                                      "train_s": -1}).encode())
    elif VARIANT == "header":
        os.write(SPEC["handover_fd"], b"epoch one 10\n0123456789")
    elif VARIANT == "huge":
        os.write(SPEC["handover_fd"], b"weights 1 999999999999\n")
    elif VARIANT == "weights":
        frame("epoch", 1, report())
        frame("weights", 1, (64).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [1e9]}}' + b"\xff" * 100)
    elif VARIANT == "checkpoint":
        frame("checkpoint", 5, b"\x80\x04junk")
    elif VARIANT == "end":
        frame("end", 0, json.dumps({"status": "ok", "divergence": [1, 2], "best_acc": 100.0}).encode())
    elif VARIANT == "nested":
        frame("epoch", 1, b"[" * 100_000 + b"]" * 100_000)
    os._exit(0)


def score_side():
    answers = SPEC["answers_fd"]
    rows = sum(SPEC["batches"])
    if VARIANT == "median":
        os.write(answers, f"logits 1 {rows} {SPEC['num_classes']} 1.2.3\n".encode())
    elif VARIANT == "short":
        os.write(answers, f"logits 1 {rows} {SPEC['num_classes']} 5.0\n".encode() + b"\0" * 12)
    os._exit(0)


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if torch.initial_seed() == 2:
            if self.training and SPEC["mode"] == "train" and VARIANT not in ("median", "short"):
                train_side()
            if not self.training and SPEC["mode"] == "score" and VARIANT in ("median", "short"):
                score_side()
        return super().forward(x)
