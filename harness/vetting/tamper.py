"""Tamper check: the functions that produce a score are the ones the harness shipped.

A submission runs in the harness's process, so it could replace the evaluation loop, the loss or
the optimiser step and report any accuracy it likes. Before the first submission is imported, the
harness notes the identity (and code object) of every function a score depends on, and the global
hooks torch lets any code install; it checks them again after the import and after training, and
refuses to record a result when anything changed. This catches monkeypatching; it cannot stop code
that evades both this check and the static scan (see README, "Running untrusted submissions").
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

# What a score depends on: the harness's training and evaluation, and torch's loss, optimiser,
# scheduler, autograd and module call entry points. ``module:attribute.path``.
WATCHED = (
    "harness.engine.train:train", "harness.engine.train:autocast", "harness.engine.train:test_metrics",
    "harness.protocol.scoring:forward_plan", "harness.protocol.scoring:score", "harness.protocol.scoring:EvalPlan",
    "harness.engine.train:DivergenceWatch.step", "harness.engine.train:DivergenceWatch.read",
    "harness.engine.train:F", "harness.engine.train:nn", "harness.engine.train:torch",
    "harness.data.tensors:draw_epoch", "harness.data.tensors:BatchPipeline.train_batch",
    "harness.data.tensors:BatchPipeline.test_batch",
    "harness.engine.runner:run_eval", "harness.engine.runner:run_flags", "harness.engine.runner:at_chance",
    "harness.engine.fast:prepare",
    "torch.nn.functional:cross_entropy", "torch.nn.functional:nll_loss",
    "torch.nn.functional:log_softmax",
    "torch.nn.modules.loss:CrossEntropyLoss.forward", "torch.nn.modules.loss:CrossEntropyLoss.__init__",
    "torch.nn:CrossEntropyLoss",
    "torch.optim:SGD", "torch.optim.sgd:SGD.step", "torch.optim.sgd:SGD.__init__", "torch.optim.sgd:sgd",
    "torch.optim:Adam", "torch.optim.adam:Adam.step", "torch.optim.adam:Adam.__init__",
    "torch.optim.lr_scheduler:LambdaLR", "torch.optim.lr_scheduler:LambdaLR.get_lr",
    "harness.engine.train:make_optimizer", "harness.engine.train:make_scheduler", "harness.engine.train:should_stop",
    "harness.engine.instruments:layer_probe", "harness.engine.instruments:BatchTimer.summary",
    "harness.store.derived:curve_metrics",
    "torch.optim.optimizer:Optimizer.zero_grad", "torch.optim.optimizer:Optimizer.load_state_dict",
    "torch.optim.lr_scheduler:CosineAnnealingLR", "torch.optim.lr_scheduler:CosineAnnealingLR.get_lr",
    "torch.optim.lr_scheduler:LRScheduler.step",
    "torch.autograd:backward", "torch:Tensor.backward", "torch:Tensor.argmax", "torch:Tensor.sum",
    "torch:Tensor.tolist", "torch:Tensor.item", "torch:stack", "torch:isfinite", "torch:no_grad",
    "torch.nn.modules.module:Module.__call__", "torch.nn.modules.module:Module._call_impl",
    "torch.nn.modules.module:Module.train", "torch.nn.modules.module:Module.eval",
)

# Whole modules a score flows through: every function, class and module they define or import (the
# names their functions call), and every method of every class they define, is watched too, so
# that splitting a step out of a watched function, or into another module, never leaves it unwatched.
WATCHED_MODULES = ("harness.engine.train", "harness.engine.resident", "harness.engine.runner",
                   "harness.protocol.scoring", "harness.protocol.verdict", "harness.data.tensors",
                   "harness.store.derived")


@lru_cache(maxsize=1)
def watched() -> tuple[str, ...]:
    """:data:`WATCHED`, and every function and method defined in :data:`WATCHED_MODULES`, listed
    once, with the baseline (before any submission is imported): a replacement defined elsewhere
    stays on the list."""
    import inspect

    found = []
    for name in WATCHED_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not (inspect.isfunction(value) or inspect.isclass(value) or inspect.ismodule(value)):
                continue
            found.append(f"{name}:{attr}")  # the name its functions call, imported or not
            if inspect.isclass(value) and value.__module__ == name:
                found += [f"{name}:{attr}.{m}" for m, v in vars(value).items()
                          if inspect.isfunction(v)]
    return tuple(dict.fromkeys([*WATCHED, *found]))


# Process-wide hooks: a layer may hook itself, but a global hook sees (and can change) every
# module's output, the logits included, or every optimiser step.
GLOBAL_HOOKS = (
    "torch.nn.modules.module:_global_forward_hooks",
    "torch.nn.modules.module:_global_forward_pre_hooks",
    "torch.nn.modules.module:_global_backward_hooks",
    "torch.nn.modules.module:_global_backward_pre_hooks",
    "torch.nn.modules.module:_global_module_registration_hooks",
    "torch.optim.optimizer:_global_optimizer_pre_hooks",
    "torch.optim.optimizer:_global_optimizer_post_hooks",
)


def _resolve(target: str) -> Any:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def _fingerprint(obj: Any) -> tuple:
    code = getattr(obj, "__code__", None)
    return (id(obj), id(code) if code is not None else None,
            id(getattr(obj, "__defaults__", None)), id(getattr(obj, "__kwdefaults__", None)))


def _settle() -> None:
    """Let torch make its own lazy changes first: the first optimiser of a class wraps the class's
    ``step`` in a profiling hook."""
    import torch

    for optimizer in (torch.optim.SGD, torch.optim.Adam):
        optimizer([torch.zeros(1, requires_grad=True)], lr=0.1)


def snapshot() -> dict[str, Any]:
    _settle()
    state: dict[str, Any] = {}
    for target in watched():
        try:
            state[target] = _fingerprint(_resolve(target))
        except (AttributeError, ImportError):
            state[target] = None  # absent in this torch version: must stay absent
    for target in GLOBAL_HOOKS:
        try:
            state[target] = len(_resolve(target))
        except (AttributeError, ImportError):
            state[target] = None
    return state


@lru_cache(maxsize=1)
def baseline() -> dict[str, Any]:
    """The state before any submission ran (taken on first use, which precedes the first import)."""
    return snapshot()


def changes() -> list[str]:
    """What differs from the baseline, one phrase each; empty when nothing was tampered with."""
    before, now = baseline(), snapshot()
    out = []
    for target in watched():
        if before[target] != now[target]:
            out.append(f"{target.replace(':', '.')} was replaced or modified")
    for target in GLOBAL_HOOKS:
        if before[target] != now[target]:
            out.append(f"a global hook was installed ({target.split(':')[1]})")
    return out
