"""What a run measures beyond its per-epoch curves, without changing the run.

- **Layer probe**, after the first, middle and last epochs (:func:`probe_epochs`): the model as it
  is at the end of that epoch does one training-mode forward and backward on a fixed probe batch
  (the first ``batch_size`` training images, un-augmented). It records, for every layer that owns
  parameters, the L2 norm of the gradient of the batch's mean loss over that layer's own
  parameters (gradient flow, in the model's order), and for every norm layer (every instance of
  the submitted class) the mean and standard deviation of its output over all of its elements
  (activation statistics). The probe runs on a deep copy of the model, and every random stream is
  restored afterwards, so nothing of the run (parameters, running statistics, a layer's own
  Python-side state such as a step counter) sees it: the run continues exactly as it would have
  without the probe (on the CPU the curves agree bit for bit: tests/test_instruments.py). A layer
  that cannot be copied gets an ``error`` in place of the probe's numbers.
- **Inference latency**: every evaluation times each test batch's forward pass (eval mode, batches
  of ``test_batch_size``) with ``time.perf_counter`` on the CPU and CUDA events on a GPU, so
  nothing waits for the host; the record keeps the last epoch's median ms per full batch and its
  throughput (images over the summed forward time).
- **Norm layers**: how many instances of the class the model holds and how many parameters they
  own (also counted once when shared).

The probes' time is measured and recorded (``instruments.probe_s``) with its share of the run.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.engine.checkpoint import global_rng_state, set_global_rng_state
from harness.engine.device import autocast


def probe_epochs(epochs: int) -> tuple[int, ...]:
    """The epochs after which the layer probe runs: first, middle (rounded up) and last."""
    return tuple(sorted({1, (epochs + 1) // 2, epochs}))


def norm_layers(model: nn.Module, norm_class: type[nn.Module]) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, norm_class)]


def norm_summary(model: nn.Module, norm_class: type[nn.Module]) -> dict[str, Any]:
    layers = norm_layers(model, norm_class)
    params = {id(p): p for _, m in layers for p in m.parameters()}
    return {"class": norm_class.__qualname__, "count": len(layers),
            "parameters": sum(p.numel() for p in params.values())}


def parameter_layers(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """Every module that owns parameters directly, with them, in the model's order."""
    out = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            out.append((name, own))
    return out


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def layer_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm_class: type[nn.Module],
                device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    """Gradient norms per parameter layer and output statistics per norm layer on one batch, on a
    copy of ``model``; every random stream is left as it was."""
    rng = global_rng_state(device)
    try:
        return _probe(copy.deepcopy(model), x, y, norm_class, device, precision)
    except Exception as exc:  # noqa: BLE001 - the layer's failure; the run decides about it
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
    finally:
        set_global_rng_state(rng, device)


def _probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm_class: type[nn.Module],
           device: torch.device, precision: str) -> dict[str, Any]:


    layers = parameter_layers(model)
    params = [p for _, ps in layers for p in ps]
    sums: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def record(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor):  # summed over calls: a layer may be used twice
                v = out.detach().double()
                new = [v.sum(), (v * v).sum(), torch.tensor(v.numel(), dtype=torch.float64,
                                                            device=v.device)]
                sums[name] = [a + b for a, b in zip(sums[name], new)] if name in sums else new
        return record

    for n, m in norm_layers(model, norm_class):
        m.register_forward_hook(hook(n))
    model.train()
    with autocast(device, precision):
        loss = F.cross_entropy(model(x).float(), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    squares, i = [], 0
    for _, ps in layers:
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for j in range(len(ps)):
            if grads[i + j] is not None:
                total = total + (grads[i + j].double() ** 2).sum()
        squares.append(total)
        i += len(ps)
    norms = torch.stack(squares).sqrt().tolist() if squares else []
    stats = {n: torch.stack(v).cpu() for n, v in sums.items()}
    activations = {}
    for name, (s, ss, n) in ((k, v.tolist()) for k, v in stats.items()):
        mean = s / n
        activations[name] = {"mean": _number(mean),
                             "std": _number(math.sqrt(max(ss / n - mean * mean, 0.0)))
                             if math.isfinite(ss) else None}
    return {"loss": _number(float(loss.detach())), "batch_images": int(y.shape[0]),
            "grad_norms": {name: _number(v) for (name, _), v in zip(layers, norms)},
            "activations": activations}


class BatchTimer:
    """Per-batch forward times without host synchronisation: perf_counter on the CPU, CUDA events
    (read after the epoch's own synchronisation) on a GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []
        self.sizes: list[int] = []

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append([event, None])
        else:
            self.marks.append([time.perf_counter(), None])

    def stop(self, images: int) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[-1][1] = event
        else:
            self.marks[-1][1] = time.perf_counter()
        self.sizes.append(images)

    def seconds(self) -> list[float]:
        """The batch times; on a GPU, call after the device has been synchronised."""
        if self.cuda:
            return [a.elapsed_time(b) / 1000.0 for a, b in self.marks]
        return [b - a for a, b in self.marks]

    def summary(self, device: torch.device) -> dict[str, Any] | None:
        times = self.seconds()
        if not times:
            return None
        full = max(self.sizes)
        at_full = [t for t, n in zip(times, self.sizes) if n == full]
        return {"mode": "eval", "batch_size": full, "batches": len(times),
                "median_ms": 1000.0 * statistics.median(at_full),
                "throughput_images_per_s": sum(self.sizes) / sum(times) if sum(times) > 0 else None,
                "timer": "cuda-events" if self.cuda else "perf_counter", "device": str(device)}
