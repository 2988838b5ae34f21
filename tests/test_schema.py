"""One model of a run record (harness.store.schema): its JSON Schema is the committed one, every field
is documented, and the bounds hold."""

from __future__ import annotations

import json
import re

import pytest

from harness.store import schema

from conftest import ROOT
from records import make_record


def test_the_committed_json_schema_is_the_models():
    committed = json.loads((ROOT / "docs" / "run-record.schema.json").read_text())
    assert committed == schema.RunRecord.model_json_schema(by_alias=True), \
        "regenerate it: python -m harness.store.schema > docs/run-record.schema.json"


def test_every_field_of_the_record_is_documented():
    documented = set(re.findall(r"`([a-z_]+)`", (ROOT / "docs" / "run-record.md").read_text()))
    fields = set(schema.RunRecord.model_fields)
    assert fields - documented == set()


@pytest.mark.parametrize("spoil, where", [
    (lambda r: r.update(run_id="../escape"), "run_id"),
    (lambda r: r.update(best_acc=101.0), "best_acc"),
    (lambda r: r["epochs"][0].update(test_acc=float("nan")), "epochs.0.test_acc"),
    (lambda r: r.update(flags=["x" * 500]), "flags.0"),
    (lambda r: r["failure"].update(message="m" * 10_000), "failure.message"),
    (lambda r: r.update(probes=[{"x": "y" * (2 << 20)}]), "probes"),
    (lambda r: r["submission"].update(sha256="not-a-hash"), "submission.sha256"),
    (lambda r: r.update(schema_version=9), "schema_version"),
])
def test_bounds_hold(spoil, where):
    record = make_record("a", "1" * 64, "resnet20-digits", 0, 80.0, status="failed")
    schema.validate_record(record)
    spoil(record)
    with pytest.raises(schema.ValidationError) as err:
        schema.validate_record(record)
    assert where in str(err.value).replace("\n", " ").replace(" ", ".")
