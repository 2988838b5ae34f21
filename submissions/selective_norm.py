"""SelectiveNorm: dropout, with the normalisation statistics taken over the kept units only.

From the selective-normalization research plan: conventional "dropout then BatchNorm" normalises
with statistics that include the units dropout has just zeroed, so the statistics describe a
network that does not exist at that step. SelectiveNorm normalises only the active units.

Training, for input x of shape [B, C, H, W] (or [B, C] and [B, C, T]: the sums run over the batch
and every position):
    m ~ Bernoulli(1 - p), one draw per element                     (the dropout mask)
    n_c    = sum_{b,h,w} m                                          (kept units of channel c)
    mu_c   = sum_{b,h,w} m * x / n_c                                (mean of the kept units)
    var_c  = sum_{b,h,w} m * (x - mu_c)^2 / n_c                     (biased variance, kept units)
    y      = m * (gamma_c * (x - mu_c) / sqrt(var_c + eps) + beta_c) / (1 - p)
    running_mean <- (1 - 0.1) running_mean + 0.1 mu_c
    running_var  <- (1 - 0.1) running_var  + 0.1 var_c * n_c / (n_c - 1)
Evaluation: no mask and no rescaling; y = gamma_c * (x - running_mean) / sqrt(running_var + eps) + beta_c,
so evaluation is deterministic and each sample's output is independent of its batch.

The choices, and why:
- p = 0.1 by default (a study can vary it: CustomNorm(num_features, p=0.2), docs/studies.md). The
  layer sits in every norm slot (57 in ResNet-56), so dropout is applied that many
  times along a path; the usual 0.5 would drown the signal, 0.1 is the common rate for dropout
  inside deep conv nets.
- Element mask, not channel mask: the plan's unit is the neuron, and in a conv net that is one
  activation. A per-element mask also leaves every channel with kept units, so mu_c and var_c
  always exist (n_c is clamped to 1 only for degenerate inputs).
- A dropped unit outputs 0: it is inactive for this forward pass, as in dropout; giving it beta_c
  (what normalising a zero would give) would reintroduce the dropped units into the next layer.
- Kept units are rescaled by 1 / (1 - p) after the affine transform (inverted dropout), so that the
  next layer's expected input matches evaluation, where nothing is dropped. Rescaling before the
  normalisation would be cancelled by it.
- Running statistics come from the masked statistics, with BatchNorm's momentum (0.1) and its
  unbiased variance correction (n_c / (n_c - 1)), so that with p = 0 the layer is exactly
  BatchNorm2d in training and evaluation.
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.Module):
    def __init__(self, num_features: int, p: float = 0.1, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p (the drop rate) must be in [0, 1), got {p}")
        self.p, self.eps, self.momentum = p, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (1 = kept) overrides the random draw; it exists for tests and analysis."""
        shape = (1, -1) + (1,) * (x.dim() - 2)  # [B, C, *positions]: per channel
        w = self.weight.view(shape)
        b = self.bias.view(shape)
        if not self.training:
            mean = self.running_mean.view(shape)
            var = self.running_var.view(shape)
            return (x - mean) * torch.rsqrt(var + self.eps) * w + b
        if mask is None:
            # torch.rand, not rand_like: the mask depends on the element's position, not on how x
            # is laid out in memory, so a channels_last run draws the same mask as a plain one.
            mask = (torch.rand(x.shape, dtype=x.dtype, device=x.device) >= self.p).to(x.dtype)
        dims = (0,) + tuple(range(2, x.dim()))  # batch and positions
        n = mask.sum(dims, keepdim=True).clamp_min(1)
        mean = (x * mask).sum(dims, keepdim=True) / n
        centred = x - mean
        var = (centred.square() * mask).sum(dims, keepdim=True) / n
        with torch.no_grad():
            unbiased = var * n / (n - 1).clamp_min(1)
            self.running_mean.lerp_(mean.flatten(), self.momentum)
            self.running_var.lerp_(unbiased.flatten(), self.momentum)
        y = centred * torch.rsqrt(var + self.eps) * w + b
        return y * mask / (1.0 - self.p)
