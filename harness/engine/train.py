"""The protocol's training loop, read top to bottom.

SGD(lr 0.1, momentum 0.9, weight decay 5e-4, no Nesterov) over all parameters in one group;
cross-entropy (other tracks' recipes: AdamW, warm-up, label smoothing, gradient clipping;
harness.protocol.recipe); CosineAnnealingLR(T_max=epochs) stepped once per epoch *after* evaluation; the full
test set evaluated every epoch in dataset order, batches of 128, last partial batch kept. The score
is the best test accuracy over all epochs (the protocol selects on the test set; we also keep the
final epoch's accuracy).

Loss and accuracy are accumulated on the device and read once per epoch, so the step never waits
for the host.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from harness.data.tensors import Dataset, draw_epoch, make_pipeline
from harness.engine.checkpoint import Checkpoint, global_rng_state, set_global_rng_state
from harness.engine.device import autocast, synchronize
from harness.engine.fast import Prepared, prepare
from harness.engine.instruments import BatchTimer, layer_probe, probe_epochs
from harness.engine.resident import ResidentData, evaluate, resident_data
from harness.protocol.recipe import Recipe
from harness.protocol.spec import SpeedOptions
from harness.protocol.verdict import best_index
from harness.reporting import Reporter


@dataclass
class EpochMetrics:
    """One epoch. The test numbers are None in a sandboxed training process, which never sees a
    test label: the parent scores the weights it hands over (harness.execution.untrusted)."""

    epoch: int
    lr: float
    train_loss: float | None  # None: a hand-over whose loss was not finite (harness.store.schema)
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    train_s: float
    eval_s: float
    check_change: float | None = None  # harness.protocol.scoring.prediction_change of the check batches
    check_flips: int | None = None


@dataclass
class TrainResult:
    epochs: list[EpochMetrics] = field(default_factory=list)
    status: str = "ok"  # ok | diverged
    train_s: float = 0.0
    eval_s: float = 0.0
    train_images: int = 0
    speed: dict = field(default_factory=dict)  # what harness.engine.fast put in effect, and its checks
    resumed_from: int | None = None  # the last epoch of the checkpoint this run resumed from
    divergence: dict | None = None  # where and what turned non-finite (DivergenceWatch.read)
    stopped_early: int | None = None  # the epoch after which early stopping ended the run
    probes: list[dict] = field(default_factory=list)  # harness.engine.instruments.layer_probe, per epoch
    probe_s: float = 0.0  # time spent in the probes
    inference: dict | None = None  # the last evaluation's per-batch forward times (BatchTimer)

    def diverge(self, divergence: dict) -> "TrainResult":
        self.status, self.divergence = "diverged", divergence
        return self

    @property
    def best(self) -> EpochMetrics | None:
        i = best_index([e.test_acc for e in self.epochs])
        return self.epochs[i] if i is not None else None


class DivergenceWatch:
    """Stops a run at the first non-finite loss or parameter, checked after every optimiser step.

    The check is queued on the device every step and read every ``CPU_EVERY`` (1) or
    ``CUDA_EVERY`` (16) steps and with the epoch's metrics, so that a GPU step does not wait for
    the host; the first bad step is known exactly, and on a GPU at most 15 more steps run.
    """

    CPU_EVERY, CUDA_EVERY = 1, 16

    def __init__(self, model: nn.Module, device: torch.device):
        self.named = list(model.named_parameters())
        self.params = [p for _, p in self.named]
        self.every = self.CPU_EVERY if device.type == "cpu" else self.CUDA_EVERY
        self.pending = 0
        # The first bad (epoch, step), kept on the device: (-1, -1) while all is finite.
        self.first = torch.full((2,), -1, dtype=torch.int64, device=device)

    def step(self, loss: torch.Tensor, epoch: int, step: int) -> dict | None:
        finite = torch.isfinite(loss.float())
        if self.params:  # one multi-tensor kernel on a GPU; not finite when any element is not
            finite = finite & torch.isfinite(torch.nn.utils.get_total_norm(self.params))
        here = torch.tensor([epoch, step], device=self.first.device)
        self.first.copy_(torch.where((self.first[0] < 0) & ~finite, here, self.first))
        self.pending += 1
        return self.read() if self.pending >= self.every else None

    def read(self, first: tuple[int, int] | None = None) -> dict | None:
        """The divergence, if any; ``first`` is ``self.first`` when the caller already read it."""
        self.pending = 0
        epoch, step = [int(v) for v in (first if first is not None else self.first.tolist())]
        if epoch < 0:
            return None
        bad = next((n for n, p in self.named if not torch.isfinite(p).all()), None)
        what = f"parameter {bad}" if bad else "training loss"
        return {"epoch": epoch, "step": step, "what": what,
                "message": f"{what} not finite after step {step} of epoch {epoch}"}


def data_seed(seed: int) -> int:
    """Seed of the data-order/augmentation stream, derived from the run seed but distinct from it."""
    return int(np.random.SeedSequence([seed, 0xDA7A]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class TrainOptions:
    """How :func:`train` runs, beyond what it trains (model, data, recipe, device, seed).

    ``speed`` (channels_last, cudnn.benchmark, torch.compile, CUDA graphs) is applied only where
    :func:`harness.engine.fast.prepare` proves it gives this layer the plain model's results; by
    default a CPU run is plain eager. With ``norm_class`` (the submitted layer), the instruments of
    :mod:`harness.engine.instruments` run: the layer probe after the first, middle and last
    epochs, and per-batch evaluation timing. With ``checkpoint``, the training state is saved at
    the end of every epoch but the last (with ``checkpoint_extra``: the record's identity);
    ``resume_state`` (a loaded checkpoint) continues a run from its last completed epoch.
    ``hand_over(metrics, model, probe)``: see :func:`train`."""

    precision: str = "fp32"
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    norm_class: type[nn.Module] | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_extra: dict | None = None
    resume_state: dict | None = None
    hand_over: Callable[[EpochMetrics, nn.Module, dict | None], bool] | None = None


@dataclass
class TrainingState:
    """Everything the rest of a run depends on, as its checkpoint holds it: the model's parameters
    and buffers, the optimiser's momentum, the scheduler, the data stream's generator, the global
    random states, and the epochs (and times) so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    result: TrainResult
    device: torch.device

    def state_dict(self) -> dict:
        r = self.result
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "data_rng": self.generator.get_state(),
                "rng": global_rng_state(self.device), "epochs": [asdict(e) for e in r.epochs],
                "train_s": r.train_s, "eval_s": r.eval_s, "train_images": r.train_images,
                "probes": r.probes, "probe_s": r.probe_s}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["data_rng"])
        set_global_rng_state(state["rng"], self.device)
        r = self.result
        r.epochs = [EpochMetrics(**e) for e in state["epochs"]]
        r.train_s, r.eval_s, r.train_images = state["train_s"], state["eval_s"], state["train_images"]
        r.resumed_from = len(r.epochs)
        r.probes, r.probe_s = state.get("probes", []), state.get("probe_s", 0.0)


def train(model: nn.Module, data: Dataset, recipe: Recipe, device: torch.device, seed: int,
          options: TrainOptions | None = None, reporter: Reporter | None = None,
          result: TrainResult | None = None) -> TrainResult:
    """Train ``model`` on ``data`` under ``recipe``; return per-epoch metrics.

    Each epoch ends with the scoring of :mod:`harness.protocol.scoring` on ``data.test``. Without a test
    split (``data.test`` None: a sandboxed training process), the test numbers stay None and
    ``options.hand_over(metrics, model, probe)`` passes each epoch's model to whoever scores it,
    before the epoch's checkpoint is written, and returns whether the run stops there (early
    stopping decided by the scoring side).

    The run stops, with status ``diverged``, at the first non-finite loss or parameter
    (:class:`DivergenceWatch`); the completed epochs before it (and their best accuracy) are kept.
    Pass ``result`` to keep the completed epochs even when the layer raises part-way.
    """
    options = options or TrainOptions()
    reporter = reporter or Reporter()
    result = result if result is not None else TrainResult()
    loop = set_up(model, data, recipe, device, seed, options, reporter, result)
    probe_at = probe_epochs(recipe.epochs)
    first = len(result.epochs) + 1 if options.resume_state is not None else 1
    for epoch in range(first, recipe.epochs + 1):
        metrics, timer = run_epoch(loop, recipe, epoch, options, reporter)
        if isinstance(metrics, dict):
            return result.diverge(metrics)
        record_epoch(result, metrics, loop.n_train, timer, device)
        stop = should_stop(result.epochs, recipe.early_stopping_patience)
        probe = None
        if options.norm_class is not None and (epoch in probe_at or stop):
            probe = probe_layer(loop.state, *loop.probe_batch, options.norm_class, options.precision,
                                epoch)
        if options.hand_over is not None and options.hand_over(metrics, model, probe):
            stop = True  # the scoring side's early stopping
        reporter.epoch(metrics)
        loop.state.scheduler.step()
        if stop:
            result.stopped_early = epoch
            break
        if options.checkpoint is not None and epoch < recipe.epochs:
            options.checkpoint.save({**loop.state.state_dict(), **(options.checkpoint_extra or {})})
    return result


@dataclass
class Loop:
    """A run ready to train: its state, the model as the step calls it (harness.engine.fast), its
    data on the device, the divergence watch, and the layer probe's batch (the first training
    images, un-augmented: the same after every epoch)."""

    state: TrainingState
    fast: Prepared
    resident: ResidentData
    watch: DivergenceWatch
    probe_batch: tuple[torch.Tensor, torch.Tensor]
    n_train: int
    n_test: int | None  # None without a test split


def set_up(model: nn.Module, data: Dataset, recipe: Recipe, device: torch.device, seed: int,
           options: TrainOptions, reporter: Reporter, result: TrainResult) -> Loop:
    """The model on the device and its speed options checked (harness.engine.fast), the data
    resident in the layout that passed, the optimiser, the scheduler and the data stream seeded;
    resumed from ``options.resume_state`` when given."""
    model.to(device)
    pipeline = make_pipeline(data.spec, data.mean, data.std, device)
    first_x = data.train.inputs[:recipe.batch_size].to(device)
    first_y = data.train.labels[:recipe.batch_size].to(device)
    fast = prepare(model, pipeline.test_batch(first_x), first_y, device, options.speed,
                   options.precision, reporter.warn)
    result.speed = fast.report
    pipeline.memory_format = fast.memory_format  # batches from here on in the layout that passed
    resident = resident_data(data, recipe, pipeline, device, seed)
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator(device=device)
    generator.manual_seed(data_seed(seed))
    state = TrainingState(model, optimizer, make_scheduler(optimizer, recipe), generator, result,
                          device)
    if options.resume_state is not None:  # after the speed probe, which restores what it draws
        state.load_state_dict(options.resume_state)
    return Loop(state, fast, resident, DivergenceWatch(model, device),
                (pipeline.test_batch(first_x), first_y), len(data.train),
                len(data.held_test) if data.test is not None else None)


def run_epoch(loop: Loop, recipe: Recipe, epoch: int, options: TrainOptions,
              reporter: Reporter) -> tuple[EpochMetrics | dict, BatchTimer | None]:
    """One epoch: its training, then its scoring of the test set (none without one), both read
    in the epoch's one host synchronisation; its metrics (and the evaluation's batch timer), or
    the divergence (a dict) that stopped it."""
    state, device = loop.state, loop.state.device
    lr = state.optimizer.param_groups[0]["lr"]
    synchronize(device)
    t0 = time.perf_counter()
    sums = train_epoch(state, loop.fast, loop.resident, recipe, loop.watch, epoch, options.precision,
                       reporter)
    if isinstance(sums, dict):
        return sums, None
    loss_sum, correct = sums
    synchronize(device)
    t1 = time.perf_counter()
    timer = BatchTimer(device) if options.norm_class is not None and loop.n_test is not None else None
    scored = evaluate(loop.fast, loop.resident, device, options.precision, timer)
    tl, tc, bad_epoch, bad_step, *test = torch.stack([
        loss_sum, correct.double(), *loop.watch.first.double(),
        *(scored.values() if scored is not None else [])]).tolist()
    t2 = time.perf_counter()
    bad = loop.watch.read((bad_epoch, bad_step))
    if bad is not None:
        return bad, None
    metrics = EpochMetrics(epoch=epoch, lr=lr, train_loss=tl / loop.n_train,
                           train_acc=100.0 * tc / loop.n_train, test_loss=None, test_acc=None,
                           train_s=t1 - t0, eval_s=t2 - t1)
    if test and loop.n_test is not None:
        metrics = test_metrics(metrics, test, n_test=loop.n_test)
    return metrics, timer


def record_epoch(result: TrainResult, metrics: EpochMetrics, n_train: int,
                 timer: BatchTimer | None, device: torch.device) -> None:
    """Add an epoch to the result: its metrics, its times, and the evaluation's batch timings."""
    result.epochs.append(metrics)
    result.train_s += metrics.train_s
    result.eval_s += metrics.eval_s
    result.train_images += n_train
    if timer is not None:
        result.inference = timer.summary(device)


def train_epoch(state: TrainingState, fast: Prepared, resident: ResidentData, recipe: Recipe,
                watch: DivergenceWatch, epoch: int, precision: str,
                reporter: Reporter) -> tuple[torch.Tensor, torch.Tensor] | dict:
    """One pass over the training set in this epoch's order: the loss and correct-count sums, on
    the device, or the divergence (a dict) that stopped it mid-epoch. The epoch's last step is
    checked with the epoch's metrics (one host synchronisation)."""
    model, device, bs = state.model, state.device, recipe.batch_size
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    n_train = len(resident.train_labels)
    model.train()
    plan = draw_epoch(n_train, state.generator, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, n_train, bs):
        sl = slice(start, start + bs)
        idx = plan.order[sl]
        x, y = resident.batch(idx, plan, sl), resident.train_labels[idx]
        fast.mark_step()
        with autocast(device, precision):
            logits = fast.model(x)  # the module the step calls; its parameters are ``model``'s
            loss = criterion(logits.float(), y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        state.optimizer.step()
        loss_sum += loss.detach().double() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        reporter.step()
        bad = watch.step(loss.detach(), epoch, start // bs + 1)
        if bad is not None and start + bs < n_train:
            return bad
    return loss_sum, correct


def probe_layer(state: TrainingState, probe_x: torch.Tensor, probe_y: torch.Tensor,
                norm_class: type[nn.Module], precision: str, epoch: int) -> dict:
    """The layer probe (harness.engine.instruments.layer_probe) of ``norm_class``'s layers after
    ``epoch``, kept in the result with the time it took."""
    device, result = state.device, state.result
    synchronize(device)
    t0 = time.perf_counter()
    probe = {"epoch": epoch, **layer_probe(state.model, probe_x, probe_y, norm_class, device, precision)}
    result.probes.append(probe)
    synchronize(device)
    result.probe_s += time.perf_counter() - t0
    return probe


def test_metrics(metrics: EpochMetrics, scored: Sequence[float], n_test: int) -> EpochMetrics:
    """``metrics`` with the test numbers of a scoring (harness.protocol.scoring.Scored's values,
    read: loss sum, correct, check change, check flips)."""
    loss_sum, correct, change, flips = scored
    return replace(metrics, test_loss=loss_sum / n_test, test_acc=100.0 * correct / n_test,
                   check_change=change if math.isfinite(change) else None, check_flips=int(flips))


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
        return cls(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    if recipe.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)
    if recipe.schedule == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: recipe.lr_at(epoch) / recipe.lr if recipe.lr else 1.0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)


def should_stop(epochs: list[EpochMetrics], patience: int | None) -> bool:
    """Early stopping: the last ``patience`` epochs brought no test accuracy above the best of the
    epochs before them (as Keras' EarlyStopping with min_delta 0)."""
    accs = [e.test_acc for e in epochs if e.test_acc is not None]
    if patience is None or len(accs) < len(epochs) or len(accs) <= patience:
        return False  # no test numbers (a sandboxed trainer: its parent decides), or too few yet
    before = max(accs[:-patience])
    return all(not acc > before for acc in accs[-patience:])
