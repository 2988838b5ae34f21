"""Switchable Norm as the paper's official code does it (Luo et al., 2019, arXiv:1806.10779).

Differs from switchable_norm.py (the reference benchmark's version) in two ways, both taken from the
official implementation:
- var_IN is the *unbiased* variance over (H, W); LN and BN statistics are derived from the IN
  moments: mu_LN = mean_C mu_IN, var_LN = mean_C(var_IN + mu_IN^2) - mu_LN^2, and likewise over B
  for BN.
- In training the BN statistics update moving averages, r <- 0.997 r + 0.003 stat (buffers start at
  zero, no bias correction); in evaluation those moving averages replace mu_BN and var_BN, so a
  sample's output does not depend on its test batch.
mu = sum_k softmax(w_mu)_k mu_k, var = sum_k softmax(w_var)_k var_k over k in (IN, LN, BN);
y = gamma_c * (x - mu) / sqrt(var + eps) + beta_c, eps = 1e-5. Needs H * W > 1 (unbiased variance).
"""

import torch
from torch import nn

KEEP = 0.997  # the official "momentum": the fraction of the moving average kept at each step


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.mean_logits = nn.Parameter(torch.ones(3))
        self.var_logits = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(1, num_features, 1, 1))
        self.register_buffer("running_var", torch.zeros(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var_in, mean_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=1)
        second_moment = var_in + mean_in ** 2
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = second_moment.mean(1, keepdim=True) - mean_ln ** 2
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = second_moment.mean(0, keepdim=True) - mean_bn ** 2
            with torch.no_grad():
                self.running_mean.mul_(KEEP).add_((1 - KEEP) * mean_bn)
                self.running_var.mul_(KEEP).add_((1 - KEEP) * var_bn)
        else:
            mean_bn, var_bn = self.running_mean, self.running_var
        wm = torch.softmax(self.mean_logits, 0)
        wv = torch.softmax(self.var_logits, 0)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        out = (x - mean) / torch.sqrt(var + self.eps)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
