"""Arm 3 of the selective-normalization comparison: normalisation only (BatchNorm2d, no dropout).

y = gamma_c * (x - mu_c) / sqrt(var_c + eps) + beta_c with batch statistics over (B, H, W) in
training and running averages in evaluation. SelectiveNorm with p = 0 is exactly this layer.
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features)

    def _check_input_dim(self, input: torch.Tensor) -> None:  # any [B, C, *positions]
        if input.dim() < 2:
            raise ValueError(f"expected [B, C, *positions], got {input.dim()}-D input")
