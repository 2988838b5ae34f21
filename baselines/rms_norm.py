"""RMSNorm over (C, H, W) (Zhang & Sennrich, 2019, arXiv:1910.07467).

y = gamma_c * x / sqrt(mean(x^2) + eps), the mean over all of a sample's (C, H, W); no re-centring
and, as in the paper, no bias; eps = 1e-5. Same in training and evaluation; batch-independent.
On [B, C, *positions] the mean is over all of a sample's channels and positions; per position, as
Transformers use it, is `rms_norm_per_position`.
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(x.pow(2).mean(dim=tuple(range(1, x.dim())), keepdim=True) + self.eps)
        return x / rms * self.weight.view((1, -1) + (1,) * (x.dim() - 2))
