"""The results API: a results folder's runs as pandas DataFrames, for notebooks and scripts.

    from harness import results
    runs = results.load("results")              # one row per run record
    curves = results.load_curves("results")     # one row per (run, epoch)

``load`` flattens each record's ``config`` (the recipe's fields, ``params.<name>`` for the layer's
parameters), its metrics (``best_acc``, ``final_acc``, ``dynamics.*``, ``inference.*``,
``peak_memory.*``), where it ran and what it belongs to (``entry``, ``suite.*``, ``study.*``), and
adds the run's ``key`` (harness.protocol.spec.RunSpec.key: the same key, the same run). Long
lists (epochs, probes, checks, scan findings) stay out of it: the epochs are :func:`load_curves`,
joined on ``run_id``. A run retried after a failure has one row per attempt; the latest of each
key is ``runs.sort_values("ended_at").drop_duplicates("key", keep="last")``. Records that cannot
be read are skipped, as everywhere in the harness (``ResultsStore.problems`` says why).

docs/results-api.md shows both at work, with a script that draws a study report's figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.protocol.spec import RunSpec
from harness.store.results import ResultsStore

# Kept out of the flat table: lists of a length that varies from run to run.
LONG_FIELDS = ("epochs", "probes", "checks", "reported", "resumes", "deviations", "flags")
# The columns a reader looks for first, in this order; the rest follow sorted.
FIRST = ("run_id", "entry", "status", "config.arch", "config.dataset", "config.seed", "best_acc",
         "final_acc", "best_epoch")
EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s")


def _records(path: str | Path, study: str | None) -> list[dict[str, Any]]:
    root = Path(path)
    if not (root / "runs").is_dir():
        raise FileNotFoundError(f"{root}: not a results folder (no runs/ in it)")
    records = ResultsStore(root).records()
    return [r for r in records if study is None or (r.get("study") or {}).get("name") == study]


def _key(record: dict[str, Any]) -> str | None:
    try:
        return RunSpec.of_record(record).key()
    except (KeyError, TypeError, ValueError):
        return None


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k not in LONG_FIELDS}
    environment = dict(row.pop("environment", None) or {})
    environment.pop("argv", None)
    scan = row.pop("scan", None) or {}
    row["environment"] = environment
    row["scan.findings"] = len(scan.get("findings") or [])
    row["deviations"] = "; ".join(record.get("deviations") or [])
    row["flags"] = ", ".join(record.get("flags") or [])
    row["comparable"] = record.get("comparable")
    row["key"] = _key(record)
    row["epochs_run"] = len(record.get("epochs") or [])
    return row


def load(path: str | Path, *, study: str | None = None) -> pd.DataFrame:
    """Every run record under ``path`` (a results folder), or those of the study named ``study``,
    as one row each with nested fields flattened to dotted columns (``config.lr``,
    ``config.params.p``, ``dynamics.epochs_to_reach.95%``). Raises FileNotFoundError when
    ``path`` is not a results folder; an empty folder gives an empty frame."""
    rows = [_flat(r) for r in _records(path, study)]
    if not rows:
        return pd.DataFrame(columns=list(FIRST) + ["key"])
    frame = pd.json_normalize(rows, sep=".")
    first = [c for c in FIRST if c in frame.columns]
    return frame[first + sorted(c for c in frame.columns if c not in first)]


def load_curves(path: str | Path, *, study: str | None = None) -> pd.DataFrame:
    """The per-epoch curves of every run under ``path``: one row per (run, epoch) with ``run_id``,
    ``entry``, the setting, seed, the recipe's learning rate (``base_lr``) and the layer's parameters
    (``params.<name>``), ``epoch`` (1-based) and the epoch's ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc``, ``lr`` (the schedule's, that epoch) and ``epoch_s``. Join with
    :func:`load` on ``run_id`` for anything else."""
    rows = []
    for record in _records(path, study):
        cfg = record["config"]
        base = {"run_id": record["run_id"], "entry": record.get("entry"), "arch": cfg["arch"],
                "dataset": cfg["dataset"], "seed": cfg["seed"], "base_lr": cfg.get("lr"),
                **{f"params.{k}": v for k, v in (cfg.get("params") or {}).items()}}
        for i, epoch in enumerate(record.get("epochs") or [], 1):
            rows.append({**base, "epoch": epoch.get("epoch", i),
                         **{k: epoch.get(k) for k in EPOCH_FIELDS}})
    columns = ["run_id", "entry", "arch", "dataset", "seed", "base_lr", "epoch", *EPOCH_FIELDS]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
