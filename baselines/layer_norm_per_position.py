"""LayerNorm per position (Ba et al., 2016, arXiv:1607.06450), as Transformers and ConvNeXt use it.

For x of shape [B, C, *positions]: y = gamma_c * (x - mu) / sqrt(var + eps) + beta_c, with mu and the
biased var over the C channels of one sample at one position (one token, one pixel); eps = 1e-5.
nn.LayerNorm(C) applied with channels last. Same in training and evaluation; batch-independent.
In an MLP ([B, C]) it is the `layer_norm` baseline; in a CNN it differs from it, which normalises
over all of a sample's (C, H, W).
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.LayerNorm):
    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)
