"""Speed options for the training step, each proved against the plain eager model before use.

The protocol's numbers come from a plain eager fp32 model on contiguous (NCHW) tensors. Each
option below computes the same function in a different way, so none of them changes what a run
means, but a drop-in layer can break any of them (a ``view`` that assumes NCHW strides, a
Python-side counter that torch.compile bakes in, a random draw that a compiler reorders). So
before training, on one real batch and without touching the run's random streams:

1. the plain model runs one training step (outputs, parameter gradients, updated buffers) and one
   evaluation forward: the reference;
2. ``channels_last``: the same model with NHWC weights and inputs must agree with the reference,
   else the run stays NCHW;
3. ``compile``: ``torch.compile(model)`` (with ``cuda_graphs``, mode ``reduce-overhead``: torch's
   CUDA-graph trees capture the step wherever the graph allows it and skip capture, with their own
   warning, where it does not) must agree with the reference, else the run stays eager.

"Agree" is calibrated per tensor. A deep network's gradient at initialisation is ill-conditioned
enough that rounding alone moves it by up to ~1% (ResNet-20 with BatchNorm, batch of 64: the plain
fp32 gradients are up to 0.44% from the float64 ones), so a fixed tolerance either refuses honest
fast paths or waves through broken ones. Instead the plain model is run a second time on the same
batch with every input value perturbed by one rounding unit (2^-24 in fp32 on CPU, 2^-11 on CUDA
where convolutions run in TF32, 2^-8 under bf16): its distance from the first run measures how far
rounding can move each tensor (up to 0.23% in the example: the same order as the float64 distance,
and unlike float64 it also works for layers that draw random numbers). The candidate's relative
distance from the plain model, ``||candidate - plain|| / ||plain||``, must be at most
``max(floor, 8 x that)`` for every output, parameter gradient and buffer update. The floor is 1e-3
for outputs and buffer updates in fp32 on CPU, 1e-2 on CUDA, 5e-2 under bf16, and fifty times that
for gradients (channels_last moves custom layers' ResNet-20 gradients on CPU by up to 1.2e-2, more
than the input perturbation predicts, because rounding enters at every layer, not only the input).
A semantic difference (a lost buffer update, a different random mask, a wrong layout assumption)
gives O(1). A failed check or an error falls back with a warning; the report goes into
the run record (``config.speed``). Measured on CPU: ``nn.BatchNorm2d``'s channels_last kernel is
~50x further from the plain one than input rounding explains (outputs 2.8e-5, gradients up to
3.7e-2): within the floors, so accepted; a dropout mask drawn with ``rand_like`` (which follows the
memory layout) differs at O(1) and is refused.

``cudnn.benchmark`` only picks among cuDNN's algorithms for the same convolution, so it needs no
check. On CUDA, channels_last and cudnn.benchmark are on by default; on CPU everything is off by
default (oneDNN's NHWC convolutions are not faster there for these models), so a default CPU run is
exactly the plain eager loop.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, cast

import torch
import torch.nn.functional as F
from torch import nn

from harness.engine.checkpoint import global_rng_state, set_global_rng_state
from harness.engine.device import autocast
from harness.protocol.spec import SpeedOptions


def tolerance_floor(device: torch.device, precision: str) -> float:
    if precision != "fp32":
        return 5e-2
    return 1e-2 if device.type == "cuda" else 1e-3


def rounding_unit(device: torch.device, precision: str) -> float:
    if precision != "fp32":
        return 2.0 ** -8
    return 2.0 ** -11 if device.type == "cuda" else 2.0 ** -24


def compile_mode_name(options: SpeedOptions) -> str:
    """What the record's ``config.compile`` says: eager, or the backend (+cudagraphs)."""
    if not options.compile:
        return "eager"
    return options.compile_backend + ("+cudagraphs" if options.cuda_graphs else "")


@dataclass
class Prepared:
    """What the training loop uses: the callable model, the input layout, and the report."""

    model: nn.Module
    memory_format: torch.memory_format
    options: SpeedOptions  # what is actually in effect
    report: dict[str, Any]

    def mark_step(self) -> None:
        """Tell CUDA-graph trees a new iteration begins, so replays may reuse their memory."""
        if self.options.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()


# -- the check --------------------------------------------------------------------------------

@dataclass
class Probe:
    """One step of a model, as named tensors: outputs, parameter gradients, buffer updates."""

    tensors: dict[str, torch.Tensor]


def probe(model: nn.Module, forward: Callable, x: torch.Tensor, y: torch.Tensor,
          device: torch.device, precision: str) -> Probe:
    """One training step's outputs, gradients and updated buffers, then one evaluation forward.

    The model's parameters, buffers and mode and every random stream are restored afterwards, so a
    probe leaves no trace on the run.
    """


    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng, was_training = global_rng_state(device), model.training
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    try:
        model.train()
        with autocast(device, precision):
            out = forward(x).float()
        grads = torch.autograd.grad(F.cross_entropy(out, y), [p for _, p in params], allow_unused=True)
        tensors = {"train output": out.detach().clone()}
        for (name, p), g in zip(params, grads):
            tensors[f"gradient {name}"] = torch.zeros_like(p) if g is None else g.detach().clone()
        for name, b in model.named_buffers():
            if name in saved:
                tensors[f"update {name}"] = b.detach().double() - saved[name].double()
        set_global_rng_state(rng, device)
        model.eval()
        with torch.no_grad(), autocast(device, precision):
            tensors["eval output"] = forward(x).float().clone()
        return Probe(tensors)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
        set_global_rng_state(rng, device)


def relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    if candidate.shape != reference.shape:
        return float("inf")
    c, r = candidate.double(), reference.double()
    if not (torch.isfinite(c).all() and torch.isfinite(r).all()):
        return 0.0 if torch.equal(c.nan_to_num(), r.nan_to_num()) else float("inf")
    return float((c - r).norm() / r.norm().clamp_min(1e-12))


def tolerances(plain: Probe, perturbed: Probe, floor: float) -> dict[str, float]:
    """Per tensor: max(floor, 8 x the distance one rounding unit on the input moves it)."""
    return {k: max(floor * (50 if k.startswith("gradient") else 1),
                   8 * relative_error(perturbed.tensors[k], v)) for k, v in plain.tensors.items()}


def compare(candidate: Probe, plain: Probe, tol: dict[str, float]) -> dict[str, Any]:
    """The candidate's relative errors against the plain model; ``worst`` is the largest error
    divided by its tolerance (<= 1 passes)."""
    if candidate.tensors.keys() != plain.tensors.keys():
        return {"worst": float("inf"), "tensor": "the set of parameters and buffers differs"}
    errors = {k: relative_error(candidate.tensors[k], v) for k, v in plain.tensors.items()}
    worst = max(errors, key=lambda k: errors[k] / tol[k])
    return {"worst": errors[worst] / tol[worst], "tensor": worst,
            "relative_error": errors[worst], "tolerance": tol[worst]}


def _check(name: str, attempt: Callable[[], Probe], plain: Probe, tol: dict[str, float],
           warn: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        result = compare(attempt(), plain, tol)
    except Exception as exc:  # noqa: BLE001 - any failure of the fast path means: use the plain one
        row = {"option": name, "ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        warn(f"{name} failed on this layer ({row['error']}); training without it")
    else:
        row = {"option": name, "ok": result["worst"] <= 1.0, **result}
        if not row["ok"]:
            detail = (f"{result['tensor']}: relative error {result['relative_error']:.2g} > "
                      f"{result['tolerance']:.2g}" if "relative_error" in result else result["tensor"])
            warn(f"{name} changes this layer's results ({detail}); training without it")
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def perturbed_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                    precision: str) -> Probe:
    """The plain step again, with every input value moved by about one rounding unit. Token ids
    cannot move: the plain step is repeated, so each tolerance is its floor."""
    if not x.is_floating_point():
        return probe(model, model, x, y, device, precision)
    g = torch.Generator(device=x.device).manual_seed(0)
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return probe(model, model, x * (1 + noise * rounding_unit(device, precision)), y, device, precision)


def prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            options: SpeedOptions, precision: str = "fp32",
            warn: Callable[[str], None] = lambda msg: None) -> Prepared:
    """Apply the speed options that pass their check; ``x``, ``y`` is one contiguous batch."""
    requested, notes = options.resolve(device)
    if requested.channels_last and x.dim() != 4:  # a memory format of 4-D tensors only
        requested = replace(requested, channels_last=False)
        if options.channels_last:
            notes = [*notes, "channels_last applies to images ([B, C, H, W]); this model's "
                             f"inputs are {x.dim()}-D, so it trains without it"]
    for note in notes:
        warn(note)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(requested.cudnn_benchmark)
    effective = replace(requested, channels_last=False, compile=False, cuda_graphs=False)
    report: dict[str, Any] = {"requested": asdict(options), "notes": notes, "checks": []}
    fmt = torch.contiguous_format
    forward: nn.Module = model
    if requested.channels_last or requested.compile:
        reference = probe(model, model, x, y, device, precision)
        tol = tolerances(reference, perturbed_probe(model, x, y, device, precision),
                         tolerance_floor(device, precision))
        if requested.channels_last:
            model.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            row = _check("channels_last", lambda: probe(model, model, x_cl, y, device, precision),
                         reference, tol, warn)
            report["checks"].append(row)
            if row["ok"]:
                fmt, effective = torch.channels_last, replace(effective, channels_last=True)
            else:
                model.to(memory_format=torch.contiguous_format)
        if requested.compile:
            x_in = x.contiguous(memory_format=fmt)
            compiled: nn.Module | None = None

            def attempt() -> Probe:
                nonlocal compiled
                compiled = _compile(model, requested)  # inside the check: it may raise
                return probe(model, compiled, x_in, y, device, precision)

            name = "compile" + (" with CUDA graphs" if requested.cuda_graphs else "")
            row = _check(name, attempt, reference, tol, warn)
            report["checks"].append(row)
            if row["ok"] and compiled is not None:  # ok means attempt() compiled it
                forward = compiled
                effective = replace(effective, compile=True, cuda_graphs=requested.cuda_graphs)
    report.update({"channels_last": effective.channels_last,
                   "cudnn_benchmark": bool(effective.cudnn_benchmark),
                   "compile": compile_mode_name(effective), "cuda_graphs": effective.cuda_graphs})
    return Prepared(forward, fmt, effective, report)


def check_backend(name: str) -> None:
    """Raise ValueError naming the choices when torch.compile has no backend ``name``."""
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if name not in known:
        raise ValueError(f"unknown torch.compile backend {name!r}; choose from {', '.join(known)}")


def _compile(model: nn.Module, options: SpeedOptions) -> nn.Module:
    if options.compile_backend == "inductor":
        import torch._inductor.config as inductor_config

        # Inductor otherwise generates its own random numbers, so a stochastic layer (dropout,
        # SelectiveNorm) would draw different masks from the same seed than in eager mode.
        inductor_config.fallback_random = True
    mode = "reduce-overhead" if options.cuda_graphs else None
    # dynamic=False: the few batch shapes (full, last partial, test) each get exact kernels.
    # A compiled Module is an OptimizedModule, a Module; torch.compile's type says only Callable.
    return cast(nn.Module, torch.compile(model, backend=options.compile_backend, mode=mode, dynamic=False))
