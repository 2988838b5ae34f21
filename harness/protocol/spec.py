"""What a run is: one model of it, from the command line to the record.

A :class:`RunSpec` names the submission (its file and sha256, and the keyword parameters its layer
is built with), the setting (architecture, dataset), the seed, the recipe, the data limits, the
precision and the protocol version: together, everything that changes what its numbers mean.
:meth:`RunSpec.key` is the one identity of a run: the store skips a planned run whose key already
has a completed record, a claim names the run by it, and a checkpoint is kept under it. The rest
of a spec (device, data folder, speed options, resume, instruments) says how the run executes; it
never changes the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from harness.protocol.catalog import resolve_dataset_name
from harness.protocol.entries import check_params
from harness.protocol.recipe import PROTOCOL_RECIPE, PROTOCOL_VERSION, Recipe

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SpeedOptions:
    """What was asked for; ``None`` means "the device's default" (on for CUDA, off for CPU)."""

    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None
    compile: bool = False
    compile_backend: str = "inductor"
    cuda_graphs: bool = False

    def resolve(self, device: torch.device) -> tuple["SpeedOptions", list[str]]:
        """Fill in the device's defaults; return the options to try and notes on what was dropped."""
        cuda = device.type == "cuda"
        notes = []
        cuda_graphs = self.cuda_graphs
        if cuda_graphs and not cuda:
            notes.append("CUDA graphs need a CUDA device; ignored on " + device.type)
            cuda_graphs = False
        cudnn_benchmark = cuda if self.cudnn_benchmark is None else self.cudnn_benchmark
        if cudnn_benchmark and not cuda:
            notes.append("cudnn.benchmark has no effect on " + device.type)
            cudnn_benchmark = False
        return replace(self, channels_last=cuda if self.channels_last is None else self.channels_last,
                       cudnn_benchmark=cudnn_benchmark, cuda_graphs=cuda_graphs,
                       compile=self.compile or cuda_graphs), notes


PLAIN = SpeedOptions(channels_last=False, cudnn_benchmark=False)


def recipe_id(recipe: Recipe, limit_train: int | None, limit_test: int | None) -> str:
    """A short hash of everything in a recipe that changes what a number means, data limits included."""
    payload = {**recipe.identity(), "limit_train": limit_train, "limit_test": limit_test}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One run. ``submission`` is the file that runs (the store's copy in a sweep) and ``sha256``
    its bytes' hash ("" until the file is read: :meth:`key` needs it). ``params`` are the keyword
    parameters of its layer, ``CustomNorm(num_features, **params)`` (given as a dict, kept sorted
    as pairs so that a spec stays hashable)."""

    submission: str
    arch: str
    dataset: str
    seed: int = 42
    recipe: Recipe = PROTOCOL_RECIPE
    limit_train: int | None = None
    limit_test: int | None = None
    precision: str = "fp32"  # the protocol's; "bf16" autocasts and is recorded as not comparable
    sha256: str = ""
    protocol: str = PROTOCOL_VERSION
    # Part of a suite or study (whose runs a store skips when done); an ad hoc ``harness eval``
    # run has a key of its own, so it never stands in for an entry's run.
    planned: bool = False
    # How it executes; none of these is part of the key.
    device: str = "auto"
    data_root: str | None = None
    download: bool = True
    # Same numbers, faster (harness.engine.fast).
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    resume: bool = True  # continue from this run's checkpoint when a killed attempt left one
    # The layer probes and evaluation timing of harness.engine.instruments (off only to measure their cost).
    instruments: bool = True
    # Given as a dict or as pairs; kept as sorted pairs (see __post_init__).
    params: tuple[tuple[str, Any], ...] | dict[str, Any] = ()

    def __post_init__(self):
        given = dict(self.params)
        object.__setattr__(self, "params", tuple(check_params(given).items()))

    @property
    def layer_params(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def dataset_name(self) -> str:
        """The dataset's canonical name (aliases such as fashion-mnist resolved)."""
        try:
            return resolve_dataset_name(self.dataset)
        except ValueError:
            return self.dataset

    def recipe_id(self) -> str:
        return recipe_id(self.recipe, self.limit_train, self.limit_test)

    def key(self) -> str:
        """What makes two runs the same run: code and its layer parameters, setting, seed, recipe
        and data limits, protocol and precision (``SHA256|ARCH|DATASET|SEED|RECIPE_ID|PROTOCOL|
        PRECISION``, then ``|params={...}`` when the layer is given parameters, so that the keys of
        runs without them are what they always were)."""
        if not self.sha256:
            raise ValueError(f"the run of {self.submission} has no sha256 yet: read the file first")
        recipe = self.recipe_id() if self.planned else f"adhoc-{self.recipe_id()}"
        parts = [self.sha256, self.arch, self.dataset_name, str(self.seed), recipe, self.protocol,
                 self.precision]
        if self.params:
            parts.append("params=" + json.dumps(self.layer_params, sort_keys=True))
        return "|".join(parts)

    def digest(self) -> str:
        """The key as a file name (checkpoints, journals, claims)."""
        return hashlib.sha256(self.key().encode()).hexdigest()[:32]

    def with_(self, **changes: Any) -> "RunSpec":
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "params": self.layer_params}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSpec":
        data = dict(data)
        data["recipe"] = Recipe(**data["recipe"])
        data["speed"] = SpeedOptions(**data["speed"])
        return cls(**data)

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> "RunSpec":
        """The spec a run record was produced from (what its key needs; execution defaults)."""
        cfg = record["config"]
        recipe_fields = {f.name for f in fields(Recipe)}
        recipe = Recipe(**{k: v for k, v in cfg.items() if k in recipe_fields})
        return cls(submission=record["submission"].get("path") or "", arch=cfg["arch"],
                   dataset=cfg["dataset"], seed=cfg["seed"], recipe=recipe,
                   limit_train=cfg.get("limit_train"), limit_test=cfg.get("limit_test"),
                   precision=cfg.get("precision", "fp32"), sha256=record["submission"]["sha256"],
                   protocol=record["protocol_version"], planned="suite" in record,
                   params=cfg.get("params") or {})
