"""Arm 2 of the selective-normalization comparison: dropout only, no normalisation.

Training: y = m * x / (1 - p), m ~ Bernoulli(1 - p) per element; evaluation: y = x.
p = 0.1 by default, the drop rate of SelectiveNorm (submissions/selective_norm.py), so the arms
differ only in what they normalise; a study can vary it (CustomNorm(num_features, p=0.2)).
"""

from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.Dropout):
    def __init__(self, num_features: int, p: float = 0.1):
        super().__init__(p=p)
