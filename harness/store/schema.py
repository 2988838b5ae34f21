"""The one model of what a run produces, with size bounds: the run record, and what a sandboxed
run's processes hand over to the parent on their way to it.

Everything written into a results folder is a :class:`RunRecord` (validated when it is written
and when it is read: a record that is not one is skipped and reported, never fatal), and
everything a sandboxed process hands over is validated against the models below before any of
it is used. Strings, lists and maps are bounded, numbers are finite or null (JSON has no NaN).
docs/run-record.md documents the fields; ``docs/run-record.schema.json`` is generated from
:class:`RunRecord` (``python -m harness.store.schema``) and a test keeps the two in step.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

__all__ = ["CheckResult", "EndReport", "EpochReport", "RunRecord", "StartReport", "ValidationError", "validate_record"]

Name = Annotated[str, StringConstraints(max_length=200)]
Text = Annotated[str, StringConstraints(max_length=500)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Number = Annotated[float, Field(allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Epoch = Annotated[int, Field(ge=1, le=100_000)]


MAX_DEPTH = 32  # nesting of free-form JSON: what a reader (or the pure-Python encoder) recurses over


def json_depth(value: Any, stop: int = MAX_DEPTH) -> int:
    """How deeply lists and maps nest in ``value`` (counted without recursion; stops past ``stop``)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= stop:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _bounded_json(limit: int):
    def check(value: Any) -> Any:
        if json_depth(value) > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} deep")
        if len(json.dumps(value, allow_nan=False)) > limit:
            raise ValueError(f"more than {limit} characters of JSON")
        return value
    return AfterValidator(check)


Json64k = Annotated[Any, _bounded_json(65_536)]
Json1M = Annotated[Any, _bounded_json(1 << 20)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Fields known and checked; others allowed (records of older and newer harness versions)."""

    model_config = ConfigDict(extra="allow")


# -- what a sandboxed training process hands over (harness.execution.handover) --------------

class Activation(Strict):
    mean: Number | None
    std: Number | None


class Probe(Strict):
    epoch: Epoch
    loss: Number | None = None
    batch_images: Count | None = None
    grad_norms: Annotated[dict[Name, Number | None], Field(max_length=10_000)] = {}
    activations: Annotated[dict[Name, Activation], Field(max_length=10_000)] = {}
    error: Text | None = None


class EpochReport(Strict):
    """An ``epoch`` frame: what the training process says of one of its epochs. Its
    test numbers come from the parent's scoring, never from here."""

    epoch: Epoch
    lr: Number
    train_loss: Number | None  # null once the loss is not finite
    train_acc: Percent
    train_s: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]  # summed over epochs: finite
    probe: Probe | None = None


class ModelReport(Strict):
    parameters: Count
    init_overwritten: Annotated[list[Name], Field(max_length=10_000)]


class NormLayers(Strict):
    class_: Name = Field(alias="class")
    count: Count
    parameters: Count

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StartReport(Strict):
    """The ``start`` frame: the model the training process built."""

    model: ModelReport
    norm_layers: NormLayers
    device_name: Name
    notes: Annotated[list[Text], Field(max_length=50)] = []


class Divergence(Strict):
    epoch: Epoch
    step: Count
    what: Name
    message: Text


class ReportedFailure(Strict):
    category: Literal["interface", "exception", "out-of-memory", "setup"]
    message: Text
    traceback: LongText | None = None


class EndReport(Strict):
    """The ``end`` frame: how the training process ended."""

    status: Literal["ok", "diverged", "failed"]
    divergence: Divergence | None = None
    failure: ReportedFailure | None = None
    speed: Json64k = None
    cuda_max_allocated: Count | None = None


# -- the run record --------------------------------------------------------------------------

FAILURE_CATEGORIES = ("interface", "exception", "timeout", "out-of-memory", "diverged", "tampered",
                      "crashed", "setup", "refused", "resource-limit", "malformed")


class Failure(Open):
    category: Literal[FAILURE_CATEGORIES]  # type: ignore[valid-type]
    message: Text
    epoch: Count | None = None
    step: Count | None = None
    traceback: LongText | None = None
    log_tail: LongText | None = None
    reported: bool | None = None  # the message is the sandboxed process's own account


class EpochRow(Open):
    epoch: Epoch
    lr: Number | None = None
    train_loss: Number | None = None
    train_acc: Percent | None = None
    test_loss: Number | None = None
    test_acc: Percent | None = None
    epoch_s: Number | None = None
    check_change: Number | None = None
    check_flips: Count | None = None


class Config(Open):
    arch: Name
    dataset: Name
    seed: int
    epochs: Epoch
    batch_size: Count
    lr: Number
    num_classes: Count | None = None
    speed: Json64k = None
    # The layer's keyword parameters, CustomNorm(num_features, **params) (absent before they existed).
    params: dict[Name, bool | int | float | Name] = {}


class Submission(Open):
    path: LongText
    name: Name
    sha256: Sha
    class_: Name | None = Field(default=None, alias="class")

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Check(Open):
    name: Name
    status: Literal["pass", "warn", "fail", "skip"]
    detail: LongText
    fatal: bool = False
    track: Name = ""  # the track whose layout was checked ("" for the file's own rows, old records)


class Suite(Open):
    name: Name
    setting: Name
    hidden: bool = False
    final: bool = False
    recipe_id: Name | None = None


class CheckRow(Strict):
    name: Name
    status: Literal["pass", "warn", "fail", "skip"]
    detail: LongText
    fatal: bool
    track: Literal["", "cnn", "mlp", "rnn", "transformer"] = ""


class CheckReport(Strict):
    submission: LongText
    sha256: Sha | None
    ok: bool
    fits: dict[Literal["cnn", "mlp", "rnn", "transformer"], bool] = Field(default_factory=dict)
    checks: Annotated[list[CheckRow], Field(max_length=100)]


class CheckResult(Strict):
    """What a check worker writes: its report, or why there is none."""

    report: CheckReport | None = None
    error: Text | None = None
    category: Literal["interface", "refused", "tampered", "exception", "setup"] | None = None


RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class RunRecord(Open):
    """One run (docs/run-record.md). Unknown keys are kept (older and newer versions)."""

    schema_version: Literal[1, 2, 3]
    protocol_version: Name
    run_id: Annotated[str, StringConstraints(pattern=RUN_ID.pattern)]
    status: Literal["ok", "diverged", "failed"]
    failure: Failure | None = None
    comparable: bool
    deviations: Annotated[list[Text], Field(max_length=100)] = []
    config: Config
    submission: Submission
    checks: Annotated[list[Check], Field(max_length=200)] = []
    entry: Name | None = None
    entry_kind: Literal["submission", "baseline", "study"] | None = None
    suite: Suite | None = None
    epochs: Annotated[list[EpochRow], Field(max_length=100_000)] = []
    epochs_completed: Count = 0
    best_acc: Percent | None = None
    best_epoch: Epoch | None = None
    final_acc: Percent | None = None
    flags: Annotated[list[Name], Field(max_length=20)] = []
    probes: Json1M = []
    evaluation: Json64k = None
    environment: Json64k = None
    reported: Annotated[list[Name], Field(max_length=100)] = []


def validate_record(record: dict[str, Any]) -> RunRecord:
    """The record as a :class:`RunRecord`; raises ValidationError when it is not one."""
    return RunRecord.model_validate(record)


if __name__ == "__main__":  # python -m harness.store.schema: the JSON Schema of the run record
    json.dump(RunRecord.model_json_schema(by_alias=True), sys.stdout, indent=2)
    sys.stdout.write("\n")
