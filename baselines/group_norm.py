"""GroupNorm as the reference benchmark defines it (Wu & He, 2018, arXiv:1803.08494).

G = min(32, C), decreased until it divides C (16 channels -> 16 groups: instance-norm-like).
y = gamma_c * (x - mu_g) / sqrt(var_g + eps) + beta_c, with mu_g and the biased var_g over the
channels of group g and (H, W), per sample. eps = 1e-5. Same computation in training and evaluation;
no running statistics.
"""

from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


def num_groups(num_features: int, max_groups: int = 32) -> int:
    groups = min(max_groups, num_features)
    while num_features % groups:
        groups -= 1
    return groups


class CustomNorm(nn.GroupNorm):
    def __init__(self, num_features: int):
        super().__init__(num_groups(num_features), num_features, eps=1e-5, affine=True)
