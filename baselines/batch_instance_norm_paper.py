"""Batch-Instance Norm as the paper's official code does it (Nam & Kim, 2018, arXiv:1805.07925).

y = gamma_c * [rho_c * xhat_BN + (1 - rho_c) * xhat_IN] + beta_c with the gate rho_c itself (no
sigmoid) kept in [0, 1] and initialised to 1. xhat_BN is BatchNorm: batch statistics over (B, H, W)
in training, updating running averages (momentum 0.1, unbiased variance), which replace them in
evaluation, so a sample's evaluation output does not depend on its test batch. xhat_IN uses the
biased mean/variance over (H, W) per sample. eps = 1e-5.

The official recipe clips rho to [0, 1] after every optimiser step, trains it with 10x the learning
rate and no weight decay. The harness's optimiser is fixed, so the module does what it can itself:
- the clip is a projection at the start of every training forward, i.e. right after the step;
- rho = sqrt(10) * theta with theta the stored parameter: plain SGD (with momentum) on theta then
  moves rho exactly as SGD with 10x the learning rate would;
- weight decay cannot be turned off from inside a module: it still pulls rho towards 0 at the
  protocol's rate (lr * 5e-4 * rho per step). This is the one remaining difference from the paper.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

LR_SCALE = math.sqrt(10.0)


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.eps = 1e-5
        self.momentum = 0.1
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.gate_theta = nn.Parameter(torch.full((num_features,), 1.0 / LR_SCALE))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @property
    def gate(self) -> torch.Tensor:
        return self.gate_theta * LR_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.gate_theta.clamp_(0.0, 1.0 / LR_SCALE)
        x_bn = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training,
                            self.momentum, self.eps)
        in_var, in_mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        x_in = (x - in_mean) / torch.sqrt(in_var + self.eps)
        g = self.gate.view(1, -1, 1, 1)
        out = g * x_bn + (1 - g) * x_in
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
