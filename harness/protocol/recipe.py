"""The training recipe of the reference protocol, and the version that names what a number means.

The defaults are the reference benchmark's (docs/protocol.md): SGD lr 0.1, momentum 0.9, weight
decay 5e-4, no Nesterov, cosine over 200 epochs, batch 128, crop+flip. A leaderboard suite may
change only the size of training (epochs, batch sizes, lr); a study may change what training is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

# Bumped whenever anything that changes what a number means changes (recipe, data, models, init).
PROTOCOL_VERSION = "dl-normalization-1"

PRECISIONS = ("fp32", "bf16")  # fp32 is the protocol's; bf16 autocasts and is never comparable
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant", "warmup_cosine")
# Fields a study may change but a leaderboard suite may not (harness.protocol.suites refuses them): they
# change what training *is*, not only its size (epochs, batch sizes, lr, warm-up epochs).
STUDY_ONLY_FIELDS = ("optimizer", "schedule", "early_stopping_patience", "augment",
                     "warmup_lr", "min_lr", "label_smoothing", "grad_clip")
# Fields added after the first records were written: they enter a recipe's identity only when
# they differ from the protocol, so the keys and recipe ids of older records stay valid.
ADDED_FIELDS = ("optimizer", "early_stopping_patience", "augment", "warmup_epochs", "warmup_lr",
                "min_lr", "label_smoothing", "grad_clip")


@dataclass(frozen=True)
class Recipe:
    """The training recipe. The defaults are the reference protocol's and must not change.

    ``optimizer`` "sgd" is SGD(lr, momentum, weight_decay, nesterov); "adam" is Adam(lr,
    betas=(0.9, 0.999), eps=1e-8, weight_decay) and ignores momentum and nesterov; "adamw" is
    AdamW with the same arguments (decoupled weight decay). ``schedule`` "cosine" is
    CosineAnnealingLR(T_max=epochs) stepped per epoch after evaluation; "constant" keeps lr;
    "warmup_cosine" is timm's CosineLRScheduler as the ViT-Lite recipe uses it (:meth:`lr_at`).
    ``early_stopping_patience`` N stops after N epochs in a row without a new best test accuracy
    (the protocol has no validation split, so this monitors the test set, as the score does).
    ``augment`` False trains on the un-cropped, un-flipped images (crop+flip is for images;
    features and sequences are never augmented). ``label_smoothing`` goes into the training loss
    (the test loss stays plain cross-entropy); ``grad_clip`` clips the gradients' total norm
    before each step.
    """

    epochs: int = 200
    batch_size: int = 128
    test_batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    optimizer: str = "sgd"
    early_stopping_patience: int | None = None
    augment: bool = True
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.test_batch_size < 1:
            raise ValueError("epochs and batch sizes must be at least 1")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be at least 1 (or absent)")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError("warmup_epochs must be at least 0 and fewer than epochs")
        if self.warmup_epochs and self.schedule != "warmup_cosine":
            raise ValueError("warmup_epochs needs schedule 'warmup_cosine'")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError("grad_clip must be positive (or absent)")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based) under "warmup_cosine": ``warmup_lr +
        (lr - warmup_lr) e / warmup_epochs`` while ``e < warmup_epochs``, then ``min_lr +
        (lr - min_lr)(1 + cos(pi e / epochs)) / 2`` (timm's CosineLRScheduler without
        warmup_prefix, stepped per epoch)."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr + (self.lr - self.warmup_lr) * epoch / self.warmup_epochs
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * epoch / self.epochs))

    def deviations(self) -> list[str]:
        """How this recipe differs from the protocol's, one phrase per field."""
        ref = PROTOCOL_RECIPE
        return [f"{k}={v!r} (protocol: {getattr(ref, k)!r})"
                for k, v in asdict(self).items() if v != getattr(ref, k)]

    def identity(self) -> dict:
        """The fields that name this recipe in run keys and checkpoint hashes."""
        return {k: v for k, v in asdict(self).items()
                if k not in ADDED_FIELDS or v != getattr(PROTOCOL_RECIPE, k)}


PROTOCOL_RECIPE = Recipe()

# Each track's recipe (docs/tracks.md says where each comes from). A track suite may change only
# its size, as a CNN suite may change only the protocol's.
TRACK_RECIPES: dict[str, Recipe] = {
    # The reference benchmark's (docs/protocol.md).
    "cnn": PROTOCOL_RECIPE,
    # Ours: the CNN recipe at 50 epochs, so that a layer's MLP and CNN numbers share an optimiser.
    "mlp": replace(PROTOCOL_RECIPE, epochs=50, augment=False),
    # Ours: AdamW at Adam's default lr (Kingma & Ba 2015) and the gradient-norm clipping usual for
    # LSTMs (Pascanu et al. 2013), a one-epoch warm-up into cosine.
    "rnn": Recipe(epochs=20, batch_size=64, test_batch_size=128, lr=1e-3, weight_decay=1e-2,
                  optimizer="adamw", schedule="warmup_cosine", warmup_epochs=1, warmup_lr=1e-5,
                  min_lr=1e-5, grad_clip=1.0, augment=False),
    # ViT-Lite on CIFAR-10 (Hassani et al. 2021, arXiv:2104.05704; SHI-Labs/Compact-Transformers,
    # configs for cifar10): AdamW lr 5.5e-4, weight decay 6e-2, batch 128, 300 epochs, 10 warm-up
    # epochs from 1e-5, cosine to 1e-5, label smoothing 0.1. Their RandAugment, mixup and cutmix
    # are left out: the CNN track's crop+flip is the one augmentation of the harness.
    "transformer": Recipe(epochs=300, batch_size=128, test_batch_size=128, lr=5.5e-4,
                          weight_decay=6e-2, optimizer="adamw", schedule="warmup_cosine",
                          warmup_epochs=10, warmup_lr=1e-5, min_lr=1e-5, label_smoothing=0.1),
}
