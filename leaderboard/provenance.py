"""Provenance: what a reader needs to trust a set of runs (recipe, devices, libraries, harness
commit, protocol, data), each value once. Entry pages and study reports show the same."""

from __future__ import annotations

from typing import Any

RECIPE_FIELDS = ["epochs", "batch_size", "test_batch_size", "lr", "momentum", "weight_decay",
                 "nesterov", "schedule", "limit_train", "limit_test"]


def distinct_values(records: list[dict[str, Any]], fn) -> list[Any]:
    """``fn`` of each record, each value once, in order; records lacking a field are skipped."""
    values = []
    for r in records:
        try:
            v = fn(r)
        except (KeyError, TypeError):
            continue
        if v not in values:
            values.append(v)
    return values


def provenance(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The distinct values, over ``records``, of what a reader needs to trust them."""

    def distinct(fn):
        return distinct_values(records, fn)

    return {
        "recipe": {k: distinct(lambda r, k=k: r["config"][k]) for k in RECIPE_FIELDS},
        "devices": distinct(lambda r: f"{r['environment']['device']} ({r['environment']['device_name']})"),
        "torch": distinct(lambda r: r["environment"]["torch"]),
        "torchvision": distinct(lambda r: r["environment"]["torchvision"]),
        "python": distinct(lambda r: r["environment"]["python"]),
        "harness": distinct(lambda r: r["environment"]["harness"]),
        "git": distinct(lambda r: (r["environment"]["git"] or {}).get("commit")),
        "protocol": distinct(lambda r: r["protocol_version"]),
        "schema": distinct(lambda r: r.get("upgraded_from") and f"{r['upgraded_from']} (upgraded)"
                           or r["schema_version"]),
        "data": distinct(lambda r: f"{r['config']['dataset']}: {r['data']['train_size']} train "
                                   f"(sha256 {r['data']['train_sha256'][:12]}), "
                                   f"{r['data']['test_size']} test (sha256 {r['data']['test_sha256'][:12]})"),
        "deviations": distinct(lambda r: "; ".join(r["deviations"]) or "none"),
    }
