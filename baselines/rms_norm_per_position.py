"""RMSNorm per position (Zhang & Sennrich, 2019, arXiv:1910.07467), as Transformers use it.

For x of shape [B, C, *positions]: y = gamma_c * x / sqrt(mean_c(x^2) + eps), the mean over the C
channels of one sample at one position; no re-centring and, as in the paper, no bias; eps = 1e-5.
Same in training and evaluation; batch-independent.
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
        shape = (1, -1) + (1,) * (x.dim() - 2)
        rms = torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x / rms * self.weight.view(shape)
