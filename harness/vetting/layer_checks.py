"""The checks of ``harness check``, one function each: given the CustomNorm class and the
:class:`Layout` of a track's norm slots, return (status, one-line detail) or raise
:class:`CheckFailed`. :mod:`harness.vetting.check` runs them under time limits and turns them into
a report.

Every track feeds a norm slot ``[B, C, *positions]`` (harness.models.nets): ``[B, C, H, W]`` in
a CNN, ``[B, C]`` in an MLP, ``[B, C, T]`` in a recurrent net or a Transformer. A check builds its
inputs from the layout, so the same check asks the same question of each track.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from harness.models import batch_norm_for, build_model, construct, count_parameters, init_weights
from harness.protocol.catalog import ARCHITECTURES, InputSpec, example_inputs

PASS, WARN, FAIL = "pass", "warn", "fail"
CHANNELS = 16  # the smallest channel count the CNNs use: where per-group statistics are thinnest


@dataclass(frozen=True)
class Layout:
    """What a track's norm slots are fed. Shapes are (batch, *positions); channels are added."""

    track: str
    positions: tuple[int, ...]  # a typical input's positions
    train: tuple[tuple[int, ...], ...]  # shapes every layer must take in train mode
    eval: tuple[tuple[int, ...], ...]
    tiny_train: tuple[tuple[int, ...], ...]  # degenerate ones: a failure here is a warning
    tiny_eval: tuple[tuple[int, ...], ...]
    tiny_words: str  # what the tiny shapes are
    tiny_why: str  # why a layer that raises on them is only warned about
    cost_arch: str  # the model of the cost check
    cost_input: InputSpec

    @property
    def channels(self) -> int:
        """The smallest channel count the track's models give a norm."""
        return model_channel_counts(self.track)[0]

    def shape(self, batch: int, positions: tuple[int, ...] | None = None) -> tuple[int, ...]:
        return (batch, self.channels, *(self.positions if positions is None else positions))

    def rand(self, batch: int, positions=None, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
        return _rand(*self.shape(batch, positions), dtype=dtype, seed=seed)


_CNN_SHAPES = ((2, 8, 8), (1, 8, 8), (3, 5, 7), (2, 2, 2))
_SEQUENCE_SHAPES = ((2, 8), (1, 8), (3, 5), (2, 2))
LAYOUTS: dict[str, Layout] = {
    # No CNN feeds a 1x1 map to a norm (the smallest is VGG's 2x2), so a layer that cannot handle
    # one, like GroupNorm with one channel per group, is warned about rather than failed.
    "cnn": Layout("cnn", (6, 6), _CNN_SHAPES, _CNN_SHAPES, ((4, 1, 1),), ((4, 1, 1), (1, 1, 1)),
                  "1x1 maps", "which the benchmark's models never produce", "resnet20",
                  InputSpec("image", (3, 32, 32))),
    # A training batch of one sample has one value per channel: degenerate for batch statistics
    # (torch's BatchNorm1d refuses it), and the harness never trains on one.
    "mlp": Layout("mlp", (), ((2,), (3,), (8,)), ((2,), (1,), (3,)), ((1,),), (),
                  "a training batch of one sample", "which the harness never trains on",
                  "mlp3x100", InputSpec("features", (784,))),
    "rnn": Layout("rnn", (6,), _SEQUENCE_SHAPES, _SEQUENCE_SHAPES, ((4, 1),), ((4, 1), (1, 1)),
                  "one-step sequences", "which the track's datasets do not have", "lstm2",
                  InputSpec("sequence", (32, 16))),
    "transformer": Layout("transformer", (6,), _SEQUENCE_SHAPES, _SEQUENCE_SHAPES, ((4, 1),),
                          ((4, 1), (1, 1)), "one-token sequences",
                          "which the track's datasets do not have", "vit_lite2",
                          InputSpec("image", (3, 32, 32))),
}


class CheckTimeout(Exception):
    """A check ran out of time (raised from a signal handler: harness.vetting.check.time_limit)."""


class CheckFailed(Exception):
    """Raised inside a check to fail it with a one-line reason."""


@lru_cache(maxsize=None)
def model_channel_counts(track: str = "cnn") -> tuple[int, ...]:
    """Every channel count the track's architectures ask their norm layer for (built on the meta
    device)."""
    counts: set[int] = set()

    def record(c: int) -> nn.Module:
        counts.add(c)
        return nn.Identity()

    with torch.device("meta"):
        for name, info in ARCHITECTURES.items():
            if info.track == track:
                construct(name, 10, record, example_inputs(info.takes[0]))
    return tuple(sorted(counts))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _rand(*shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 2.0 + 0.5).to(dtype)


def _warm(m: nn.Module, layout: Layout, steps: int = 3) -> nn.Module:
    """A few training-mode forwards, so running statistics (if any) are not at their initial values."""
    m.train()
    with torch.no_grad():
        for i in range(steps):
            m(layout.rand(8, seed=100 + i))
    return m


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the output's scale."""
    scale = max(1.0, float(a.abs().max()))
    return float((a - b).abs().max()) / scale


# --------------------------------------------------------------------------------------------
# The checks. Each takes the CustomNorm class and returns (status, detail) or raises CheckFailed.
# --------------------------------------------------------------------------------------------

def check_construct(cls, layout: Layout):
    counts = model_channel_counts(layout.track)
    for c in counts:
        try:
            module = cls(c)
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"CustomNorm({c}) raised {one_line(exc)}") from None
        if not isinstance(module, nn.Module):
            raise CheckFailed(f"CustomNorm({c}) is not an nn.Module")
    return PASS, f"constructs for all {len(counts)} channel counts the models use ({counts[0]}..{counts[-1]})"


def _forward_shape(cls, mode: str, shape) -> None:
    m = cls(shape[1]).train(mode == "train")
    with torch.no_grad():
        try:
            y = m(_rand(*shape))
        except CheckTimeout:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"forward raised {one_line(exc)} in {mode} mode on input "
                              f"{list(shape)}") from None
    if not isinstance(y, torch.Tensor):
        raise CheckFailed(f"forward returned {type(y).__name__}, not a tensor ({mode} mode)")
    if tuple(y.shape) != tuple(shape):
        raise CheckFailed(f"output shape {list(y.shape)} != input shape {list(shape)} ({mode} mode)")


def check_shape(cls, layout: Layout):
    for mode, shapes in (("train", layout.train), ("eval", layout.eval)):
        for b, *positions in shapes:
            _forward_shape(cls, mode, layout.shape(b, tuple(positions)))
    done = f"output shape = input shape {list(layout.shape(0))[1:]} in train and eval mode"
    if layout.track == "cnn":
        m = cls(CHANNELS)
        x = _rand(4, CHANNELS, 6, 6).contiguous(memory_format=torch.channels_last)
        for mode in ("train", "eval"):
            with torch.no_grad():
                y = m.train(mode == "train")(x)
            if tuple(y.shape) != tuple(x.shape):
                raise CheckFailed(f"channels_last input: output shape {list(y.shape)} != {list(x.shape)}")
        done = ("output shape = input shape in train and eval mode for B=1, B=2, non-square and "
                "channels_last inputs")
    tiny_problems = []
    for mode, shapes in (("train", layout.tiny_train), ("eval", layout.tiny_eval)):
        for b, *positions in shapes:
            shape = layout.shape(b, tuple(positions))
            try:
                _forward_shape(cls, mode, shape)
            except CheckFailed as exc:
                if "output shape" in str(exc) or "not a tensor" in str(exc):
                    raise
                tiny_problems.append(f"{mode} {list(shape)}")
    if tiny_problems:
        return WARN, (f"{done}; raises on {layout.tiny_words} ({', '.join(tiny_problems)}), "
                      f"{layout.tiny_why}")
    return PASS, done + (", and H=W=1" if layout.track == "cnn" else
                         f", and on {layout.tiny_words}")


def check_modes(cls, layout: Layout):
    m = cls(layout.channels)
    with torch.no_grad():
        m.train()(layout.rand(4))
        m.eval()(layout.rand(4))
        m.train()(layout.rand(4))
    return PASS, "train -> eval -> train switching works"


def check_dtype(cls, layout: Layout):
    for dtype in (torch.float32, torch.float64):
        m = cls(layout.channels).to(dtype)
        for mode in ("train", "eval"):
            with torch.no_grad():
                y = m.train(mode == "train")(layout.rand(4, dtype=dtype))
            if y.dtype != dtype:
                raise CheckFailed(f"{str(dtype).replace('torch.', '')} input gave "
                                  f"{str(y.dtype).replace('torch.', '')} output ({mode} mode)")
    return PASS, "float32 and float64 preserved in train and eval mode"


def check_finite(cls, layout: Layout):
    big = tuple(p + 2 for p in layout.positions)  # 8x8 in a CNN
    shape = layout.shape(4, big)
    inputs = {"random": layout.rand(4, big), "all-zero": torch.zeros(shape),
              "constant": torch.full(shape, 3.0)}
    for label, x in inputs.items():
        m = _warm(cls(layout.channels), layout)
        xg = x.clone().requires_grad_(True)
        y = m.train()(xg)
        if not torch.isfinite(y).all():
            raise CheckFailed(f"non-finite output on {label} input in train mode")
        (y * _rand(*y.shape, seed=7)).sum().backward()
        grads = [("input", xg.grad)] + [(n, p.grad) for n, p in m.named_parameters()]
        for name, g in grads:
            if g is not None and not torch.isfinite(g).all():
                raise CheckFailed(f"non-finite gradient of {name} on {label} input")
        with torch.no_grad():
            if not torch.isfinite(m.eval()(x)).all():
                raise CheckFailed(f"non-finite output on {label} input in eval mode")
    return PASS, "outputs and gradients finite on random, all-zero and constant inputs"


def check_gradcheck(cls, layout: Layout):
    channels = CHANNELS if layout.track == "cnn" else min(layout.channels, 32)
    m = cls(channels).double().train()
    batch = 2 if layout.positions else 4  # [B, C] needs more than one sample per channel
    x = _rand(batch, channels, *(3 for _ in layout.positions), dtype=torch.float64)
    x.requires_grad_(True)

    def fn(inp):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a stochastic layer draws the same mask on every call
            return m(inp)

    try:
        ok = torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False)
    except CheckTimeout:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"gradcheck could not run: {one_line(exc)}") from None
    if not ok:
        raise CheckFailed("analytical gradient differs from finite differences (float64, train mode)")
    return PASS, "analytical gradients match finite differences (float64, train mode)"


def check_eval_deterministic(cls, layout: Layout):
    m = _warm(cls(layout.channels), layout).eval()
    x = layout.rand(8)
    with torch.no_grad():
        a, b = m(x), m(x)
    if not torch.equal(a, b):
        raise CheckFailed(f"two evaluations of the same batch differ by {float((a - b).abs().max()):.2e}")
    return PASS, "evaluating the same batch twice gives identical outputs"


def check_batch_independent(cls, layout: Layout):
    m = _warm(cls(layout.channels), layout).eval()
    x = layout.rand(8, seed=1)
    other = layout.rand(7, seed=2) * 3.0 - 1.0
    with torch.no_grad():
        alone = m(x[:1])
        in_batch = m(x)[:1]
        other_batch = m(torch.cat([x[:1], other]))[:1]
    diff = max(_close(alone, in_batch), _close(alone, other_batch))
    if diff > 1e-4:
        return WARN, (f"batch-dependent at evaluation: a sample's output changes by {diff:.2e} "
                      "(relative) with the rest of its test batch, so test accuracy depends on "
                      "test batching")
    return PASS, "a sample's evaluation output does not depend on the rest of its batch"


def _buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in m.named_buffers()}


def check_buffers(cls, layout: Layout):
    m = _warm(cls(layout.channels), layout, steps=1)
    before = _buffers(m)
    with torch.no_grad():
        m.eval()(layout.rand(8, seed=3))
    changed = [n for n, b in _buffers(m).items() if not torch.equal(b, before[n])]
    if changed:
        raise CheckFailed(f"evaluation changed buffer(s) {', '.join(changed[:3])}: the test set "
                          "would leak into the model's state")
    if not before:
        return PASS, "no buffers"
    with torch.no_grad():
        m.train()(layout.rand(8, seed=4))
    updated = [n for n, b in _buffers(m).items() if not torch.equal(b, before[n])]
    return PASS, (f"buffers unchanged in eval mode; {len(updated)} of {len(before)} updated in "
                  "train mode")


def check_state_dict(cls, layout: Layout):
    a = _warm(cls(layout.channels), layout)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * _rand(*p.shape, seed=5))
    b = cls(layout.channels)
    try:
        b.load_state_dict(a.state_dict())
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"load_state_dict failed: {one_line(exc)}") from None
    x = layout.rand(8, seed=6)
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    if not torch.allclose(ya, yb, rtol=1e-6, atol=1e-6):
        raise CheckFailed("a copy loaded from state_dict evaluates differently: some state is not "
                          "a parameter or buffer (checkpoints and resume would lose it)")
    return PASS, "a copy loaded from state_dict evaluates identically"


def check_init_override(cls, layout: Layout):
    holder = nn.Sequential(cls(layout.channels))
    report = init_weights(holder)
    if report.overwritten:
        names = ", ".join(n.removeprefix("0.") for n in report.overwritten)
        return WARN, (f"the protocol's initialisation will overwrite your {names} with weight=1 / "
                      "bias=0 (any module with a 1-D weight); the reference does the same")
    return PASS, "the protocol's initialisation leaves the layer's own initialisation as it is"


def _step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int) -> float:
    criterion = nn.CrossEntropyLoss()
    model.train()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        loss = criterion(model(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        times.append(time.perf_counter() - t0)
    return min(times)


def check_cost(cls, layout: Layout):
    torch.manual_seed(0)
    arch, inputs = layout.cost_arch, layout.cost_input
    reference = batch_norm_for(layout.track)
    ours = build_model(arch, 10, cls, inputs=inputs)
    bn = build_model(arch, 10, reference, inputs=inputs)
    x, y = _rand(32, *inputs.shape), torch.arange(32) % 10
    _step_time(ours, x, y, 1)  # warm-up
    _step_time(bn, x, y, 1)
    t_ours, t_bn = [], []
    for _ in range(2):  # interleaved, so drift of the machine hits both
        t_ours.append(_step_time(ours, x, y, 2))
        t_bn.append(_step_time(bn, x, y, 2))
    ratio = min(t_ours) / min(t_bn)
    norm_params = sum(count_parameters(m) for m in ours.modules()
                      if isinstance(m, getattr(cls, "func", cls)))  # a partial: its class
    return PASS, (f"{arch}: {count_parameters(ours):,} parameters ({norm_params:,} in norm layers; "
                  f"BatchNorm: {count_parameters(bn):,}); forward+backward {ratio:.2f}x BatchNorm's "
                  f"time (batch 32, CPU, one thread)")
