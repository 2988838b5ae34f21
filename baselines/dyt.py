"""Dynamic Tanh, DyT (Zhu, Chen, He, LeCun & Liu, 2025, "Transformers without Normalization",
arXiv:2503.10622): a normalisation layer's replacement that computes no statistics.

For x of shape [B, C, *positions]: y = gamma_c * tanh(alpha * x) + beta_c, alpha one learnable
scalar. Initialisation as the paper's default: alpha = 0.5, gamma = 1, beta = 0. Elementwise, so
the same in training and evaluation and independent of the batch and of the other positions.
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")
ALPHA_INIT = 0.5


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), ALPHA_INIT))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.tanh(self.alpha * x) * self.weight.view(shape) + self.bias.view(shape)
