"""BatchNorm: torch's nn.BatchNorm2d (Ioffe & Szegedy, 2015, arXiv:1502.03167).

Training: y = gamma_c * (x - mu_c) / sqrt(var_c + eps) + beta_c, with mu_c and the biased var_c over
(B, H, W) of the batch; running averages (momentum 0.1, unbiased variance) are updated.
Evaluation: the running averages replace the batch statistics. eps = 1e-5.
Not in the reference table; added as the row every reader looks for first.
"""

from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features)
