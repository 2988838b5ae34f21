"""The training recipe of the reference protocol, and the version that names what a number means.

The defaults are the reference benchmark's (docs/protocol.md): SGD lr 0.1, momentum 0.9, weight
decay 5e-4, no Nesterov, cosine over 200 epochs, batch 128, crop+flip. A leaderboard suite may
change only the size of training (epochs, batch sizes, lr); a study may change what training is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Bumped whenever anything that changes what a number means changes (recipe, data, models, init).
PROTOCOL_VERSION = "dl-normalization-1"

PRECISIONS = ("fp32", "bf16")  # fp32 is the protocol's; bf16 autocasts and is never comparable
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
# Fields a study may change but a leaderboard suite may not (harness.protocol.suites refuses them): they
# change what training *is*, not only its size.
STUDY_ONLY_FIELDS = ("optimizer", "schedule", "early_stopping_patience", "augment")
# Fields added after the first records were written: they enter a recipe's identity only when
# they differ from the protocol, so the keys and recipe ids of older records stay valid.
ADDED_FIELDS = ("optimizer", "early_stopping_patience", "augment")


@dataclass(frozen=True)
class Recipe:
    """The training recipe. The defaults are the reference protocol's and must not change.

    ``optimizer`` "sgd" is SGD(lr, momentum, weight_decay, nesterov); "adam" is Adam(lr,
    betas=(0.9, 0.999), eps=1e-8, weight_decay) and ignores momentum and nesterov. ``schedule``
    "cosine" is CosineAnnealingLR(T_max=epochs) stepped per epoch after evaluation; "constant"
    keeps lr. ``early_stopping_patience`` N stops after N epochs in a row without a new best test
    accuracy (the protocol has no validation split, so this monitors the test set, as the score
    does). ``augment`` False trains on the un-cropped, un-flipped images (crop+flip is for images;
features and sequences are never augmented).
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

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.test_batch_size < 1:
            raise ValueError("epochs and batch sizes must be at least 1")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be at least 1 (or absent)")

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
