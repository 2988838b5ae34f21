"""The architectures of the tracks beyond CNNs: MLPs, recurrent nets and Transformers.

The contract is the CNNs' (:mod:`harness.models`): ``norm_layer(num_features)`` fills every
normalisation slot, and the layer it returns normalises a tensor laid out ``[B, C, *positions]``,
as torch's BatchNorm1d/2d do: ``[B, C]`` in an MLP, ``[B, C, T]`` in a recurrent net or a
Transformer. Sequence models compute in ``[B, T, C]``; :class:`ChannelsSecond` moves each slot's
input to ``[B, C, T]`` and back, so that "statistics per channel over batch and positions"
(BatchNorm) or "over channels per position" (LayerNorm as Transformers use it) mean the same here
as in a CNN.

Every model here keeps its own initialisation (torch's defaults, and the ViT's truncated normal
as in its source); the CNN protocol's catch-all rule (any 1-D weight set to 1) is the reference
benchmark's and applies to the ``cnn`` track only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


class ChannelsSecond(nn.Module):
    """A norm slot in a sequence model: ``[B, T, C]`` -> the layer sees ``[B, C, T]`` -> back."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """``depth`` x [Linear(width) -> norm -> ReLU], then Linear(classes); inputs are flattened.

    The norm follows each hidden linear layer, before the non-linearity, as in the BatchNorm
    paper's MNIST network (Ioffe & Szegedy 2015, sec. 4.1: three hidden layers of 100).
    """

    def __init__(self, in_features: int, num_classes: int, norm_layer: NormLayer, width: int,
                 depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), norm_layer(width),
                       nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# Sequence inputs: token ids (padding id 0) or vectors per step
# --------------------------------------------------------------------------------------------

PAD = 0  # the token id of padding; the vocabulary of a token dataset reserves it


def sequence_stem(inputs, width: int) -> nn.Module:
    """Token ids ``[B, T]`` -> Embedding; vectors ``[B, T, F]`` -> Linear(F, width)."""
    if inputs.kind == "tokens":
        return nn.Embedding(inputs.vocab_size, width, padding_idx=PAD)
    return nn.Linear(inputs.shape[-1], width)


def keep_mask(x: torch.Tensor) -> torch.Tensor | None:
    """``[B, T]`` True where a token is not padding; None for vector sequences (no padding)."""
    return x != PAD if x.dtype in (torch.int64, torch.int32) else None


def masked_mean(h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The mean over time of ``[B, T, C]``, over the kept steps only."""
    if keep is None:
        return h.mean(1)
    w = keep.unsqueeze(-1).to(h.dtype)
    return (h * w).sum(1) / w.sum(1).clamp_min(1)


# --------------------------------------------------------------------------------------------
# Recurrent nets
# --------------------------------------------------------------------------------------------


class RecurrentNet(nn.Module):
    """stem -> ``depth`` x [LSTM (or GRU) layer -> norm] -> mean over the kept steps -> Linear.

    One norm between every two recurrent layers and after the last, each over ``[B, C, T]``. The
    recurrence itself stays torch's fused cell: a norm inside the cell (recurrent BatchNorm,
    Cooijmans et al. 2016; LayerNorm-LSTM, Ba et al. 2016) is a different slot and not this one.
    Padding steps are normalised with the rest (the layer gets no mask), as a BatchNorm1d would be.
    """

    def __init__(self, inputs, num_classes: int, norm_layer: NormLayer, width: int, depth: int,
                 cell: str = "lstm"):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.stem = sequence_stem(inputs, width)
        self.layers = nn.ModuleList(rnn(width, width, batch_first=True) for _ in range(depth))
        self.norms = nn.ModuleList(ChannelsSecond(norm_layer(width)) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = keep_mask(x)
        h = self.stem(x)
        for layer, norm in zip(self.layers, self.norms):
            h = norm(layer(h)[0])
        return self.head(masked_mean(h, keep))


# --------------------------------------------------------------------------------------------
# Transformers (pre-norm)
# --------------------------------------------------------------------------------------------


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): a residual branch dropped per sample with
    probability ``p``, the kept ones scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class SelfAttention(nn.Module):
    """Multi-head self-attention; q, k, v from one bias-free Linear, as in ViT-Lite."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]  # attend to kept keys only
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)); GELU MLP of ``mlp_ratio`` x width."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, norm_layer: NormLayer,
                 attn_dropout: float, drop_path: float):
        super().__init__()
        self.norm1 = ChannelsSecond(norm_layer(width))
        self.attn = SelfAttention(width, heads, attn_dropout)
        self.norm2 = ChannelsSecond(norm_layer(width))
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), keep), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


@dataclass(frozen=True)
class EncoderShape:
    """A pre-norm encoder's size: ``depth`` blocks of ``width`` channels, ``heads`` attention heads,
    an MLP of ``mlp_ratio`` x width, attention dropout and the last block's stochastic depth."""

    width: int
    depth: int
    heads: int
    mlp_ratio: float
    attn_dropout: float = 0.1
    drop_path: float = 0.1


class Encoder(nn.Module):
    """Blocks with linearly rising stochastic depth, then the final norm (a slot like the rest)."""

    def __init__(self, shape: EncoderShape, norm_layer: NormLayer):
        super().__init__()
        rates = [shape.drop_path * i / max(1, shape.depth - 1) for i in range(shape.depth)]
        self.blocks = nn.ModuleList(Block(shape.width, shape.heads, shape.mlp_ratio, norm_layer,
                                          shape.attn_dropout, r) for r in rates)
        self.norm = ChannelsSecond(norm_layer(shape.width))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x)


def _init_transformer(model: nn.Module, position: nn.Parameter) -> None:
    """As ViT-Lite's source: Linear weights truncated normal (std 0.02), biases 0; the learnable
    position embedding truncated normal (std 0.2). Norm layers keep their own initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.trunc_normal_(position, std=0.2)


class SequenceTransformer(nn.Module):
    """stem + learnable positions -> pre-norm encoder -> mean over the kept steps -> Linear."""

    def __init__(self, inputs, num_classes: int, norm_layer: NormLayer, shape: EncoderShape):
        super().__init__()
        width = shape.width
        self.stem = sequence_stem(inputs, width)
        self.position = nn.Parameter(torch.zeros(1, inputs.shape[0], width))
        self.encoder = Encoder(shape, norm_layer)
        self.head = nn.Linear(width, num_classes)
        _init_transformer(self, self.position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = keep_mask(x)
        h = self.encoder(self.stem(x) + self.position, keep)
        return self.head(masked_mean(h, keep))


class VisionTransformer(nn.Module):
    """ViT-Lite (Hassani et al. 2021, arXiv:2104.05704): a ``patch`` x ``patch`` convolution
    tokenises the image, a class token and learnable positions are added, a pre-norm encoder
    follows, and the class token's final state is classified."""

    def __init__(self, inputs, num_classes: int, norm_layer: NormLayer, shape: EncoderShape,
                 patch: int):
        super().__init__()
        channels, size, width = inputs.shape[0], inputs.shape[-1], shape.width
        self.tokenizer = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1, width))
        self.encoder = Encoder(shape, norm_layer)
        self.head = nn.Linear(width, num_classes)
        _init_transformer(self, self.position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(x).flatten(2).transpose(1, 2)  # [B, patches, width]
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens + self.position)[:, 0])
