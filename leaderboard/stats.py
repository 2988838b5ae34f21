"""Leaderboard statistics, from run records to a table. The methods, stated once:

- **Cell** (entry x setting): over the completed runs (status ok or diverged; a diverged run's score
  is its best accuracy before it diverged, and the cell is flagged): n, mean and sample std
  (ddof=1) of the best test accuracy, and a two-sided 95% **Student-t interval**
  mean +- t(0.975, n-1) * std / sqrt(n) (none for n < 2). With 3 seeds it is wide: read it so.
  The mean final-epoch accuracy is kept beside it. A cell is flagged "chance" when a completed run
  ended within 3 binomial standard errors of chance accuracy (it learnt nothing the test set shows).
- **Aggregate** over a group of settings (public; or all, when hidden results are revealed):
  *mean accuracy*, the mean over settings of the cell means, defined only when the entry has every
  setting of the group; its interval comes from the per-seed aggregates (the mean over settings of
  seed s's accuracies), with the same t-interval. *Mean rank*: each setting ranks the entries
  that have it by mean (1 = best, ties averaged); the mean over the group's settings.
- **Rank and groups**: entries are ordered by aggregate mean accuracy; the rank is the position in
  that order (1 = highest mean; equal means share a rank). Which differences are real is said by
  **groups**, a compact letter display (Piepho 2004): every pair of entries is compared by
  Welch's t-test on their per-seed aggregates, the p-values of all the pairs of the table are
  Holm-adjusted together, and two entries share a letter exactly when their adjusted p is not
  below 0.05. So no entry shares a group with one it is significantly worse than, and the
  leader's group ("a") holds every entry the data cannot tell from it. A pair with fewer than 2
  seeds a side, or with no spread on either side, has no test and is never separated.
- **Against the best baseline** of each setting (the baseline with the highest mean): the
  *probability of improvement* P(X > Y) + P(X = Y)/2 over all pairs of a submission's runs X and
  the baseline's runs Y (the Mann-Whitney U statistic divided by n*m), and **Welch's t-test**
  (unequal variances), Holm-adjusted over every pair of the setting's entries; "significant"
  means an adjusted p < 0.05, two-sided. Both need at least 2 runs a side. In a suite of one
  setting this family is the groups' one, so the two always agree.
- **Bounds and few seeds**: an interval is clipped to [0, 100] (an accuracy cannot leave it), and a
  cell with fewer than 3 completed seeds is flagged "few-seeds": its interval is too wide to rank
  by (with 2 seeds, t(0.975, 1) = 12.7 standard errors).
- **Precision**: a cell never mixes precisions. Where an entry has fp32 runs of a setting (the
  protocol's), only those count; a cell made of bf16 runs alone carries a "bf16" flag.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats as st

from harness.store.derived import FLAGS  # noqa: F401 - the site's legend, from where flags are set
from harness.store.frame import records_frame
from harness.store.results import COMPLETED

CONFIDENCE = 0.95
MIN_SEEDS = 3  # a cell with fewer completed seeds is flagged: its interval is too wide to rank by
ALPHA = 0.05


def t_interval(values: Iterable[float], bounds: tuple[float, float] = (0.0, 100.0)
               ) -> tuple[float, float]:
    """The two-sided Student-t interval of the mean, clipped to ``bounds`` (accuracies, in %,
    cannot leave [0, 100]; with 2 seeds the unclipped interval easily does)."""
    x = np.asarray(list(values), dtype=float)
    if x.size < 2:
        return (math.nan, math.nan)
    sem = st.sem(x)
    if sem == 0:
        return (float(x.mean()), float(x.mean()))
    low, high = st.t.interval(CONFIDENCE, x.size - 1, loc=x.mean(), scale=sem)
    return max(float(low), bounds[0]), min(float(high), bounds[1])


def probability_of_improvement(x: Iterable[float], y: Iterable[float]) -> float:
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    if x.size < 2 or y.size < 2:  # as documented: at least 2 runs a side
        return math.nan
    u = st.mannwhitneyu(x, y, alternative="two-sided").statistic
    return float(u / (x.size * y.size))


def welch_p(x: Iterable[float], y: Iterable[float]) -> float:
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    if x.size < 2 or y.size < 2:
        return math.nan
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        # No spread on either side: the test is undefined (a p of 0 would call any difference
        # certain, which two identical seeds on a small test set do not show). No test.
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one side with zero variance is fine here
        return float(st.ttest_ind(x, y, equal_var=False).pvalue)


def difference_interval(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """The 95% Welch interval of mean(x) - mean(y) (Welch-Satterthwaite degrees of freedom);
    NaN with fewer than 2 values a side."""
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    if x.size < 2 or y.size < 2:
        return (math.nan, math.nan)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff, se = float(x.mean() - y.mean()), math.sqrt(vx + vy)
    if se == 0:
        return (diff, diff)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    half = float(st.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    return (diff - half, diff + half)


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted): the i-th smallest of
    m p-values becomes max over j <= i of min(1, (m - j + 1) * p_(j))."""
    p = list(p_values)
    order = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=lambda i: p[i])
    m, out, running = len(order), [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def run_flags_of(record: dict[str, Any]) -> list[str]:
    """A record's flags; computed for records written before runs carried them."""
    if "flags" in record:
        return record["flags"]
    from harness.store.derived import run_flags

    classes = record.get("config", {}).get("num_classes")
    if not classes or "data" not in record:
        return ["diverged"] if record.get("status") == "diverged" else []
    return run_flags(record)


def left_out_reason(record: dict[str, Any], current_sha: dict[str, str]) -> str | None:
    """Why a record is not on the board (None: it is, a run of an entry's current file)."""
    entry = record.get("entry")
    if entry is None:
        return "runs of `harness eval` (no entry: `harness submit FILE --name NAME` makes one)"
    if "study" in record:
        return "runs of a study (`harness study report` shows them)"
    if current_sha.get(entry) != record["submission"]["sha256"]:
        return "runs of an older file of their entry"
    return None


# The board's columns of a run (harness.store.frame's dotted names on the right).
RUN_COLUMNS = {"entry": "entry", "kind": "entry_kind", "run_id": "run_id", "suite": "suite.name",
               "suite_version": "suite.version", "recipe_id": "suite.recipe_id",
               "setting": "suite.setting", "hidden": "suite.hidden", "seed": "config.seed",
               "status": "status", "best_acc": "best_acc", "final_acc": "final_acc",
               "best_epoch": "best_epoch", "epochs_completed": "epochs_completed",
               "wall_s": "wall_s", "batch_dependent": "batch_dependent",
               "precision": "config.precision", "at_chance": "at_chance"}


def _board_fields(r: dict[str, Any]) -> dict[str, Any]:
    """What the board needs of a record beyond its own fields."""
    # The scoring's own check (schema 3); for older records, the pre-flight check's warning.
    batch_dependent = "batch-dependent" in run_flags_of(r) or (
        r.get("evaluation") is None
        and any(c["name"] == "eval-batch-independent" and c["status"] == "warn"
                for c in r.get("checks", [])))
    return {"entry_kind": r.get("entry_kind", "submission"), "batch_dependent": batch_dependent,
            "at_chance": "chance" in run_flags_of(r),
            "config": {**r["config"], "precision": r["config"].get("precision", "fp32")}}


def runs_frame(records: Iterable[dict[str, Any]], current_sha: dict[str, str]) -> pd.DataFrame:
    """One row per run of an entry's current file (harness.store.frame.records_frame, the board's
    columns of it: :data:`RUN_COLUMNS`)."""
    kept = [r for r in records if left_out_reason(r, current_sha) is None]
    flat = records_frame(kept, _board_fields)
    frame = pd.DataFrame({name: flat[field] if field in flat else None
                          for name, field in RUN_COLUMNS.items()} if len(flat) else
                         {name: [] for name in RUN_COLUMNS})
    frame["hidden"] = frame["hidden"].astype(bool)
    # Precisions are never mixed in a cell: where an entry has fp32 runs of a setting, only those
    # count; a cell of bf16 runs alone is flagged as such.
    has_fp32 = frame[frame["precision"] == "fp32"].groupby(["entry", "setting"]).size()
    keep = [(p == "fp32") or (e, s) not in has_fp32.index
            for e, s, p in zip(frame["entry"], frame["setting"], frame["precision"])]
    frame = frame[pd.Series(keep, index=frame.index, dtype=bool)] if len(frame) else frame
    # One record per (entry, setting, seed): the latest completed one, else the latest.
    frame["completed"] = frame["status"].isin(COMPLETED)
    frame = frame.sort_values(["completed", "run_id"]).drop_duplicates(
        ["entry", "setting", "seed"], keep="last")
    return frame.reset_index(drop=True)


@dataclass
class Cell:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    final_mean: float
    values: list[float]
    seeds: list[int]
    flags: list[str]


def cells(frame: pd.DataFrame, expected_seeds: int) -> dict[tuple[str, str], Cell]:
    out = {}
    for (entry, setting), group in frame.groupby(["entry", "setting"]):
        done = group[group["completed"]]
        values = done["best_acc"].astype(float).tolist()
        flags = []
        if (group["status"] == "diverged").any():
            flags.append("diverged")
        if (group["status"] == "failed").any():
            flags.append("failed")
        if (done["at_chance"]).any():
            flags.append("chance")
        if len(done) < expected_seeds:
            flags.append("incomplete")
        if 0 < len(done) < MIN_SEEDS:
            flags.append("few-seeds")
        if group["batch_dependent"].any():
            flags.append("batch-dependent")
        flags += sorted(p for p in set(group["precision"]) if p != "fp32")
        low, high = t_interval(values)
        out[(entry, setting)] = Cell(
            n=len(values), mean=float(np.mean(values)) if values else math.nan,
            std=float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
            ci_low=low, ci_high=high,
            final_mean=float(done["final_acc"].astype(float).mean()) if len(done) else math.nan,
            values=values, seeds=done["seed"].tolist(), flags=flags)
    return out


def _completed(entry: str, settings: list[str], table: dict[tuple[str, str], Cell]) -> list[Cell]:
    """The entry's cell in every setting, or [] when a setting has none or no completed run."""
    have = [table.get((entry, s)) for s in settings]
    cells = [c for c in have if c is not None and c.n > 0]
    return cells if settings and len(cells) == len(settings) else []


def aggregate_values(entry: str, settings: list[str], table: dict[tuple[str, str], Cell]) -> list[float]:
    """The per-seed aggregates: for each seed the entry completed in every setting, the mean over
    settings of that seed's accuracies ([] when a setting has no completed run)."""
    have = _completed(entry, settings, table)
    if not have:
        return []
    common = set.intersection(*(set(c.seeds) for c in have))
    return [float(np.mean([c.values[c.seeds.index(s)] for c in have])) for s in sorted(common)]


def aggregate(entry: str, settings: list[str], table: dict[tuple[str, str], Cell]):
    have = _completed(entry, settings, table)
    if not have:
        return math.nan, (math.nan, math.nan)
    mean = float(np.mean([c.mean for c in have]))
    return mean, t_interval(aggregate_values(entry, settings, table))


def mean_ranks(entries: list[str], settings: list[str], table: dict[tuple[str, str], Cell]):
    ranks: dict[str, list[float]] = {e: [] for e in entries}
    for s in settings:
        present = [e for e in entries if (e, s) in table and table[(e, s)].n > 0]
        if not present:
            continue
        means = pd.Series({e: table[(e, s)].mean for e in present})
        for e, r in means.rank(ascending=False, method="average").items():
            ranks[e].append(float(r))
    return {e: (float(np.mean(r)) if len(r) == len(settings) and r else math.nan)
            for e, r in ranks.items()}


def pairwise(samples: dict[str, list[float]]) -> dict[frozenset, dict[str, float]]:
    """Welch's t-test of every pair of entries, Holm-adjusted over all the pairs of the table (the
    family): ``{frozenset({a, b}): {"p": raw, "p_adjusted": adjusted}}``. A pair with fewer than
    2 values on a side has no test (NaN) and counts as not separated."""
    names = sorted(samples)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    raw = [welch_p(samples[a], samples[b]) for a, b in pairs]
    return {frozenset(p): {"p": r, "p_adjusted": q} for p, r, q in zip(pairs, raw, holm(raw))}


def separated(tests: dict[frozenset, dict[str, float]]) -> set[frozenset]:
    return {pair for pair, t in tests.items() if not math.isnan(t["p_adjusted"]) and t["p_adjusted"] < ALPHA}


def _letter(k: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[k] if k < 26 else _letter(k // 26 - 1) + _letter(k % 26)


def letter_groups(order: list[str], apart: set[frozenset]) -> dict[str, str]:
    """A compact letter display (Piepho 2004, insert-absorb): entries that share a letter are not
    significantly different; any two that are (``apart``) share none. ``order``: best mean first;
    the leader's group is "a"."""
    columns: list[frozenset] = [frozenset(order)]
    for pair in sorted(apart, key=lambda p: sorted(order.index(e) for e in p)):
        i, j = sorted(pair, key=order.index)
        split: list[frozenset] = []
        for col in columns:
            split += [col - {i}, col - {j}] if i in col and j in col else [col]
        unique = list(dict.fromkeys(c for c in split if c))
        columns = [c for c in unique if not any(c < d for d in unique)]  # absorb
    columns.sort(key=lambda c: sorted(order.index(e) for e in c))
    return {e: "".join(_letter(k) for k, c in enumerate(columns) if e in c) for e in order}


def ordinal_ranks(means: dict[str, float]) -> dict[str, int | None]:
    """1 for the highest mean, 2 for the next...; equal means share the lower number; None without
    a mean."""
    have = sorted((m, e) for e, m in means.items() if not math.isnan(m))
    out: dict[str, int | None] = {e: None for e in means}
    for e, m in means.items():
        if not math.isnan(m):
            out[e] = 1 + sum(other > m for other, _ in have)
    return out


def versus_best_baseline(entries_kind: dict[str, str], settings: list[str],
                         table: dict[tuple[str, str], Cell]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for s in settings:
        baselines = [e for e, k in entries_kind.items()
                     if k == "baseline" and (e, s) in table and table[(e, s)].n > 0]
        if not baselines:
            continue
        best = max(baselines, key=lambda e: table[(e, s)].mean)
        y = table[(best, s)].values
        # The setting's family: every pair of its entries, Holm-adjusted together, so that this
        # comparison and the setting's letter groups (setting_groups) always say the same.
        family = pairwise({e: table[(e, s)].values for e in entries_kind
                           if (e, s) in table and table[(e, s)].n > 0})
        for e, kind in entries_kind.items():
            if kind == "baseline" or (e, s) not in table or table[(e, s)].n == 0:
                continue
            x = table[(e, s)].values
            test = family[frozenset((e, best))]
            out[(e, s)] = {"baseline": best, "poi": probability_of_improvement(x, y),
                           "p_value": test["p"], "p_adjusted": test["p_adjusted"],
                           "significant": bool(not math.isnan(test["p_adjusted"])
                                               and test["p_adjusted"] < ALPHA),
                           "difference": float(np.mean(x) - np.mean(y))}
    return out
