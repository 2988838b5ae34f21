"""LayerNorm over (C, H, W) (Ba et al., 2016, arXiv:1607.06450), as nn.GroupNorm(1, C).

y = gamma_c * (x - mu) / sqrt(var + eps) + beta_c, with mu and the biased var over all of a sample's
(C, H, W); per-channel affine; eps = 1e-5. Same in training and evaluation; batch-independent.
On [B, C, T] the statistics are over a sample's (C, T), all its positions at once: the Transformer
kind, per position, is `layer_norm_per_position`.
"""

from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.GroupNorm):
    def __init__(self, num_features: int):
        super().__init__(1, num_features, eps=1e-5, affine=True)
