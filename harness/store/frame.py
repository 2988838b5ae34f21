"""Run records as a pandas DataFrame: the one flattener of records, which the results API
(harness.results.load) and the leaderboard's runs table (harness.leaderboard.stats.runs_frame)
both read. Each record is one row; nested fields become dotted columns (``config.lr``,
``config.params.p``, ``suite.setting``, ``dynamics.epochs_to_reach.95%``); lists of a length that
varies from run to run stay out (the epochs are harness.results.load_curves), flags and
deviations become one string, and each row has the run's ``key`` (harness.protocol.spec.RunSpec.key:
the same key, the same run)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pandas as pd

from harness.protocol.spec import RunSpec

# Kept out of the flat table: lists of a length that varies from run to run.
LONG_FIELDS = ("epochs", "probes", "checks", "reported", "resumes", "deviations", "flags")


def run_key(record: dict[str, Any]) -> str | None:
    try:
        return RunSpec.of_record(record).key()
    except (KeyError, TypeError, ValueError):
        return None


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One record as one (still nested) row, before :func:`records_frame` dots its columns."""
    row = {k: v for k, v in record.items() if k not in LONG_FIELDS}
    environment = dict(row.pop("environment", None) or {})
    environment.pop("argv", None)
    scan = row.pop("scan", None) or {}
    row["environment"] = environment
    row["scan.findings"] = len(scan.get("findings") or [])
    row["deviations"] = "; ".join(record.get("deviations") or [])
    row["flags"] = ", ".join(record.get("flags") or [])
    row["comparable"] = record.get("comparable")
    row["key"] = run_key(record)
    row["epochs_run"] = len(record.get("epochs") or [])
    return row


def records_frame(records: Iterable[dict[str, Any]],
                  derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per record, nested fields dotted; ``derived(record)`` adds columns of a caller's own
    (what needs the whole record: its checks, its flags as a list)."""
    rows = [{**flatten(r), **(derived(r) if derived else {})} for r in records]
    return pd.json_normalize(rows, sep=".") if rows else pd.DataFrame()
