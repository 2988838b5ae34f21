"""The results API: a results folder's runs as pandas DataFrames, for notebooks and scripts.

    from harness import results
    runs = results.load("results")              # one row per run record
    curves = results.load_curves("results")     # one row per (run, epoch)
    board = results.board("results")           # the leaderboard's table: one row per (entry, setting)

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

from harness.store.frame import records_frame
from harness.store.results import ResultsStore

# The columns a reader looks for first, in this order, and those last; the rest between, sorted.
# pandas prints the first and last ten of a wide frame, so both ends are the ones that matter.
FIRST = ("entry", "best_acc", "status", "config.seed", "config.arch", "config.dataset",
         "final_acc", "best_epoch", "epochs_run", "flags")
# Short values only at the ends, so that a terminal's 80 columns show several of them.
LAST = ("config.epochs", "comparable", "wall_s")
EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s")


def _records(path: str | Path, study: str | None) -> list[dict[str, Any]]:
    root = Path(path)
    if not (root / "runs").is_dir():
        raise FileNotFoundError(f"{root}: not a results folder (no runs/ in it)")
    records = ResultsStore(root).records()
    return [r for r in records if study is None or (r.get("study") or {}).get("name") == study]


def load(path: str | Path, *, study: str | None = None) -> pd.DataFrame:
    """Every run record under ``path`` (a results folder), or those of the study named ``study``,
    as one row each with nested fields flattened to dotted columns (``config.lr``,
    ``config.params.p``, ``dynamics.epochs_to_reach.95%``). Raises FileNotFoundError when
    ``path`` is not a results folder; an empty folder gives an empty frame."""
    frame = records_frame(_records(path, study))
    if frame.empty:
        return pd.DataFrame(columns=list(FIRST) + list(LAST))
    first = [c for c in FIRST if c in frame.columns]
    last = [c for c in LAST if c in frame.columns and c not in first]
    return frame[first + sorted(c for c in frame.columns if c not in first and c not in last) + last]


def board(path: str | Path, *, reveal_hidden: bool = False) -> pd.DataFrame:
    """The leaderboard's own table, as ``harness leaderboard build`` computes it: one row per
    (suite, entry, setting) shown, with the cell's ``n``, ``mean``, ``std``, ``ci_low``,
    ``ci_high`` (95% t-interval) and ``flags``, and the entry's ``rank``, ``group`` (entries that
    share a letter are not significantly different), ``aggregate`` and its interval. Hidden
    settings are left out unless ``reveal_hidden`` (docs/statistics.md)."""
    from harness.leaderboard import stats
    from harness.leaderboard.site import build_tables

    if not (Path(path) / "runs").is_dir():
        raise FileNotFoundError(f"{path}: not a results folder (no runs/ in it)")
    store = ResultsStore(Path(path))
    entries = store.entries()
    frame = stats.runs_frame(list(store.records()), {e.name: e.sha256 for e in entries})
    rows = []
    for table in build_tables(entries, frame, reveal_hidden) if len(frame) else []:
        suite = table["suite"]
        for r in table["rows"]:
            for key, c in r.cells.items():
                cell = c["cell"]
                if cell is None:
                    continue
                rows.append({"suite": suite.name, "entry": r.entry.name, "kind": r.entry.kind,
                             "setting": key, "rank": r.rank, "group": r.group, "n": cell.n,
                             "mean": cell.mean, "std": cell.std, "ci_low": cell.ci_low,
                             "ci_high": cell.ci_high, "flags": ", ".join(cell.flags),
                             "aggregate": r.aggregate, "aggregate_ci_low": r.aggregate_ci[0],
                             "aggregate_ci_high": r.aggregate_ci[1]})
    columns = ["suite", "entry", "kind", "setting", "rank", "group", "n", "mean", "std", "ci_low",
               "ci_high", "flags", "aggregate", "aggregate_ci_low", "aggregate_ci_high"]
    return pd.DataFrame(rows, columns=columns)


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
