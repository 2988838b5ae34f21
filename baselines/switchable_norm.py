"""Switchable Norm as the reference benchmark defines it (after Luo et al., 2019, arXiv:1806.10779).

Statistics k in (IN, LN, BN): mu_IN, var_IN over (H, W) per sample and channel; mu_LN, var_LN over
(C, H, W) per sample; mu_BN, var_BN over (B, H, W) per channel; all variances biased.
mu = sum_k softmax(w_mu)_k mu_k, var = sum_k softmax(w_var)_k var_k, with w_mu and w_var three logits
each, initialised to ones and shared across channels.
y = gamma_c * (x - mu) / sqrt(var + eps) + beta_c, eps = 1e-5.
Batch statistics in training *and evaluation* (no moving averages), as in the reference: a sample's
evaluation output depends on the rest of its test batch. See switchable_norm_paper.py for the
paper's version.
"""

import torch
from torch import nn


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.mean_logits = nn.Parameter(torch.ones(3))
        self.var_logits = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var_in, mean_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        var_ln, mean_ln = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)
        var_bn, mean_bn = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
        wm = torch.softmax(self.mean_logits, 0)
        wv = torch.softmax(self.var_logits, 0)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        out = (x - mean) / torch.sqrt(var + self.eps)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
