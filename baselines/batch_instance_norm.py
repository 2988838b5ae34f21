"""Batch-Instance Norm as the reference benchmark defines it (after Nam & Kim, 2018, arXiv:1805.07925).

g_c = sigmoid(rho_c), rho initialised to 1 (g ~ 0.73), learned freely by the fixed SGD.
y = gamma_c * [g_c * xhat_BN + (1 - g_c) * xhat_IN] + beta_c, where
xhat_BN = (x - mean over (B, H, W)) / sqrt(biased var over (B, H, W) + eps) and
xhat_IN = (x - mean over (H, W)) / sqrt(biased var over (H, W) + eps), per sample; eps = 1e-5.
Batch statistics in training *and evaluation* (no running statistics), as in the reference: a
sample's evaluation output depends on the rest of its test batch. See batch_instance_norm_paper.py
for the paper's version.
"""

import torch
from torch import nn


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.rho = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn_var, bn_mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
        in_var, in_mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        x_bn = (x - bn_mean) / torch.sqrt(bn_var + self.eps)
        x_in = (x - in_mean) / torch.sqrt(in_var + self.eps)
        g = torch.sigmoid(self.rho).view(1, -1, 1, 1)
        out = g * x_bn + (1 - g) * x_in
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
