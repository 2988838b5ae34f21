"""BatchNorm: torch's nn.BatchNorm2d (Ioffe & Szegedy, 2015, arXiv:1502.03167).

Training: y = gamma_c * (x - mu_c) / sqrt(var_c + eps) + beta_c, with mu_c and the biased var_c over
(B, H, W) of the batch; running averages (momentum 0.1, unbiased variance) are updated.
Evaluation: the running averages replace the batch statistics. eps = 1e-5.
Not in the reference table; added as the row every reader looks for first.
On [B, C] and [B, C, T] (the mlp, rnn and transformer tracks) the statistics are over (B,) and
(B, T): BatchNorm1d's computation, which BatchNorm2d's kernel performs on any [B, C, *positions].
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected [B, C, *positions], got {input.dim()}-D input")
