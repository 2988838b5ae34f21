"""The architectures, built around an injected norm layer: each one's builder, as its catalogue
entry names it (harness.protocol.catalog.ArchInfo), and :func:`build_model`. The CNNs are in
:mod:`harness.models.cnn`, the other tracks' models in :mod:`harness.models.nets`.

Every model takes ``norm_layer: Callable[[int], nn.Module]`` the way torchvision's ResNet does,
and calls it once per normalisation slot (shortcuts and MobileNetV2's 1280-channel last norm
included). Nothing here knows about ``CustomNorm``: the caller decides which class fills the slots.

After construction, :func:`init_weights` applies the protocol's initialisation, including its rule
that *any other module with a 1-D weight* gets weight 1 and bias 0, which overwrites whatever a
submission set itself. :func:`build_model` builds, initialises and reports such overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from harness.models.cnn import VGG, VGG_CONFIGS, CifarResNet, MobileNetV2, NormLayer
from harness.models.nets import MLP, EncoderShape, RecurrentNet, SequenceTransformer, VisionTransformer
from harness.protocol.catalog import ARCHITECTURES, InputSpec, imported, track_of

# Norm classes the protocol initialises by name (weight 1, bias 0). Anything else with a 1-D
# weight gets the same treatment through the catch-all rule, and that is what users must be told.
_PROTOCOL_NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


# Each architecture's builder, as its catalogue entry names it (harness.protocol.catalog.ArchInfo):
# (inputs, num_classes, norm_layer) -> model. The CNNs are built for 32x32 images whatever
# ``inputs`` says; the other tracks' models (harness.models.nets) are sized by it.


def resnet20(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return CifarResNet(3, k, norm)


def resnet56(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return CifarResNet(9, k, norm)


def resnet110(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return CifarResNet(18, k, norm)


def vgg11bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg11bn"], k, norm)


def vgg13bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg13bn"], k, norm)


def vgg16bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg16bn"], k, norm)


def vgg19bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg19bn"], k, norm)


def mobilenetv2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return MobileNetV2(k, norm)


def mlp3x100(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return MLP(inputs.shape[0], k, norm, width=100, depth=3)


def mlp3x512(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return MLP(inputs.shape[0], k, norm, width=512, depth=3)


def lstm2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return RecurrentNet(inputs, k, norm, width=128, depth=2, cell="lstm")


def gru2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return RecurrentNet(inputs, k, norm, width=128, depth=2, cell="gru")


def transformer4(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return SequenceTransformer(inputs, k, norm, EncoderShape(width=128, depth=4, heads=4, mlp_ratio=2))


def vit_lite7(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    """ViT-Lite-7/4 as in Hassani et al. 2021, Table 1 (CIFAR): 3.72M parameters."""
    return VisionTransformer(inputs, k, norm, EncoderShape(width=256, depth=7, heads=4, mlp_ratio=2),
                             patch=4)


def vit_lite2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VisionTransformer(inputs, k, norm, EncoderShape(width=128, depth=2, heads=2, mlp_ratio=1),
                             patch=4)


@dataclass
class InitReport:
    """Which parameters the protocol's initialisation overwrote with values a submission did not choose."""

    overwritten: list[str] = field(default_factory=list)

    def message(self) -> str | None:
        if not self.overwritten:
            return None
        shown = ", ".join(self.overwritten[:4]) + (" ..." if len(self.overwritten) > 4 else "")
        return (f"the protocol's initialisation set weight=1 / bias=0 on {len(self.overwritten)} "
                f"parameter(s) your layer initialised differently ({shown}); "
                "the reference does the same, so this is reproduced, not fixed")


def _is_unit_init_target(module: nn.Module) -> bool:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return False
    if isinstance(module, _PROTOCOL_NORM_TYPES):
        return True
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 1


@torch.no_grad()
def init_weights(model: nn.Module) -> InitReport:
    """Apply the protocol's initialisation to every module, in ``model.modules()`` order.

    Conv2d: Kaiming normal (fan_out, relu), bias untouched. Linear: Kaiming normal (fan_in, relu),
    bias 0. BatchNorm2d/GroupNorm/InstanceNorm2d/LayerNorm and *any other module with a 1-D
    ``weight``*: weight 1, bias 0. Returns the weight/bias parameters whose value this changed,
    i.e. where a layer's own initialisation was overwritten (torch's norms start at 1/0 already).
    """
    report = InitReport()
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif _is_unit_init_target(m):
            for pname, value in (("weight", 1.0), ("bias", 0.0)):
                tensor = getattr(m, pname, None)
                if not isinstance(tensor, torch.Tensor):
                    continue
                if not bool((tensor == value).all()):
                    report.overwritten.append(f"{name}.{pname}" if name else pname)
                tensor.fill_(value)
    return report


def build_model(arch: str, num_classes: int, norm_layer: NormLayer, *,
                inputs: InputSpec | None = None, return_init_report: bool = False):
    """Build ``arch`` with ``norm_layer`` in every norm slot. A CNN gets the protocol's
    initialisation; the other tracks' models (:mod:`harness.models.nets`) keep their own and
    need ``inputs``, what they are fed.

    >>> model = build_model("resnet20", 10, torch.nn.BatchNorm2d)
    """
    model = construct(arch, num_classes, norm_layer, inputs)
    report = init_weights(model) if track_of(arch) == "cnn" else InitReport()
    return (model, report) if return_init_report else model


def construct(arch: str, num_classes: int, norm_layer: NormLayer,
              inputs: InputSpec | None = None) -> nn.Module:
    """``arch`` with ``norm_layer`` in every slot, as its constructor leaves it (no protocol
    initialisation: :func:`build_model` adds it; under ``torch.device("meta")``, sizes only)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    info = ARCHITECTURES[arch]
    if inputs is None:
        if info.track != "cnn":
            raise ValueError(f"{arch} needs the inputs it is fed (an InputSpec)")
        inputs = InputSpec("image", (3, 32, 32))
    return imported(info.builder)(inputs, num_classes, norm_layer)


def batch_norm_for(track: str) -> type[nn.Module]:
    """torch's BatchNorm for a track's layout: 2d on ``[B, C, H, W]``, 1d on ``[B, C]`` and
    ``[B, C, T]`` (what other layers are measured against)."""
    return nn.BatchNorm2d if track == "cnn" else nn.BatchNorm1d


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
