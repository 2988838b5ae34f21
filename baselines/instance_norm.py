"""InstanceNorm (Ulyanov et al., 2016, arXiv:1607.08022), as nn.InstanceNorm2d(C, affine=True).

y = gamma_c * (x - mu_bc) / sqrt(var_bc + eps) + beta_c, with mu_bc and the biased var_bc over (H, W)
of each sample and channel; eps = 1e-5; no running statistics, so training and evaluation compute
the same thing. Needs H * W > 1 in training.
"""

from torch import nn


class CustomNorm(nn.InstanceNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-5, affine=True, track_running_stats=False)
