"""Arm 4 of the selective-normalization comparison: dropout, then BatchNorm2d (the usual stacking).

Training: z = m * x / (1 - p) with m ~ Bernoulli(1 - p) per element (p = 0.1 by default, as
SelectiveNorm; a study can vary it); y = BatchNorm2d(z), whose statistics include the dropped
(zeroed) units. Evaluation: y = BatchNorm2d(x) with running averages, which were estimated on
dropped-out activations: the variance shift between training and evaluation that SelectiveNorm
is designed to avoid.
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class _AnyLayoutBatchNorm(nn.BatchNorm2d):
    def _check_input_dim(self, input: torch.Tensor) -> None:  # any [B, C, *positions]
        if input.dim() < 2:
            raise ValueError(f"expected [B, C, *positions], got {input.dim()}-D input")


class CustomNorm(nn.Module):
    def __init__(self, num_features: int, p: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(p=p)
        self.norm = _AnyLayoutBatchNorm(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(x))
